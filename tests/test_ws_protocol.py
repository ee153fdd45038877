"""The WebSocket protocol itself (RFC 6455), byte by byte, with a raw TCP client."""

import asyncio
import json
import os
import struct

import pytest

from tests.realtime_helpers import wait_until

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # the example of RFC 6455 §1.3
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def client_frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True,
                 rsv: int = 0) -> bytes:
    first = (0x80 if fin else 0) | rsv | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, (0x80 if masked else 0) | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, length)
    else:
        header = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, length)
    if not masked:
        return header + payload
    mask = os.urandom(4)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def text(value) -> bytes:
    return client_frame(0x1, json.dumps(value).encode())


def handshake(key: str = RFC_KEY, extra: str = "", version: str = "13") -> bytes:
    return (f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: {version}\r\n{extra}\r\n").encode()


class RawClient:
    def __init__(self, reader, writer, head: bytes):
        self.reader, self.writer, self.head = reader, writer, head

    @classmethod
    async def open(cls, port: int, request: bytes, then: bytes = b"") -> "RawClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request + then)  # `then`: frames in the same packet as the handshake
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        return cls(reader, writer, head)

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.head.decode().split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self, timeout: float = 5.0) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload). Server frames are never masked."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), timeout)
        assert first & 0x80 and not second & 0x80
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", await self.reader.readexactly(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), timeout)

    async def message(self) -> dict:
        opcode, payload = await self.frame()
        assert opcode == 0x1
        return json.loads(payload)

    async def close_code(self) -> int:
        opcode, payload = await self.frame()
        assert opcode == 0x8
        return struct.unpack("!H", payload[:2])[0]

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    def close(self) -> None:
        self.writer.close()


@pytest.mark.gen_test
async def test_handshake_answers_with_the_rfc_accept_key_and_the_request_id(server):
    client = await RawClient.open(server.port, handshake(extra="X-Request-ID: ws-1\r\n"))
    assert client.status == 101
    assert client.header("Sec-WebSocket-Accept") == RFC_ACCEPT
    assert client.header("Upgrade").lower() == "websocket"
    assert client.header("X-Request-ID") == "ws-1"
    client.close()


@pytest.mark.gen_test
async def test_a_frame_sent_together_with_the_handshake_is_read(server):
    client = await RawClient.open(server.port, handshake(),
                                  then=text({"op": "ping", "ref": "early"}))
    assert await client.message() == {"type": "pong", "ref": "early"}
    client.close()


@pytest.mark.gen_test
async def test_a_fragmented_message_is_reassembled_around_a_ping(server):
    client = await RawClient.open(server.port, handshake())
    whole = json.dumps({"op": "ping", "ref": "in three parts"}).encode()
    client.send(client_frame(0x1, whole[:5], fin=False))
    client.send(client_frame(0x9, b"between"))
    client.send(client_frame(0x0, whole[5:12], fin=False))
    client.send(client_frame(0x0, whole[12:]))
    assert await client.frame() == (0xA, b"between")
    assert await client.message() == {"type": "pong", "ref": "in three parts"}
    client.close()


@pytest.mark.gen_test
async def test_a_client_close_is_echoed_and_the_server_ends_tcp(server):
    client = await RawClient.open(server.port, handshake())
    await wait_until(lambda: len(server.ctx.connections.sockets) == 1)
    client.send(client_frame(0x8, struct.pack("!H", 1000) + b"bye"))
    assert await client.close_code() == 1000
    assert await client.at_eof()
    await wait_until(lambda: not server.ctx.connections.sockets)


@pytest.mark.gen_test
async def test_a_client_that_drops_tcp_is_forgotten(server):
    client = await RawClient.open(server.port, handshake(), then=text(
        {"op": "subscribe", "channels": ["posts"]}))
    assert (await client.message())["type"] == "subscribed"
    client.close()
    await wait_until(lambda: not server.ctx.connections.sockets
                     and not server.ctx.hub.channels.get("posts"))


@pytest.mark.gen_test
@pytest.mark.parametrize("frame, code", [
    (client_frame(0x1, b'{"op":"ping"}', masked=False), 1002),   # clients must mask
    (client_frame(0x1, b'{"op":"ping"}', rsv=0x40), 1002),        # no extension negotiated
    (client_frame(0x3, b"?"), 1002),                              # reserved opcode
    (client_frame(0x9, b"x" * 126), 1002),                        # control frame over 125
    (client_frame(0x9, b"", fin=False), 1002),                    # fragmented control frame
    (client_frame(0x0, b"orphan"), 1002),                         # nothing to continue
    (client_frame(0x1, b"\xff\xfe"), 1007),                       # text that is not UTF-8
    (client_frame(0x8, b"\x03"), 1002),                           # one-byte close payload
    (client_frame(0x8, struct.pack("!H", 1005)), 1002),           # a code never sent
])
async def test_protocol_violations_close_with_the_rfc_code(server, frame, code):
    client = await RawClient.open(server.port, handshake())
    client.send(frame)
    assert await client.close_code() == code
    assert await client.at_eof()


@pytest.mark.gen_test
async def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error(server):
    client = await RawClient.open(server.port, handshake())
    client.send(client_frame(0x1, b'{"op":', fin=False))
    client.send(client_frame(0x1, b'"ping"}'))
    assert await client.close_code() == 1002


@pytest.mark.gen_test
async def test_an_oversize_frame_is_refused_from_its_header_alone(server):
    client = await RawClient.open(server.port, handshake())
    # Only the header, announcing 1 MiB: the server must not wait for (or buffer) the payload.
    client.send(struct.pack("!BBQ", 0x81, 0x80 | 127, 1 << 20) + os.urandom(4))
    assert await client.close_code() == 1009


@pytest.mark.gen_test
async def test_messages_are_answered_in_the_order_sent(api, server):
    """An auth op waits on the token check; a ping sent right behind it is answered after it."""
    token = await api.user_token("alice")
    client = await RawClient.open(server.port, handshake())
    client.send(text({"op": "auth", "token": token, "ref": 1}) + text({"op": "ping", "ref": 2}))
    assert (await client.message())["type"] == "authenticated"
    assert await client.message() == {"type": "pong", "ref": 2}
    client.close()


@pytest.mark.gen_test
async def test_server_events_are_single_unmasked_text_frames(api, server):
    token = await api.user_token("alice")
    client = await RawClient.open(server.port, handshake(), then=text(
        {"op": "subscribe", "channels": ["posts"]}))
    assert (await client.message())["type"] == "subscribed"
    response = await api.post("/api/v1/posts", {"title": "framed", "content": "x" * 70_000},
                              token=token)
    assert response.code == 201
    message = await client.message()  # over 64 KiB: the 8-byte length form
    assert message["event"]["data"]["title"] == "framed"
    client.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("request_bytes, status", [
    (handshake(key="too-short"), 400),
    (handshake(version="8"), 426),
    (handshake().replace(b"Connection: keep-alive, Upgrade", b"Connection: keep-alive"), 426),
])
async def test_a_bad_handshake_is_refused_in_the_error_shape(server, request_bytes, status):
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(request_bytes)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert int(head.split(b" ", 2)[1]) == status
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length")][0])
    body = json.loads(await reader.readexactly(length))
    assert set(body["error"]) >= {"code", "message"}
    if status == 426:
        assert b"sec-websocket-version: 13" in head.lower() or b"upgrade: websocket" in head.lower()
    writer.close()
