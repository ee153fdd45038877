"""The client side of one connection, as lean as an asyncio Protocol can be: a WebSocket that
handshakes, subscribes, answers pings and notes when the broadcast event arrives; and a
long-poll that sends one GET and notes when its answer arrives.

Each protocol reports to its `Tally` (one per client process), which keeps only the first and
last receive time across all its connections: that is all the delivery figures need.
"""

import asyncio
import base64
import hashlib
import os
import time
import zlib

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# One key for every connection: servers check its form, not its uniqueness.
WS_KEY = base64.b64encode(os.urandom(16))
WS_ACCEPT = base64.b64encode(hashlib.sha1(WS_KEY + WS_GUID).digest())
MASK = os.urandom(4)
# What a browser offers (Chrome, Firefox): the server picks its own context and windows.
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_TAIL = b"\x00\x00\xff\xff"


def deflated(payload: bytes) -> bytes:
    """A client message compressed on its own, as the RFC 7692 message body."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -11)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


class Inflated:
    """A connection's inflater as a browser keeps it (its context carried from message to
    message), shared by every connection that has inflated the same compressed messages so
    far: each state knows what the next payload inflates to and the state after it. Every
    server here sends all its connections the same bytes (ours by design; Tornado's and
    websockets' compressors, one per connection, make the same bytes of the same messages),
    so a client process inflates each message once, not once per connection: 2,500 inflates
    per process on the 2 cores the server runs on measured the clients (ours, 5,000
    subscribers: the last one had the event 150 ms after it was sent plain, 170-1,070 ms
    compressed, the server stalled meanwhile), where each browser inflates on its own
    machine."""

    __slots__ = ("inflater", "after")

    def __init__(self, inflater=None):
        self.inflater = inflater or zlib.decompressobj(-15)
        self.after: dict[bytes, tuple] = {}

    def next(self, payload: bytes) -> tuple[bytes, "Inflated"]:
        """(the message, the state after it)."""
        known = self.after.get(payload)
        if known is None:
            inflater = self.inflater.copy()
            known = self.after[payload] = (inflater.decompress(payload + _TAIL),
                                           Inflated(inflater))
        return known


FRESH = Inflated()  # a connection that has inflated nothing yet


def frame_at(buf: bytes, pos: int, size: int):
    """(first byte, header length, payload length) of the whole server frame (unmasked) that
    starts at `pos`, or None while it has not all arrived."""
    if size - pos < 2:
        return None
    length = buf[pos + 1] & 0x7F
    head = 2
    if length == 126:
        if size - pos < 4:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
        head = 4
    elif length == 127:
        if size - pos < 10:
            return None
        length = int.from_bytes(buf[pos + 2:pos + 10], "big")
        head = 10
    if size - pos < head + length:
        return None
    return buf[pos], head, length


def client_frame(opcode: int, payload: bytes, rsv: int = 0) -> bytes:
    """A masked client-to-server frame (RFC 6455 §5.2), payload under 126 bytes."""
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | rsv | opcode, 0x80 | len(payload)]) + MASK + masked


def ws_upgrade_request(host: str, port: int, path: str, token: str | None,
                       deflate: bool = False) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {WS_KEY.decode()}",
             "Sec-WebSocket-Version: 13"]
    if deflate:
        lines.append(f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class Tally:
    """What one client process saw: errors by kind, and the receive times of the event."""

    def __init__(self):
        self.errors: dict[str, int] = {}
        self.armed = False
        self.closing = False        # set before the client closes its own connections
        self.got = 0
        self.first = None
        self.last = None
        self.expected = 0
        self.all_got: asyncio.Future | None = None
        self.acks = 0
        self.ack_target = 0
        self.all_acked: asyncio.Future | None = None
        self.wire_bytes = None      # the event's frame as it came over the wire (header too)
        # When set, only an event whose message contains these bytes is the one counted (the
        # others still go through each connection's inflater, as a stream does).
        self.marker: bytes | None = None
        self.compressed = 0         # connections whose event came compressed (RSV1)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def received(self) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.got += 1
        if self.got >= self.expected and self.all_got and not self.all_got.done():
            self.all_got.set_result(None)

    def acked(self) -> None:
        self.acks += 1
        if self.acks >= self.ack_target and self.all_acked and not self.all_acked.done():
            self.all_acked.set_result(None)


class WsClient(asyncio.Protocol):
    __slots__ = ("tally", "request", "transport", "ready", "upgraded", "buf", "got", "subscribed",
                 "closed", "deflate", "inflated")

    def __init__(self, tally: Tally, request: bytes, ready: asyncio.Future):
        self.tally = tally
        self.request = request
        self.ready = ready          # resolved by the 101, or failed
        self.transport = None
        self.upgraded = False
        self.buf = b""
        self.got = False            # has this connection received the event
        self.subscribed = False
        self.closed = False
        self.deflate = False        # the server accepted permessage-deflate
        self.inflated = FRESH       # this connection's inflater (context kept)

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)
        self.request = None

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            head = buf[:end]
            if not head.startswith(b"HTTP/1.1 101") or WS_ACCEPT not in head:
                status = head.split(b"\r\n", 1)[0].decode(errors="replace")
                self._fail(f"upgrade refused: {status}")
                self.closed = True  # counted once, as refused, not again as lost
                self.transport.close()
                return
            self.upgraded = True
            self.deflate = b"permessage-deflate" in head
            buf = buf[end + 4:]
            if not self.ready.done():
                self.ready.set_result(None)
        self.buf = self._frames(buf)

    def _frames(self, buf: bytes) -> bytes:
        """Handles every whole server frame in `buf` (unmasked); returns the rest."""
        pos = 0
        size = len(buf)
        while (frame := frame_at(buf, pos, size)) is not None:
            first, head, length = frame
            rsv1, opcode = first & 0x40, first & 0x0F
            payload = buf[pos + head:pos + head + length]
            pos += head + length
            if rsv1:
                message, self.inflated = self.inflated.next(payload)
                self._frame(opcode, message, head + length, True)
            else:
                self._frame(opcode, payload, head + length, False)
        return buf[pos:] if pos < size else b""

    def _frame(self, opcode: int, payload: bytes, wire: int = 0, compressed: bool = False) -> None:
        if opcode == 0x9:  # ping: the server drops a peer that does not answer
            if self.transport is not None:
                self.transport.write(client_frame(0xA, payload[:125]))
        elif opcode == 0x8:
            self.closed = True
        elif opcode in (0x1, 0x2):
            # Our server: a "subscribed" ack, an "error", or an event. Peers send only events.
            if b'"subscribed"' in payload:
                self.subscribed = True
                self.tally.acked()
            elif b'"error"' in payload[:40]:
                self.tally.error("error frame: " + payload[:200].decode(errors="replace"))
            elif self.tally.armed and not self.got and (
                    self.tally.marker is None or self.tally.marker in payload):
                self.got = True
                if self.tally.wire_bytes is None:
                    self.tally.wire_bytes = wire
                self.tally.compressed += compressed
                self.tally.received()

    def connection_lost(self, exc) -> None:
        if not self.ready.done():
            self._fail(f"closed before the upgrade: {exc!r}" if exc else
                       "closed before the upgrade")
        elif not self.closed and not self.tally.closing:
            self.tally.error("connection lost after the upgrade")
        self.closed = True
        self.transport = None

    def _fail(self, message: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(message))

    def send(self, frame: bytes) -> None:
        if self.transport is not None:
            self.transport.write(frame)


class PollClient(asyncio.Protocol):
    """One pending long-poll: the request goes out on connect; the first byte back is the answer."""
    __slots__ = ("tally", "request", "transport", "ready", "answered", "status")

    def __init__(self, tally: Tally, request: bytes, ready: asyncio.Future):
        self.tally = tally
        self.request = request
        self.ready = ready          # resolved once the request is written
        self.transport = None
        self.answered = False
        self.status = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)
        self.request = None
        self.ready.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        self.answered = True
        self.status = data[9:12]
        if self.status != b"200":
            self.tally.error("answer " + data.split(b"\r\n", 1)[0].decode(errors="replace"))
        elif not self.tally.armed:
            self.tally.error("answered before the event")
        else:
            self.tally.received()

    def connection_lost(self, exc) -> None:
        if not self.answered and not self.tally.closing:
            self.tally.error("closed before the answer")
        self.transport = None


def poll_request(host: str, port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
