"""A server-side WebSocket connection (RFC 6455) on the raw socket, after Tornado parsed the upgrade.

Why not Tornado's WebSocketHandler: per connection it keeps a suspended coroutine chain, an
IOStream with its deques, a protocol object and the handler with its request (about 12 KB for an
idle connection), and every send goes through a Future. Here a connection is one object with
`__slots__` and a reader registered on the event loop, and a send is one `socket.send` of bytes
that were framed once for every subscriber. Only what the socket cannot take is buffered.
"""

import asyncio
import base64
import hashlib
import logging
import socket
import struct
import zlib

try:  # Tornado's C unmasking (public in its extension module; tornado.util's name is private)
    from tornado.speedups import websocket_mask as _websocket_mask
except ImportError:  # a Tornado built without its extension
    def _websocket_mask(mask: bytes, data: bytes) -> bytes:
        return unmask_python(mask, data)

from .deflate import TooBig, deflate_message, inflate_message, next_history

log = logging.getLogger(__name__)

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_CHUNK = 65536
CLOSE_TIMEOUT = 5.0  # how long a close we started waits for the peer's close frame

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
PING_FRAME = b"\x89\x00"  # an empty ping, the same bytes for every connection
PING_SLACK = 0.95  # of the ping interval, for timer jitter

OPEN, CLOSE_SENT, FLUSH_THEN_CLOSE, CLOSED = range(4)


def unmask_python(mask: bytes, data: bytes) -> bytes:
    """§5.3 unmasking as one XOR of two big integers (what tornado.util falls back to, too)."""
    size = len(data)
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "little")
    return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def valid_key(key: str | None) -> bool:
    if not key:
        return False
    try:
        return len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (ValueError, UnicodeEncodeError):
        return False


RSV1 = 0x40  # a compressed message's first frame (RFC 7692 §6)


def server_frame(opcode: int, payload: bytes, rsv: int = 0) -> bytes:
    """An unmasked, unfragmented server-to-client frame (§5.2); `rsv`: RSV1 for a message
    compressed with permessage-deflate."""
    length = len(payload)
    b0 = 0x80 | rsv | opcode
    if length < 126:
        header = struct.pack("!BB", b0, length)
    elif length < 65536:
        header = struct.pack("!BBH", b0, 126, length)
    else:
        header = struct.pack("!BBQ", b0, 127, length)
    return header + payload


def close_frame(code: int, reason: str = "") -> bytes:
    # A control frame holds 125 bytes: the code and 123 of the reason, cut between characters
    # (a reason cut inside one is not UTF-8, and the peer would fail the connection with 1007).
    reason_bytes = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return server_frame(OP_CLOSE, struct.pack("!H", code) + reason_bytes)


def _valid_close_code(code: int) -> bool:
    # §7.4: codes a peer may send; 1004-1006 and 1015 are reserved and never sent on the wire.
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) \
        or 3000 <= code <= 4999


