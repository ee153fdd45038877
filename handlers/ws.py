"""WebSocket `/api/v1/ws`: subscribe, unsubscribe, ping and auth over one connection."""

import json
import logging
import time

from tornado import websocket

from tornado_app.db import is_unavailable
from tornado_app.errors import ApiError, service_unavailable
from tornado_app.logs import request_id_var
from tornado_app.openapi import operation
from tornado_app.realtime.channels import check_access, check_channels
from tornado_app.realtime.record import websocket_text_frame
from tornado_app.realtime.subscription import Subscription
from tornado_app.realtime.transport import unsent_bytes, write_now

from .base import parse_json_object, render_error, request_id_of

log = logging.getLogger(__name__)

PING_FRAME = b"\x89\x00"  # an empty ping, the same bytes for every connection


class EventsSocket(websocket.WebSocketHandler):
    route_name = "realtime.ws"

    @property
    def request_id(self) -> str:
        return request_id_of(self.request)

    def initialize(self) -> None:
        self.ctx = self.application.settings["ctx"]
        self.user = None
        self.subscription = None
        self.awaiting_pong = False
        self._tokens = 0.0
        self._refilled = 0.0
        self._dropped = 0

    @operation(summary="WebSocket: subscribe to channels and receive events",
               description="Upgrade with `Upgrade: websocket`. Client ops: subscribe (channels, "
               "since, ref), unsubscribe, ping, auth. Server frames: subscribed, unsubscribed, "
               "event, pong, error. Authenticate with a bearer header, `access_token`, or an "
               "auth op.", responses={101: None}, auth="optional", errors=(403, 426),
               tag="realtime")
    async def get(self, *args, **kwargs) -> None:
        request_id_var.set(self.request_id)
        try:
            if self.request.headers.get("Upgrade", "").lower() != "websocket":
                raise ApiError(426, "upgrade_required", "this endpoint speaks WebSocket only",
                               headers={"Upgrade": "websocket"})
            self._check_origin_allowed()
            await self._authenticate_upgrade()
        except ApiError as error:
            render_error(self, error)
            return
        except Exception as exc:
            if is_unavailable(exc):
                render_error(self, service_unavailable())
            else:
                log.exception("WebSocket upgrade failed")
                render_error(self, ApiError(500, "internal_error", "internal server error"))
            return
        await super().get(*args, **kwargs)

    async def _authenticate_upgrade(self) -> None:
        # In its own frame: get() stays suspended for the connection's whole life, and every
        # local it holds (the token, say) would stay in memory with it.
        token = self._upgrade_token()
        if token is not None:
            self.user, _ = await self.ctx.auth.authenticate(token)

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
        self._tokens = 2 * self.ctx.settings.ws_max_messages_per_second
        self._refilled = time.monotonic()
        self.subscription = Subscription(self.ctx.hub, self._send_record)
        self.ctx.connections.sockets.add(self)
        self._drop_upgrade_state()
        if self.ctx.connections.shutting_down:
            self.close(1001, "server shutting down")

    def _drop_upgrade_state(self) -> None:
        """The upgrade's parsed request and response state is not needed once the connection is
        open; tens of thousands of idle connections should not each keep a copy."""
        # Tornado's WebSocketHandler.get() keeps a reference to the request headers in its
        # suspended frame, so the headers are emptied rather than just dropped.
        headers = self.request.headers
        for name in ("_dict", "_as_list", "_combined_cache"):
            if isinstance(getattr(headers, name, None), dict):
                setattr(headers, name, {})
        self.request = None
        self._headers = None
        self.path_args = self.path_kwargs = None
        self._transforms = None
        self.ui = None

    def on_close(self) -> None:
        self.ctx.connections.sockets.discard(self)
        if self.subscription is not None:
            self.subscription.close()

    def heartbeat(self) -> None:
        connection = self.ws_connection
        if connection is None:
            return
        if self.awaiting_pong:
            # No answer to the last ping: the peer is gone. No close handshake to wait for.
            connection.stream.close()
            return
        self.awaiting_pong = True
        self._write_frame(PING_FRAME)

    def on_pong(self, data: bytes) -> None:
        self.awaiting_pong = False

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
        write_now(stream, frame)
        if unsent_bytes(stream) > self.ctx.settings.ws_max_pending_bytes:
            # A slow consumer: drop it rather than buffer without bound or hold others up.
            # It reconnects and resumes with `since`.
            self.ctx.connections.slow_consumers_closed += 1
            self.subscription.close()
            self.close(1013, "slow consumer: resume with since")

    def _error(self, code: str, message: str, ref=None, **extra) -> None:
        self._send({"type": "error", "code": code, "message": message, "ref": ref, **extra})

    # --- client → server ---------------------------------------------------------------------

    def _within_rate(self) -> bool:
        """A token bucket per connection: WS_MAX_MESSAGES_PER_SECOND, bursts of twice that."""
        rate = self.ctx.settings.ws_max_messages_per_second
        now = time.monotonic()
        self._tokens = min(2 * rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 2 * rate - 1:
            self._dropped = 0  # the client has slowed down long enough to be forgiven
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._dropped += 1
        if self._dropped == 1:
            self._error("rate_limited", f"more than {rate:g} messages per second; slow down")
        elif self._dropped > 10 * rate:
            self.close(1008, "message rate exceeded")
        return False

    async def on_message(self, message) -> None:
        self.awaiting_pong = False  # any frame shows the peer is alive
        if not self._within_rate():
            return
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
        except Exception as exc:
            if is_unavailable(exc):
                self._error("service_unavailable", "the database is unreachable, try again", ref)
            else:
                log.exception("WebSocket message failed")
                self._error("internal_error", "internal server error", ref)

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
        await self.subscription.add(channels, since, lambda: self._send(
            {"type": "subscribed", "channels": channels, "ref": ref}))
