"""Realtime transports: WebSocket, long-poll and Server-Sent Events, on one cursor model."""

import asyncio
import json
import logging

from tornado import websocket
from tornado.iostream import StreamClosedError

from tornado_app.errors import ApiError
from tornado_app.realtime.channels import check_access, check_channels, parse_channel_list
from tornado_app.realtime.record import websocket_text_frame
from tornado_app.realtime.subscription import Subscription
from tornado_app.schemas.notifications import PollQuery, StreamQuery

from .base import BaseHandler, parse_json_object, render_error

log = logging.getLogger(__name__)

POLL_MAX_EVENTS = 100


def _unsent_bytes(stream) -> int:
    buffer = getattr(stream, "_write_buffer", None)
    return len(buffer) if buffer is not None else 0


class EventsSocket(websocket.WebSocketHandler):
    route_name = "realtime.ws"

    def initialize(self) -> None:
        self.ctx = self.application.settings["ctx"]
        self.user = None
        self.subscription = None

    async def get(self, *args, **kwargs) -> None:
        try:
            self._check_origin_allowed()
            token = self._upgrade_token()
            if token is not None:
                self.user, _ = await self.ctx.auth.authenticate(token)
        except ApiError as error:
            render_error(self, error)
            return
        await super().get(*args, **kwargs)

    def _check_origin_allowed(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is None:
            return  # not a browser: nothing for an Origin check to protect
        allowed = self.ctx.settings.allowed_origins
        if "*" not in allowed and origin.rstrip("/").lower() not in allowed:
            raise ApiError(403, "forbidden", "this Origin may not open a WebSocket here")

    def _upgrade_token(self) -> str | None:
        header = self.request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise ApiError(401, "unauthorized", "Authorization must be 'Bearer <token>'",
                               headers={"WWW-Authenticate": "Bearer"})
            return token.strip()
        return self.get_query_argument("access_token", None)

    def check_origin(self, origin: str) -> bool:
        return True  # checked in get(), so the refusal has the contract's error shape

    def get_compression_options(self):
        return None  # uncompressed, so one prebuilt frame serves every subscriber

    def open(self, *args) -> None:
        self.subscription = Subscription(self.ctx.hub, self._send_record)
        self.ctx.connections.sockets.add(self)
        if self.ctx.connections.shutting_down:
            self.close(1001, "server shutting down")

    def on_close(self) -> None:
        self.ctx.connections.sockets.discard(self)
        if self.subscription is not None:
            self.subscription.close()

    # --- server → client ---------------------------------------------------------------------

    def _send_record(self, record) -> None:
        self._write_frame(record.frame)

    def _send(self, payload: dict) -> None:
        self._write_frame(websocket_text_frame(
            json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()))

    def _write_frame(self, frame: bytes) -> None:
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return
        stream = connection.stream
        try:
            stream.write(frame)
        except StreamClosedError:
            return
        if _unsent_bytes(stream) > self.ctx.settings.ws_max_pending_bytes:
            # A slow consumer: drop it rather than buffer without bound or hold others up.
            # It reconnects and resumes with `since`.
            self.ctx.connections.slow_consumers_closed += 1
            self.subscription.close()
            self.close(1013, "slow consumer: resume with since")

    def _error(self, code: str, message: str, ref=None, **extra) -> None:
        self._send({"type": "error", "code": code, "message": message, "ref": ref, **extra})

    # --- client → server ---------------------------------------------------------------------

    async def on_message(self, message) -> None:
        if isinstance(message, bytes):
            self._error("invalid_json", "binary frames are not supported; send JSON text")
            return
        try:
            msg = parse_json_object(message.encode("utf-8", errors="surrogatepass"))
        except ApiError as error:
            self._error(error.code, error.message)
            return
        ref = msg.get("ref")
        op = msg.get("op")
        try:
            if op == "subscribe":
                await self._subscribe(msg, ref)
            elif op == "unsubscribe":
                channels = msg.get("channels")
                if not isinstance(channels, list):
                    raise ApiError(422, "validation_error", "channels must be a list")
                self.subscription.remove(channels)
                self._send({"type": "unsubscribed", "channels": channels, "ref": ref})
            elif op == "ping":
                self._send({"type": "pong", "ref": ref})
            elif op == "auth":
                token = msg.get("token")
                if not isinstance(token, str) or not token:
                    raise ApiError(422, "validation_error", "token must be a non-empty string")
                self.user, _ = await self.ctx.auth.authenticate(token)
                self._send({"type": "authenticated", "user_id": str(self.user["_id"]),
                            "ref": ref})
            else:
                raise ApiError(422, "validation_error",
                               "op must be one of subscribe, unsubscribe, ping, auth")
        except ApiError as error:
            extra = {}
            if error.code == "cursor_expired" and error.details:
                extra["oldest_seq"] = error.details[0]["oldest_seq"]
            self._error(error.code, error.message, ref, **extra)

    async def _subscribe(self, msg: dict, ref) -> None:
        unknown = set(msg) - {"op", "channels", "since", "ref"}
        if unknown:
            raise ApiError(422, "validation_error", f"unknown field {sorted(unknown)[0]!r}")
        since = msg.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)
                                  or since < 0):
            raise ApiError(422, "validation_error", "since must be a non-negative integer")
        channels = check_channels(msg.get("channels"), self.ctx.settings.ws_max_subscriptions)
        total = len(self.subscription.channels | set(channels))
        if total > self.ctx.settings.ws_max_subscriptions:
            raise ApiError(422, "validation_error", f"at most "
                           f"{self.ctx.settings.ws_max_subscriptions} channels per connection")
        check_access(self.user, channels)
        self._send({"type": "subscribed", "channels": channels, "ref": ref})
        await self.subscription.add(channels, since)