class WebSocketConnection:
    """Framing, control frames, the close handshake and backpressure for one connection.

    Subclasses implement `on_message(text_or_bytes)` (which may return a coroutine: messages are
    then handled one at a time, in order, and reading pauses meanwhile), `on_backpressure()` and
    `on_closed()`.

    `deflate`: the permessage-deflate parameters agreed in the upgrade (realtime.deflate), or
    None. `history`: what a client that keeps its compression context sent last (its window).
    """

    __slots__ = ("sock", "fd", "loop", "state", "inbuf", "outbuf", "fragments", "fragment_op",
                 "busy", "awaiting_pong", "pinged_at", "close_timer", "max_message", "max_pending",
                 "close_code", "deflate", "history", "compressed", "deflated_last")

    def __init__(self, sock, max_message: int, max_pending: int, deflate=None):
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = asyncio.get_running_loop()
        self.state = OPEN
        self.inbuf: bytearray | None = None
        self.outbuf: bytearray | None = None
        self.fragments: bytearray | None = None  # the message so far, while it comes in parts
        self.fragment_op = 0
        self.busy = False
        self.awaiting_pong = False
        # When the last ping went out; the opening handshake counts as one, so the first ping
        # comes an interval after the connection opened, not at once.
        self.pinged_at = self.loop.time()
        self.close_timer = None
        self.max_message = max_message
        self.max_pending = max_pending
        self.close_code: int | None = None
        self.deflate = deflate
        # The event this connection sent compressed last (its JSON, record.Record.json), when
        # the peer keeps its context; None when its last compressed message was anything else.
        self.deflated_last: bytes | None = None
        self.history: bytes | None = None
        self.compressed = False  # the message in progress came with RSV1

    def start(self, handshake: bytes, received: bytes = b"") -> None:
        """Sends the 101 response and starts reading (`received`: bytes already read past it)."""
        # Frames are written whole: Nagle would only hold the next one back for an ACK.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._write_raw(handshake)
        if received:
            self._feed(received)
        if self.state != CLOSED and not self.busy:
            self.loop.add_reader(self.fd, self._on_readable)

    # --- writing -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Sends prebuilt frame bytes; nothing once a close has begun."""
        if self.state == OPEN:
            self._write_raw(data)

    def send_message(self, opcode: int, payload: bytes, compress: bool = True) -> None:
        """One message of this connection alone, deflated on its own when the extension was
        negotiated and `compress` (server_no_context_takeover: no compressor is kept)."""
        self.write(self.message_frame(opcode, payload, compress))

    def message_frame(self, opcode: int, payload: bytes, compress: bool = True) -> bytes:
        """The frame send_message sends (each deflated on its own: frames may be kept and
        sent later, together)."""
        deflate = self.deflate
        if deflate is not None and compress:
            self.deflated_last = None  # the peer's window now ends with this message
            return server_frame(opcode, deflate_message(payload, deflate.server_bits), RSV1)
        return server_frame(opcode, payload)

    def _write_raw(self, data: bytes) -> None:
        outbuf = self.outbuf
        if outbuf is None:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.abort()
                return
            if sent == len(data):
                return
            self.outbuf = outbuf = bytearray(memoryview(data)[sent:])
            self.loop.add_writer(self.fd, self._on_writable)
        else:
            outbuf += data
        if len(outbuf) > self.max_pending and self.state == OPEN:
            self.on_backpressure()

    def _on_writable(self) -> None:
        outbuf = self.outbuf
        if outbuf is None:
            return
        try:
            sent = self.sock.send(outbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        del outbuf[:sent]
        if not outbuf:
            self.outbuf = None
            self.loop.remove_writer(self.fd)
            if self.state == FLUSH_THEN_CLOSE:
                self.abort()

    def unsent_bytes(self) -> int:
        return len(self.outbuf) if self.outbuf is not None else 0

    # --- reading -----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort()
            return
        if not data:
            self.abort()  # the peer closed TCP without a close frame
            return
        self._feed(data)
        if self.busy and self.state != CLOSED:
            self.loop.remove_reader(self.fd)  # resumed when the message in hand is handled

    def _feed(self, data: bytes) -> None:
        inbuf = self.inbuf
        if inbuf is not None:
            inbuf += data
            data = inbuf
        pos = self._parse(data)
        if self.state == CLOSED:
            return
        if pos == len(data):
            self.inbuf = None
        elif data is inbuf:
            if pos:
                del inbuf[:pos]  # in place: a frame that trickles in is not copied at every read
        else:
            self.inbuf = bytearray(memoryview(data)[pos:])

    def _parse(self, buf) -> int:
        """Handles every whole frame in `buf`; returns how far it got."""
        pos = 0
        end_of_data = len(buf)
        while not self.busy and self.state in (OPEN, CLOSE_SENT):
            if end_of_data - pos < 2:
                break
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            head = pos + 2
            if length == 126:
                if end_of_data - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = pos + 4
            elif length == 127:
                if end_of_data - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = pos + 10
            rsv = b0 & 0x70
            # RSV1 marks a compressed message, on its first frame only (RFC 7692 §6.1).
            if rsv and (rsv != RSV1 or self.deflate is None or not OP_TEXT <= opcode <= OP_BINARY):
                self.fail(1002, "reserved bits set without a negotiated extension")
                break
            if not b1 & 0x80:
                self.fail(1002, "client frames must be masked")
                break
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG or not b0 & 0x80 or length > 125:
                    self.fail(1002, "invalid control frame")
                    break
            elif opcode > OP_BINARY:
                self.fail(1002, "unknown opcode")
                break
            else:
                so_far = len(self.fragments) if self.fragments is not None else 0
                if so_far + length > self.max_message:
                    self.fail(1009, "message too big")
                    break
            frame_end = head + 4 + length
            if end_of_data < frame_end:
                break
            payload = _websocket_mask(bytes(buf[head:head + 4]), bytes(buf[head + 4:frame_end]))
            pos = frame_end
            self._frame(b0 & 0x80, opcode, payload, rsv)
        return pos

    def _frame(self, fin: int, opcode: int, payload: bytes, rsv: int = 0) -> None:
        self.awaiting_pong = False  # any frame shows the peer is alive
        if opcode == OP_PING:
            if self.state == OPEN:
                self._write_raw(server_frame(OP_PONG, payload))
            return
        if opcode == OP_PONG:
            return
        if opcode == OP_CLOSE:
            self._peer_closed(payload)
            return
        if self.state != OPEN:
            return  # data after our close frame is ignored (§1.4)
        if opcode == OP_CONTINUATION:
            if self.fragments is None:
                self.fail(1002, "continuation frame without a message to continue")
                return
            self.fragments += payload
            if not fin:
                return
            opcode, payload = self.fragment_op, bytes(self.fragments)
            self.fragments = None
        elif self.fragments is not None:
            self.fail(1002, "a new message began before the previous one was finished")
            return
        else:
            self.compressed = bool(rsv)
            if not fin:
                self.fragments = bytearray(payload)
                self.fragment_op = opcode
                return
        if self.compressed:
            payload = self._inflate(payload)
            if payload is None:
                return
        if opcode == OP_TEXT:
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(1007, "text message is not valid UTF-8")
                return
        else:
            message = payload
        self._dispatch(message)

    def _inflate(self, data: bytes) -> bytes | None:
        deflate = self.deflate
        try:
            message = inflate_message(data, self.max_message, self.history)
        except TooBig:
            self.fail(1009, "message too big")
            return None
        except zlib.error:
            self.fail(1007, "invalid compressed data")
            return None
        if deflate.client_context:
            self.history = next_history(self.history, message, deflate.client_bits)
        return message

    def _dispatch(self, message) -> None:
        try:
            result = self.on_message(message)
        except Exception:
            # The frame is consumed all the same: raising out of here would leave it in the
            # input buffer, to be parsed (and fail) again at every read.
            log.exception("WebSocket message handling failed")
            return
        if result is not None:
            self.busy = True
            self.loop.create_task(result).add_done_callback(self._message_done)

    def _message_done(self, task) -> None:
        self.busy = False
        if not task.cancelled() and task.exception() is not None:
            log.error("WebSocket message handling failed", exc_info=task.exception())
        if self.state in (OPEN, CLOSE_SENT):
            # Frames that arrived while the message was handled, then the socket again.
            if self.inbuf is not None:
                self._feed(b"")
            if self.state != CLOSED and not self.busy:
                self.loop.add_reader(self.fd, self._on_readable)

    # --- closing -----------------------------------------------------------------------------

    def _peer_closed(self, payload: bytes) -> None:
        code = None
        if len(payload) == 1:
            self.fail(1002, "close frame with a one-byte payload")
            return
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            if not _valid_close_code(code):
                self.fail(1002, "invalid close code")
                return
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                self.fail(1007, "close reason is not valid UTF-8")
                return
        self.close_code = code
        if self.state == OPEN:
            # Echo the close (§5.5.1), then end TCP once it is written: the server closes first.
            self.state = FLUSH_THEN_CLOSE
            self._write_raw(close_frame(code) if code is not None else server_frame(OP_CLOSE, b""))
            if self.outbuf is None:
                self.abort()
        else:
            self.abort()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Starts the close handshake; the connection ends at the peer's answer or CLOSE_TIMEOUT."""
        if self.state != OPEN:
            return
        self.state = CLOSE_SENT
        self._write_raw(close_frame(code, reason))
        if self.state == CLOSE_SENT:
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.abort)

    def fail(self, code: int, reason: str) -> None:
        """Fails the connection (§7.1.7): a close frame if it can still go, then TCP is closed."""
        if self.state == OPEN:
            self.state = FLUSH_THEN_CLOSE
            self._write_raw(close_frame(code, reason))
            if self.outbuf is None:
                self.abort()
        elif self.state != CLOSED:
            self.abort()

    def abort(self) -> None:
        """Ends the connection at once."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        # Unregistered before the close: the number may be reused by the next accepted socket.
        self.loop.remove_reader(self.fd)
        if self.outbuf is not None:
            self.loop.remove_writer(self.fd)
        self.outbuf = self.inbuf = self.fragments = None
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        try:
            self.sock.close()
        except OSError:
            pass
        self.on_closed()

    def heartbeat(self, now: float, interval: float) -> None:
        """Called once per heartbeat round. A ping at most once per `interval`; a peer that let
        a whole interval pass after a ping without sending any frame is dropped (no close
        handshake to wait for from a peer that is gone).

        Times, not rounds, decide: a socket's place in the round moves as others come and go,
        so two of its turns may be closer together than the interval."""
        if self.state != OPEN:
            return
        # A little slack for timer jitter: turns of a socket whose place did not move are one
        # interval apart, give or take a few ms.
        due = self.pinged_at + interval * PING_SLACK
        if now < due:
            return
        if self.awaiting_pong:
            self.abort()
            return
        self.awaiting_pong = True
        self.pinged_at = now
        self._write_raw(PING_FRAME)

    # --- for subclasses ----------------------------------------------------------------------

    def on_message(self, message):
        raise NotImplementedError

    def on_backpressure(self) -> None:
        self.close(1013, "slow consumer")

    def on_closed(self) -> None:
        pass
