"""One client's WebSocket session on `/api/v1/ws`: its ops (subscribe, unsubscribe, ping, auth),
its subscription and its message rate."""

import json
import logging
import time

from ..storage.db import is_unavailable
from ..core.errors import ApiError
from ..core.jsonbody import parse_json_object
from ..core.wire import MAX_INT, bounded_int
from .channels import check_access, check_channels, disallowed
from .interfaces import RealtimeContext
from .subscription import Subscription
from .websocket import OP_TEXT, OPEN, WebSocketConnection

log = logging.getLogger(__name__)

# Messages of this connection alone (acks, errors) shorter than this go uncompressed even when
# permessage-deflate was negotiated: deflating one on its own took 5.6 µs and saved 3 bytes of
# an 88-byte `subscribed` ack (27 of a 118-byte error); at 256 bytes and up it saves a third.
COMPRESS_MIN_BYTES = 256


class EventSession(WebSocketConnection):
    # user, family, expires: who the connection is authenticated as, its token's family and
    # exp (None when anonymous); kept current by realtime.grants.
    __slots__ = ("ctx", "user", "family", "expires", "subscription", "_tokens", "_refilled",
                 "_dropped", "_held")

    ctx: RealtimeContext

    def __init__(self, sock, ctx: RealtimeContext, user=None, claims=None, deflate=None):
        settings = ctx.settings
        super().__init__(sock, settings.ws_max_message_bytes, settings.ws_max_pending_bytes,
                         deflate)
        self.ctx = ctx
        self.user = user
        self.family = claims.fam if claims is not None else None
        self.expires = claims.exp if claims is not None else None
        self.subscription = Subscription(ctx.hub, self.send_records, self._log_replaced)
        self._tokens = 2 * settings.ws_max_messages_per_second
        self._refilled = time.monotonic()
        self._dropped = 0
        # A `subscribed` ack held back to share one send with the replay that follows it
        # (`_subscribe`).
        self._held: bytes | None = None

    def start(self, handshake: bytes, received: bytes = b"") -> None:
        connections = self.ctx.connections
        connections.sockets.add(self)
        if self.user is not None:
            self.ctx.grants.add(self)
        try:
            super().start(handshake, received)
        except Exception:
            # Counted above: whatever fails here must still take it out (abort → on_closed).
            log.exception("WebSocket session failed to start")
            self.abort()
            return
        if connections.shutting_down:
            self.close(1001, "server shutting down")

    def on_closed(self) -> None:
        self.ctx.connections.sockets.discard(self)
        self.ctx.grants.discard(self)
        self.subscription.close()

    def on_backpressure(self) -> None:
        # A slow consumer: dropped rather than buffered without bound or holding others up.
        # It reconnects and resumes with `since`.
        self.ctx.connections.slow_consumers_closed += 1
        self.subscription.close()
        self.close(1013, "slow consumer: resume with since")

    # --- server → client ---------------------------------------------------------------------

    def send_records(self, records) -> None:
        """Every record its own frame, all of them in one send; the same bytes for every
        subscriber with the same choice: compressed or plain."""
        deflate = self.deflate
        if deflate is None:
            if len(records) == 1:  # the usual case, once per subscriber per event: no list
                data = records[0].frame
            else:
                data = b"".join([record.frame for record in records])
        elif deflate.server_context:
            if len(records) == 1:
                record = records[0]
                data = record.frame_after(self.deflated_last) or record.frame_for(deflate)
                self.deflated_last = record.json
            else:
                data = self._frames_after(records)
        elif len(records) == 1:
            data = records[0].frame_for(deflate)
        else:
            data = b"".join([record.frame_for(deflate) for record in records])
        if self._held is not None:
            data, self._held = self._held + data, None
        self.write(data)

    def _frames_after(self, records) -> bytes:
        """Compressed frames for a peer that keeps its context: each record deflated after the
        previous event of its channel when that is the last message this peer inflated (the
        same bytes for every such peer), else on its own."""
        frames = []
        last = self.deflated_last
        deflate = self.deflate
        for record in records:
            frame = record.frame_after(last)
            frames.append(frame if frame is not None else record.frame_for(deflate))
            last = record.json
        self.deflated_last = last
        return frames[0] if len(frames) == 1 else b"".join(frames)

    def _frame_of(self, payload: dict) -> bytes:
        data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return self.message_frame(OP_TEXT, data, len(data) >= COMPRESS_MIN_BYTES)

    def _send(self, payload: dict) -> None:
        data = self._frame_of(payload)
        if self._held is not None:
            data, self._held = self._held + data, None
        self.write(data)

    def _hold(self, payload: dict) -> None:
        """Keeps a frame to go out with the next one this session sends (in front of it), or
        when the op in progress ends (`_guarded`): nothing overtakes it."""
        self._held = self._frame_of(payload)

    def _error(self, code: str, message: str, ref=None, **extra) -> None:
        self._send({"type": "error", "code": code, "message": message, "ref": ref, **extra})

    def _log_replaced(self, epoch: str, oldest_seq: int) -> None:
        self._error("cursor_expired", "the event log was replaced: reload your state and "
                    "subscribe again", None, oldest_seq=oldest_seq, epoch=epoch)

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

    def on_message(self, message):
        """Ops that need nothing from the database are answered at once; the others return a
        coroutine, which the connection runs before it reads the next message.

        Whatever an op does wrong is answered with an error frame: the connection goes on
        reading (an exception here would leave the frame unconsumed, to fail again at every
        read)."""
        try:
            return self._handle(message)
        except Exception:
            log.exception("WebSocket message failed")
            self._error("internal_error", "internal server error")
            return None

    def _handle(self, message):
        if not self._within_rate():
            return None
        if isinstance(message, bytes):
            self._error("invalid_json", "binary frames are not supported; send JSON text")
            return None
        try:
            msg = parse_json_object(message.encode("utf-8"))
        except ApiError as error:
            self._error(error.code, error.message)
            return None
        ref = msg.get("ref")
        op = msg.get("op")
        try:
            if op == "subscribe":
                return self._subscribe(msg, ref)
            if op == "unsubscribe":
                channels = check_channels(msg.get("channels"),
                                          self.ctx.settings.ws_max_subscriptions)
                self.subscription.remove(channels)
                self._send({"type": "unsubscribed", "channels": channels, "ref": ref})
            elif op == "ping":
                self._send({"type": "pong", "ref": ref})
            elif op == "auth":
                token = msg.get("token")
                if not isinstance(token, str) or not token:
                    raise ApiError(422, "validation_error", "token must be a non-empty string")
                return self._guarded(self._auth(token, ref), ref)
            else:
                raise ApiError(422, "validation_error",
                               "op must be one of subscribe, unsubscribe, ping, auth")
        except ApiError as error:
            self._op_failed(error, ref)
        except Exception:
            log.exception("WebSocket op %.40r failed", op)
            self._error("internal_error", "internal server error", ref)
        return None

    async def _guarded(self, op, ref) -> None:
        try:
            await op
        except ApiError as error:
            self._op_failed(error, ref)
        except Exception as exc:
            if is_unavailable(exc):
                self._error("service_unavailable", "the database is unreachable, try again", ref)
            else:
                log.exception("WebSocket message failed")
                self._error("internal_error", "internal server error", ref)
        finally:
            self._release_held()

    def _release_held(self) -> None:
        if self._held is not None:  # an ack with nothing after it
            held, self._held = self._held, None
            self.write(held)

    def _op_failed(self, error: ApiError, ref) -> None:
        extra = {}
        if error.code == "cursor_expired" and error.details:
            extra["oldest_seq"] = error.details[0]["oldest_seq"]
            extra["epoch"] = error.details[0]["epoch"]
        self._error(error.code, error.message, ref, **extra)

    async def _auth(self, token: str, ref) -> None:
        user, claims = await self.ctx.auth.authenticate_claims(token)
        if self.state != OPEN:
            return
        self.user, self.family, self.expires = user, claims.fam, claims.exp
        self.ctx.grants.add(self)
        self._send({"type": "authenticated", "user_id": str(user["_id"]), "ref": ref})
        # Another user's token: what the previous one could read and this one cannot ends.
        self._drop_disallowed(None)

    # --- rights that change under an open connection (realtime.grants) -----------------------

    def grant_lost(self, code: str, message: str) -> None:
        """The token stopped being good: the connection goes on unauthenticated, with its public
        channels, and may authenticate again with an auth op."""
        self.ctx.grants.discard(self)
        self.user = self.family = self.expires = None
        self._drop_disallowed(message, always=True)

    def grant_changed(self, user: dict) -> None:
        self.user = user
        self._drop_disallowed(None)

    def _drop_disallowed(self, message: str | None, always: bool = False) -> None:
        """Ends the subscriptions the current user may not read, with one error frame naming
        them (sent even when there are none if `always`: the client learns it is anonymous)."""
        code, channels = disallowed(self.user, self.subscription.channels)
        if channels:
            self.subscription.remove(channels)
        if channels or always:
            if message is None:
                message = "no longer allowed to read " + ", ".join(channels)
            self._error(code, message, channels=channels)

    def _token_expired(self) -> bool:
        if self.expires is not None and self.expires <= time.time():
            self.grant_lost("unauthorized", "the access token has expired")
            return True
        return False

    def _subscribe(self, msg: dict, ref):
        unknown = set(msg) - {"op", "channels", "since", "epoch", "ref"}
        if unknown:
            raise ApiError(422, "validation_error", f"unknown field {sorted(unknown)[0]!r}")
        since = msg.get("since")
        if since is not None and not bounded_int(since):
            raise ApiError(422, "validation_error",
                           f"since must be an integer from 0 to {MAX_INT}")
        epoch = msg.get("epoch")
        if epoch is not None and (not isinstance(epoch, str) or not 0 < len(epoch) <= 64):
            raise ApiError(422, "validation_error", "epoch must be a string of 1 to 64 chars")
        limit = self.ctx.settings.ws_max_subscriptions
        channels = check_channels(msg.get("channels"), limit)
        if len(self.subscription.channels.keys() | set(channels)) > limit:
            raise ApiError(422, "validation_error", f"at most {limit} channels per connection")
        if any(name.startswith("user:") for name in channels):
            self._token_expired()
        check_access(self.user, channels)
        ack = {"type": "subscribed", "channels": channels, "ref": ref,
               "epoch": self.ctx.hub.log.epoch}
        if since is None:
            self._send(ack)
            self.subscription.add_live(channels)
            return None
        # The ack waits for the replay's first page so both leave in one send: in a reconnect
        # storm of 15,000 resuming WebSockets, one send syscall (and one client wake-up) fewer
        # per connection.
        if self.subscription.add_recent(channels, since, lambda: self._hold(ack),
                                        epoch) is not None:
            self._release_held()
            return None
        return self._guarded(
            self.subscription.add(channels, since, lambda: self._hold(ack), epoch), ref)
