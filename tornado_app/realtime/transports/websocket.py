"""WebSocket `/api/v1/ws`: the upgrade. The session itself is tornado_app.realtime.session."""

from tornado_app.web.detached_http import take_socket
from tornado_app.core.errors import ApiError
from tornado_app.web.openapi import operation
from tornado_app.realtime.deflate import negotiate
from tornado_app.realtime.session import EventSession
from tornado_app.realtime.websocket import accept_key, valid_key

from handlers.base import BaseHandler


class EventsSocket(BaseHandler):
    route_name = "realtime.ws"
    # What runs on the socket once it is upgraded. The Autobahn suite (tests/test_autobahn.py)
    # mounts a subclass with an echo session, so the protocol is tested through this same
    # upgrade; no echo endpoint exists in the app itself.
    session_class = EventSession

    @operation(summary="WebSocket: subscribe to channels and receive events",
               description="Upgrade with `Upgrade: websocket`. Client ops: subscribe (channels, "
               "since, ref), unsubscribe, ping, auth. Server frames: subscribed, unsubscribed, "
               "event, pong, error. Authenticate with a bearer header, `access_token`, or an "
               "auth op.", responses={101: None}, auth="optional", errors=(400, 403, 426),
               tag="realtime")
    async def get(self) -> None:
        headers = self.request.headers
        connection = [token.strip().lower() for token in headers.get("Connection", "").split(",")]
        # HEAD cannot upgrade: it gets the answer a plain GET gets.
        if self.request.method == "HEAD" or headers.get("Upgrade", "").lower() != "websocket" \
                or "upgrade" not in connection:
            raise ApiError(426, "upgrade_required", "this endpoint speaks WebSocket only",
                           headers={"Upgrade": "websocket", "Connection": "Upgrade"})
        if headers.get("Sec-WebSocket-Version") != "13":
            raise ApiError(426, "upgrade_required", "only WebSocket version 13 is supported",
                           headers={"Sec-WebSocket-Version": "13"})
        key = headers.get("Sec-WebSocket-Key")
        if not valid_key(key):
            raise ApiError(400, "bad_request", "Sec-WebSocket-Key must be 16 bytes in base64")
        self._check_origin_allowed()
        token = self._upgrade_token()
        claims = None
        if token is not None:
            self.user, claims = await self.ctx.auth.authenticate_claims(token)
        self._upgrade(key, claims)

    def _check_origin_allowed(self) -> None:
        origin = self.request.headers.get("Origin")
        if origin is not None and not self._origin_allowed(origin):
            raise ApiError(403, "forbidden", "this Origin may not open a WebSocket here")
        # No Origin: not a browser, nothing for an Origin check to protect.

    def _upgrade_token(self) -> str | None:
        token = self.bearer_token()
        if token is not None:
            return token
        return self.get_query_argument("access_token", None)

    def _upgrade(self, key: str, claims) -> None:
        """Answers 101 and hands the socket to the session; Tornado is done with it."""
        deflate, extensions = None, b""
        if self.ctx.settings.ws_compression:
            deflate, answer = negotiate(self.request.headers.get_list("Sec-WebSocket-Extensions"))
            if answer is not None:
                extensions = b"Sec-WebSocket-Extensions: %s\r\n" % answer.encode()
        handshake = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%sX-Request-ID: %s\r\n"
                     b"\r\n" % (accept_key(key).encode(), extensions, self.request_id.encode()))
        self.set_status(101)
        self.application.log_request(self)
        sock, received = take_socket(self)
        self.session_class(sock, self.ctx, self.user, claims, deflate).start(handshake, received)
