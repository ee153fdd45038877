"""WebSocket frames as a client writes them and as a test reads the server's (RFC 6455 §5.2)."""

import struct

from tornado_app.realtime.websocket import OP_CLOSE

MASK = b"\x37\xfa\x21\x3d"


def client_frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                 mask: bytes | None = MASK, length: int | None = None) -> bytes:
    """A client frame; `length` overrides the declared payload length."""
    length = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    masked = 0x80 if mask is not None else 0
    if length < 126:
        header = struct.pack("!BB", first, masked | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, masked | 126, length)
    else:
        header = struct.pack("!BBQ", first, masked | 127, length)
    if mask is None:
        return header + payload
    return header + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    @property
    def code(self) -> int | None:
        assert self.opcode == OP_CLOSE
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None

    def __repr__(self):
        return f"Frame(fin={self.fin}, op={self.opcode:#x}, {self.payload[:40]!r})"


def parse_server_frames(data: bytes) -> list[Frame]:
    frames, pos = [], 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert not b1 & 0x80, "a server frame must not be masked"
        length, head = b1 & 0x7F, pos + 2
        if length == 126:
            length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
        elif length == 127:
            length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
        assert head + length <= len(data), "a frame cut short"
        frames.append(Frame(bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F, data[head:head + length]))
        pos = head + length
    return frames
