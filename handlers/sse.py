"""Server-Sent Events `/api/v1/stream`."""

import asyncio

from tornado_app.errors import ApiError
from tornado_app.openapi import operation
from tornado_app.realtime.subscription import Subscription
from tornado_app.schemas.notifications import StreamQuery
from tornado_app.wire import MAX_INT, parse_decimal

from .base import BaseHandler


class StreamHandler(BaseHandler):
    """Server-Sent Events: replay from Last-Event-ID or `since`, then live, until closed."""

    route_name = "realtime.sse"

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        self.subscription = None
        self._done = None

    @operation(summary="Server-Sent Events stream of events", query=StreamQuery,
               responses={200: None}, stream=True, auth="optional", errors=(403, 410),
               tag="realtime", description="`text/event-stream`: `id: <seq>`, `event: <type>`, "
               "`data: <event JSON>`; resumes from `Last-Event-ID` or `since`.")
    async def get(self) -> None:
        params = self.query()
        channels = await self.readable_channels(params.channels)
        since = params.since
        last_event_id = self.request.headers.get("Last-Event-ID", "").strip()
        if last_event_id:
            since = parse_decimal(last_event_id)
            if since is None:
                raise ApiError(422, "validation_error", "the request is not valid", details=[
                    {"loc": ["header", "Last-Event-ID"],
                     "msg": f"must be an event seq: decimal digits, at most {MAX_INT}"}])
        if since is not None:
            await self.ctx.hub.check_cursor(since)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        if self.request.method == "HEAD":
            self.finish()  # what a GET would answer with, without the stream
            return
        self._done = asyncio.get_running_loop().create_future()
        self.subscription = Subscription(self.ctx.hub, self._send_record)
        self.ctx.connections.streams.add(self)
        try:
            self.write(b": connected\n\n")
            self.flush()
            await self.subscription.add(channels, since)
            if self.ctx.connections.shutting_down:
                self.end()
            await self._done
        finally:
            # However the stream ends (a failed replay included), it leaves the gauge and the hub.
            self._cleanup()
        if not self._finished:
            self.finish()

    def _send_record(self, record) -> None:
        self._write(record.sse)

    def keepalive(self) -> None:
        self._write(b": keep-alive\n\n")

    def _write(self, data: bytes) -> None:
        if self._finished or self.request.connection.stream.closed():
            return
        self.write(data)
        self.flush()
        # IOStream's `_write_buffer`: private, but stable across Tornado 6.
        if len(self.request.connection.stream._write_buffer) > \
                self.ctx.settings.ws_max_pending_bytes:
            self.ctx.connections.slow_consumers_closed += 1
            self.request.connection.stream.close()
            self.end()

    def end(self) -> None:
        self._cleanup()
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _cleanup(self) -> None:
        if self.subscription is not None:
            self.subscription.close()
        self.ctx.connections.streams.discard(self)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self.end()
