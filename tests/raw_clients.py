"""Clients on plain asyncio sockets, for what the usual clients will not do: a WebSocket frame
written in two parts (so the server reads it in two reads), pipelined or raw HTTP requests."""

import asyncio
import base64
import json
import os
import socket
import struct

HANDSHAKE = ("GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
             "\r\n")
# Long enough for the server to read the first part on its own before the second arrives.
SPLIT_PAUSE = 0.01


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked, unfragmented client frame (RFC 6455 §5.2)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawWebSocket:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> "RawWebSocket":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(HANDSHAKE.format(key=key).encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(reader, writer)

    async def send_raw(self, data: bytes, split_at: int | None = None) -> None:
        """Writes `data`; with `split_at`, in two writes far enough apart to be two reads."""
        if split_at is not None and 0 < split_at < len(data):
            self.writer.write(data[:split_at])
            await self.writer.drain()
            await asyncio.sleep(SPLIT_PAUSE)
            data = data[split_at:]
        self.writer.write(data)
        await self.writer.drain()

    async def send_text(self, text: str, split_at: int | None = None) -> None:
        await self.send_raw(client_frame(text.encode("utf-8")), split_at)

    async def send_json(self, payload, split_at: int | None = None) -> None:
        await self.send_text(json.dumps(payload), split_at)

    async def recv(self, timeout: float = 5.0):
        """The next text message as JSON; None when the server closes (pings are skipped)."""
        while True:
            b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                return None
            if opcode == 0x1:
                return json.loads(payload)

    async def recv_until(self, kind: str, timeout: float = 5.0) -> tuple[dict | None, list]:
        """(the first message of type `kind` or None if closed first, the messages before it)."""
        before = []
        while True:
            message = await self.recv(timeout)
            if message is None or message.get("type") == kind:
                return message, before
            before.append(message)

    def close(self) -> None:
        self.writer.close()


async def raw_http(port: int, data: bytes, read_for: float = 1.0) -> bytes:
    """Sends raw bytes; everything the server answers until it closes or `read_for` passes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = b""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + read_for
    try:
        while loop.time() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            if not chunk:
                received += b"<closed>"
                break
            received += chunk
    finally:
        writer.close()
    return received


async def http_status(port: int, request: bytes, timeout: float = 10.0):
    """(status, headers, body) of one raw request; a streamed answer is not read past its head."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers and not request.startswith(b"HEAD "):
            body = await asyncio.wait_for(
                reader.readexactly(int(headers["content-length"])), timeout)
        return status, headers, body
    finally:
        writer.close()
