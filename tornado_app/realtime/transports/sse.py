"""Server-Sent Events `/api/v1/stream`."""

import asyncio
import json

from tornado_app.core.errors import ApiError
from tornado_app.web.openapi import operation
from tornado_app.realtime.channels import disallowed
from tornado_app.realtime.subscription import Subscription
from tornado_app.schemas.notifications import StreamQuery
from tornado_app.core.wire import MAX_INT, parse_decimal
from tornado_app.web.tornado_private import finished, pending_output

from handlers.base import BaseHandler


class StreamHandler(BaseHandler):
    """Server-Sent Events: replay from Last-Event-ID or `since`, then live, until closed."""

    route_name = "realtime.sse"

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        self.subscription = None
        self._done = None
        # For realtime.grants, while a private channel is streamed: the token's family and exp.
        self.family = None
        self.expires = None

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
        hub = self.ctx.hub
        if since is not None:
            await hub.check_cursor(since, params.epoch)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        if self.request.method == "HEAD":
            self.finish()  # what a GET would answer with, without the stream
            return
        self._done = asyncio.get_running_loop().create_future()
        self.subscription = Subscription(hub, self._send_records, self._log_replaced)
        self.ctx.connections.streams.add(self)
        if self.user is not None and disallowed(None, channels)[1]:
            # Private channels: the stream lasts only as long as the right to read them.
            self.family, self.expires = self.token_family, self.token_expires
            self.ctx.grants.add(self)
        self.set_header("Event-Epoch", hub.log.epoch or "")
        try:
            # The position first, as a message without an id (EventSource keeps its
            # Last-Event-ID).
            position = {"epoch": hub.log.epoch,
                        "cursor": hub.last_seq if since is None else since}
            self.write(b": connected\n\nevent: epoch\ndata: %s\n\n"
                       % json.dumps(position).encode())
            self.flush()
            await self.subscription.add(channels, since)
            if self.ctx.connections.shutting_down:
                self.end()
            await self._done
        finally:
            # However the stream ends (a failed replay included), it leaves the gauge and the hub.
            self._cleanup()
        if not finished(self):
            self.finish()

    def _send_records(self, records) -> None:
        # One write and one flush: one send for every message handed over together.
        self._write(records[0].sse if len(records) == 1
                    else b"".join([record.sse for record in records]))

    def _log_replaced(self, epoch: str, oldest_seq: int) -> None:
        error = {"code": "cursor_expired", "message": "the event log was replaced: reload your "
                 "state and reconnect without Last-Event-ID", "epoch": epoch,
                 "oldest_seq": oldest_seq}
        self._write(b"event: error\ndata: %s\n\n" % json.dumps(error).encode())
        self.end()

    def grant_lost(self, code: str, message: str) -> None:
        self._end_with_error(code, message, disallowed(None, self.subscription.channels)[1])

    def grant_changed(self, user: dict) -> None:
        code, channels = disallowed(user, self.subscription.channels)
        if channels:
            self._end_with_error(code, "no longer allowed to read " + ", ".join(channels),
                                 channels)
        else:
            self.user = user

    def _end_with_error(self, code: str, message: str, channels: list[str]) -> None:
        """An SSE stream cannot drop part of what it was opened for: it says why and ends; the
        client reconnects with a valid token (and Last-Event-ID) or without those channels."""
        self.subscription.close()  # nothing more goes out, not even an event already queued
        self._write(b"event: error\ndata: " + json.dumps(
            {"code": code, "message": message, "channels": channels},
            separators=(",", ":")).encode() + b"\n\n")
        self.end()

    def keepalive(self) -> None:
        self._write(b": keep-alive\n\n")

    def _write(self, data: bytes) -> None:
        if finished(self) or self.request.connection.stream.closed():
            return
        self.write(data)
        self.flush()
        if pending_output(self.request.connection.stream) > self.ctx.settings.ws_max_pending_bytes:
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
        self.ctx.grants.discard(self)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self.end()