class PollHandler(BaseHandler):
    """Long-poll: answers at once when there are events after `since`, else waits for one."""

    route_name = "realtime.poll"

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        self.records = None  # events for this answer; None once answered or gone
        self.cursor = 0
        self.channels = ()
        self._ready = False
        self._timer = None
        self._waiting = None

    async def get(self) -> None:
        params = self.query(PollQuery)
        channels = parse_channel_list(params.channels, self.ctx.settings.ws_max_subscriptions)
        if any(name.startswith("user:") for name in channels):
            await self.require_user()
        check_access(self.user, channels)
        hub = self.ctx.hub
        if params.since is not None:
            await hub.check_cursor(params.since)
        # Registered before the log is read, so nothing published meanwhile is missed.
        loop = asyncio.get_running_loop()
        self._waiting = loop.create_future()
        self.records = []
        self.channels = channels
        hub.subscribe(self, channels)
        self.ctx.connections.polls.add(self)
        up_to = hub.last_seq
        self.cursor = up_to if params.since is None else params.since
        if params.since is not None and params.since < up_to:
            replayed = await hub.replay(channels, params.since, up_to, POLL_MAX_EVENTS)
            if self.records is None:
                return  # the client went away meanwhile
            self.records[:0] = replayed  # live ones collected meanwhile are all newer
        self._ready = True
        if self.records or self.ctx.connections.shutting_down:
            self.answer()
        else:
            self._timer = loop.call_later(params.timeout, self.answer)
        await self._waiting

    def deliver(self, record) -> None:
        if self.records is None or record.seq <= self.cursor:
            return
        self.records.append(record)
        if not self._ready:
            return
        if len(self.records) >= POLL_MAX_EVENTS:
            self.answer()
        elif len(self.records) == 1:
            # Answer on the next turn of the loop, so events published together go together.
            asyncio.get_running_loop().call_soon(self.answer)

    def answer(self) -> None:
        """Answers with what this poll has (also at the timeout and at shutdown)."""
        if self.records is None:
            return
        records = self.records[:POLL_MAX_EVENTS]
        cursor = records[-1].seq if records else self.cursor
        self._release()
        if not self._finished and not self.request.connection.stream.closed():
            self.set_status(200)
            self.finish(b'{"events":[' + b",".join(r.json for r in records)
                        + b'],"cursor":%d}' % cursor)

    def _release(self) -> None:
        self.records = None
        self.ctx.hub.unsubscribe(self, self.channels)
        self.ctx.connections.polls.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if self.records is not None:
            self._release()


class StreamHandler(BaseHandler):
    """Server-Sent Events: replay from Last-Event-ID or `since`, then live, until closed."""

    route_name = "realtime.sse"

    def initialize(self, **kwargs) -> None:
        super().initialize(**kwargs)
        self.subscription = None
        self._done = None

    async def get(self) -> None:
        params = self.query(StreamQuery)
        channels = parse_channel_list(params.channels, self.ctx.settings.ws_max_subscriptions)
        if any(name.startswith("user:") for name in channels):
            await self.require_user()
        check_access(self.user, channels)
        since = params.since
        last_event_id = self.request.headers.get("Last-Event-ID")
        if last_event_id is not None and last_event_id.strip():
            if not last_event_id.strip().isdigit():
                raise ApiError(422, "validation_error", "Last-Event-ID must be an event seq")
            since = int(last_event_id.strip())
        if since is not None:
            await self.ctx.hub.check_cursor(since)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._done = asyncio.get_running_loop().create_future()
        self.subscription = Subscription(self.ctx.hub, self._send_record)
        self.ctx.connections.streams.add(self)
        self.write(b": connected\n\n")
        self.flush()
        await self.subscription.add(channels, since)
        if self.ctx.connections.shutting_down:
            self.end()
        await self._done
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
        if _unsent_bytes(self.request.connection.stream) > self.ctx.settings.ws_max_pending_bytes:
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
