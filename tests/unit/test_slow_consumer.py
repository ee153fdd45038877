"""A slow consumer (tornado_app/realtime/session.py): a WebSocket session whose unsent events pass
WS_MAX_PENDING_BYTES leaves the hub and is closed with 1013, and the others are not held up.

The sessions run on socketpairs with the real hub (on an in-memory log), connection registry and
grant check; nothing here needs a database."""

import asyncio
import json
import select
import socket
from types import SimpleNamespace

import pytest

from tests.unit.frames import client_frame, close_payload, parse_server_frames
from tests.unit.memory_log import MemoryLog
from tornado_app.realtime.connections import Connections
from tornado_app.realtime.grants import GrantCheck
from tornado_app.realtime.hub import Hub
from tornado_app.realtime.session import EventSession
from tornado_app.realtime.websocket import CLOSED, OP_CLOSE, OP_TEXT, OPEN
from tornado_app.runtime.settings import load_settings

MAX_PENDING = 64 * 1024


class Client:
    """The client's end of one session's socketpair."""

    def __init__(self, ctx):
        self.sock, server_end = socket.socketpair()
        for end in (self.sock, server_end):
            end.setblocking(False)
        self.session = EventSession(server_end, ctx)
        ctx.connections.sockets.add(self.session)  # what start() does, less the TCP options
        self.buffer = b""
        self.eof = False

    def send(self, message: dict) -> None:
        self.sock.sendall(client_frame(OP_TEXT, json.dumps(message).encode()))
        while self.session.state != CLOSED and select.select([self.session.sock], [], [], 0)[0]:
            self.session._on_readable()

    def read(self) -> list:
        """Frames the server sent since the last read: (opcode, JSON or close code)."""
        while True:
            try:
                chunk = self.sock.recv(1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self.eof = True
                break
            self.buffer += chunk
        # Only whole frames: the rest stays for the next read.
        frames, end = [], 0
        for frame, frame_end in whole_frames(self.buffer):
            frames.append((frame.opcode, frame.code if frame.opcode == OP_CLOSE
                           else json.loads(frame.payload)))
            end = frame_end
        self.buffer = self.buffer[end:]
        return frames

    def close(self) -> None:
        self.sock.close()
        self.session.abort()


def whole_frames(data: bytes):
    pos = 0
    while len(data) - pos >= 2:
        length, head = data[pos + 1] & 0x7F, pos + 2
        if length == 126:
            length, head = int.from_bytes(data[pos + 2:pos + 4], "big"), pos + 4
        elif length == 127:
            length, head = int.from_bytes(data[pos + 2:pos + 10], "big"), pos + 10
        if head + length > len(data):
            return
        [frame] = parse_server_frames(data[pos:head + length])
        yield frame, head + length
        pos = head + length


@pytest.fixture
def ctx():
    settings = load_settings(app_env="test", jwt_secret="unit-" + "x" * 40,
                             ws_max_pending_bytes=MAX_PENDING)
    log = MemoryLog()
    return SimpleNamespace(settings=settings, log=log, hub=Hub(log), connections=Connections(),
                           grants=GrantCheck(None, 60.0))


def publish(ctx, count: int, size: int = 1000) -> None:
    for _ in range(count):
        ctx.hub.on_event(ctx.log.append("posts", data={"text": "x" * size}))


@pytest.mark.gen_test
async def test_a_session_that_does_not_read_is_closed_with_1013_and_leaves_the_hub(ctx):
    await ctx.hub.start()
    slow = Client(ctx)
    slow.send({"op": "subscribe", "channels": ["posts"], "ref": 1})
    assert slow.read() == [(OP_TEXT, {"type": "subscribed", "channels": ["posts"], "ref": 1,
                                      "epoch": "epoch-1"})]
    publish(ctx, 500)  # ~500 KB for a socket whose peer reads nothing
    assert slow.session.state != OPEN
    assert slow.session.subscription.channels == {}
    assert "posts" not in ctx.hub.channels
    assert ctx.connections.slow_consumers_closed == 1
    # What was queued goes out, then the close: the client learns why, and resumes with since.
    frames = []
    while not frames or frames[-1][0] != OP_CLOSE:
        frames += slow.read()
        await asyncio.sleep(0.01)
    events = [payload["event"]["seq"] for opcode, payload in frames[:-1]]
    assert events == list(range(1, len(events) + 1))
    assert frames[-1] == (OP_CLOSE, 1013)
    slow.sock.sendall(client_frame(OP_CLOSE, close_payload(1013)))
    slow.session._on_readable()
    assert slow.session.state == CLOSED
    assert slow.session not in ctx.connections.sockets


@pytest.mark.gen_test
async def test_a_slow_session_does_not_hold_up_the_others(ctx):
    await ctx.hub.start()
    slow, reader = Client(ctx), Client(ctx)
    for client in (slow, reader):
        client.send({"op": "subscribe", "channels": ["posts"]})
        client.read()
    got = []
    for _ in range(10):
        publish(ctx, 50)
        got += [payload["event"]["seq"] for opcode, payload in reader.read()]
    assert got == list(range(1, 501))
    assert ctx.connections.slow_consumers_closed == 1
    assert reader.session.subscription.channels == {"posts": 500}
    for client in (slow, reader):
        client.close()
