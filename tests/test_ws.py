"""WebSocket /api/v1/ws with real clients: Tornado's websocket_connect and the websockets library."""

import asyncio
import base64
import json
import os
import socket
import struct

import pytest
import websockets
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import websocket_connect

from tests.realtime_helpers import WsClient, create_posts, hand_out_per_turn, wait_until
from tornado_app.core.clock import utcnow


@pytest.mark.gen_test
async def test_live_event_reaches_a_subscriber(api, server):
    token = await api.user_token("alice")
    ws = await WsClient.connect(server.port)
    reply = await ws.subscribe(["posts"], ref="r1")
    assert reply == {"type": "subscribed", "channels": ["posts"], "ref": "r1",
                     "epoch": server.ctx.events.epoch}
    await create_posts(api, token, 1)
    [event] = await ws.events(1)
    assert event["channel"] == "posts"
    assert event["type"] == "post.created"
    assert event["data"]["title"] == "post 0"
    assert set(event) == {"seq", "channel", "type", "data", "created_at"}
    assert event["created_at"].endswith("Z")
    ws.close()


@pytest.mark.gen_test
async def test_live_event_reaches_a_websockets_library_client(api, server):
    token = await api.user_token("alice")
    async with websockets.connect(f"ws://127.0.0.1:{server.port}/api/v1/ws") as ws:
        await ws.send(json.dumps({"op": "subscribe", "channels": ["posts"], "ref": 7}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        await create_posts(api, token, 2)
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        second = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == second["type"] == "event"
        assert second["event"]["seq"] == first["event"]["seq"] + 1


@pytest.mark.gen_test
async def test_events_of_other_channels_are_not_sent(api, server):
    token = await api.user_token("alice")
    admin = await api.admin_token(server)
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["products"])
    await create_posts(api, token, 1)
    await api.post("/api/v1/products", {"sku": "SKU-1", "name": "n", "category": "c",
                                        "price_cents": 1}, token=admin)
    [event] = await ws.events(1)
    assert event["channel"] == "products"
    ws.close()


@pytest.mark.gen_test
async def test_comment_events_go_to_the_posts_own_channel(api, server):
    token = await api.user_token("alice")
    post = (await api.post("/api/v1/posts", {"title": "t", "content": "c"}, token=token)).json
    ws = await WsClient.connect(server.port)
    await ws.subscribe([f"post:{post['id']}"])
    comment = await api.post(f"/api/v1/posts/{post['id']}/comments", {"body": "hi"}, token=token)
    await api.delete(f"/api/v1/comments/{comment.json['id']}", token=token)
    created, deleted = await ws.events(2)
    assert created["type"] == "comment.created" and created["data"]["body"] == "hi"
    assert deleted["type"] == "comment.deleted" and deleted["data"]["id"] == comment.json["id"]
    ws.close()


@pytest.mark.gen_test(timeout=120)
async def test_resume_after_disconnect_gets_exactly_what_was_missed(api, server):
    token = await api.user_token("alice")
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"])
    await create_posts(api, token, 3)
    seen = await ws.events(3)
    ws.close()
    await create_posts(api, token, 500, prefix="missed")
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"], since=seen[-1]["seq"])
    missed = await ws.events(500)
    assert [e["data"]["title"] for e in missed] == [f"missed {i}" for i in range(500)]
    seqs = [e["seq"] for e in missed]
    assert seqs == sorted(set(seqs)) and seqs[0] > seen[-1]["seq"]
    await create_posts(api, token, 1, prefix="live")
    [live] = await ws.events(1)
    assert live["data"]["title"] == "live 0"
    ws.close()


@pytest.mark.gen_test(timeout=120)
async def test_replay_to_live_seam_has_no_gap_and_no_duplicate(api, server):
    token = await api.user_token("alice")
    total = 300
    writer = asyncio.ensure_future(create_posts(api, token, total))
    await wait_until(lambda: server.ctx.hub.last_seq >= 50)
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"], since=0)
    received = await ws.events(total, timeout=30)
    await writer
    assert [e["seq"] for e in received] == list(range(1, total + 1))
    ws.close()


@pytest.mark.gen_test
async def test_since_in_the_future_of_this_worker_does_not_duplicate(api, server):
    token = await api.user_token("alice")
    await create_posts(api, token, 2)
    # Another worker stored seq 3 and its client saw it; this worker's hub has not yet.
    await server.ctx.db["events"].insert_one({"_id": 3, "channel": "posts", "type": "test.event",
                                              "data": {}, "created_at": utcnow(), "cid": "w2"})
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"], since=3)
    await create_posts(api, token, 2, prefix="next")
    [event] = await ws.events(1)
    assert event["seq"] == 4
    ws.close()


class TestRetention:
    @pytest.fixture
    def settings_overrides(self):
        return {"event_retention": 1}

    @pytest.mark.gen_test
    async def test_since_older_than_retention_is_cursor_expired(self, api, server):
        token = await api.user_token("alice")
        await create_posts(api, token, 5)
        await asyncio.sleep(1.1)
        await create_posts(api, token, 1, prefix="kept")
        await server.purge_expired()
        ws = await WsClient.connect(server.port)
        await ws.send({"op": "subscribe", "channels": ["posts"], "since": 2, "ref": "x"})
        error = await ws.recv()
        assert error["type"] == "error" and error["code"] == "cursor_expired"
        assert error["oldest_seq"] == 6 and error["ref"] == "x"
        # The connection stays usable: resume from what is retained.
        await ws.subscribe(["posts"], since=5)
        [event] = await ws.events(1)
        assert event["seq"] == 6
        ws.close()


@pytest.mark.gen_test
async def test_private_channel_of_another_user_is_forbidden_and_the_connection_stays(api, server):
    alice = await api.user_token("alice")
    bob = await api.register("bob")
    ws = await WsClient.connect(server.port, token=alice)
    await ws.send({"op": "subscribe", "channels": [f"user:{bob['id']}"], "ref": 1})
    error = await ws.recv()
    assert error["type"] == "error" and error["code"] == "forbidden"
    await ws.send({"op": "ping", "ref": 2})
    assert await ws.recv() == {"type": "pong", "ref": 2}
    ws.close()


@pytest.mark.gen_test
async def test_private_channel_needs_authentication(api, server):
    bob = await api.register("bob")
    ws = await WsClient.connect(server.port)
    await ws.send({"op": "subscribe", "channels": [f"user:{bob['id']}"]})
    assert (await ws.recv())["code"] == "unauthorized"
    ws.close()


@pytest.mark.gen_test
async def test_own_private_channel_with_each_way_of_authenticating(api, server):
    alice = await api.register("alice")
    token = (await api.login("alice"))["access_token"]
    channel = f"user:{alice['id']}"
    by_header = await WsClient.connect(server.port, token=token)
    by_query = await WsClient.connect(server.port, query=f"?access_token={token}")
    by_message = await WsClient.connect(server.port)
    await by_message.send({"op": "auth", "token": token, "ref": "a"})
    assert (await by_message.recv())["type"] == "authenticated"
    for ws in (by_header, by_query, by_message):
        await ws.subscribe([channel])
        ws.close()


@pytest.mark.gen_test
async def test_admin_may_read_any_private_channel(api, server):
    admin = await api.admin_token(server)
    bob = await api.register("bob")
    ws = await WsClient.connect(server.port, token=admin)
    await ws.subscribe([f"user:{bob['id']}"])
    ws.close()


@pytest.mark.gen_test
async def test_bad_token_on_the_upgrade_is_401(server):
    request = HTTPRequest(f"ws://127.0.0.1:{server.port}/api/v1/ws",
                          headers={"Authorization": "Bearer nonsense"})
    with pytest.raises(HTTPClientError) as caught:
        await websocket_connect(request)
    assert caught.value.code == 401


@pytest.mark.gen_test
async def test_bad_token_in_the_auth_message_is_an_error_frame(server):
    ws = await WsClient.connect(server.port)
    await ws.send({"op": "auth", "token": "nonsense", "ref": 3})
    error = await ws.recv()
    assert error["code"] == "unauthorized" and error["ref"] == 3
    ws.close()


class TestOrigins:
    @pytest.fixture
    def settings_overrides(self):
        return {"allowed_origins": ["https://app.example.com"]}

    @pytest.mark.gen_test
    async def test_foreign_origin_is_refused_with_403(self, server):
        request = HTTPRequest(f"ws://127.0.0.1:{server.port}/api/v1/ws",
                              headers={"Origin": "https://evil.example.com"})
        with pytest.raises(HTTPClientError) as caught:
            await websocket_connect(request)
        assert caught.value.code == 403
        assert json.loads(caught.value.response.body)["error"]["code"] == "forbidden"

    @pytest.mark.gen_test
    async def test_allowed_origin_and_no_origin_are_accepted(self, server):
        allowed = await WsClient.connect(server.port, headers={"Origin": "https://app.example.com"})
        no_origin = await WsClient.connect(server.port)
        allowed.close()
        no_origin.close()


class TestLimits:
    @pytest.fixture
    def settings_overrides(self):
        return {"ws_max_message_bytes": 1024, "ws_max_subscriptions": 3}

    @pytest.mark.gen_test
    async def test_oversize_frame_closes_with_1009(self, server):
        ws = await WsClient.connect(server.port)
        await ws.conn.write_message("x" * 2048)
        assert await ws.recv() is None
        assert ws.conn.close_code == 1009

    @pytest.mark.gen_test
    async def test_too_many_subscriptions_is_an_error(self, server):
        ws = await WsClient.connect(server.port)
        await ws.subscribe(["posts", "products"])
        ids = ["a" * 24, "b" * 24]
        await ws.send({"op": "subscribe", "channels": [f"post:{i}" for i in ids], "ref": 9})
        error = await ws.recv()
        assert error["code"] == "validation_error" and error["ref"] == 9
        ws.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("message,code", [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    ('{"op": "dance"}', "validation_error"),
    ('{"op": "subscribe", "channels": "posts"}', "validation_error"),
    ('{"op": "subscribe", "channels": ["nope"]}', "validation_error"),
    ('{"op": "subscribe", "channels": ["posts"], "since": -1}', "validation_error"),
    ('{"op": "subscribe", "channels": ["posts"], "since": "1"}', "validation_error"),
    ('{"op": "subscribe", "channels": [{"$ne": null}]}', "validation_error"),
])
async def test_bad_messages_get_an_error_frame_and_the_connection_stays(server, message, code):
    ws = await WsClient.connect(server.port)
    await ws.conn.write_message(message)
    error = await ws.recv()
    assert error["type"] == "error" and error["code"] == code
    await ws.send({"op": "ping"})
    assert (await ws.recv())["type"] == "pong"
    ws.close()


@pytest.mark.gen_test
async def test_binary_frames_get_an_error_frame(server):
    ws = await WsClient.connect(server.port)
    await ws.conn.write_message(b"\x00\x01", binary=True)
    assert (await ws.recv())["code"] == "invalid_json"
    ws.close()


@pytest.mark.gen_test
async def test_unsubscribe_stops_delivery(api, server):
    token = await api.user_token("alice")
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts", "products"])
    await ws.send({"op": "unsubscribe", "channels": ["posts"], "ref": 4})
    assert await ws.recv() == {"type": "unsubscribed", "channels": ["posts"], "ref": 4}
    await create_posts(api, token, 1)
    with pytest.raises(asyncio.TimeoutError):
        await ws.recv(timeout=0.3)
    ws.close()


async def _raw_upgrade(port: int, rcvbuf: int = 4096) -> IOStream:
    """A bare WebSocket client that reads nothing after the handshake and answers no ping."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    stream = IOStream(sock)
    await stream.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.write((f"GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        f"Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = await stream.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    return stream


def _masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


class TestSlowConsumer:
    @pytest.fixture
    def settings_overrides(self):
        return {"ws_max_pending_bytes": 256 * 1024}

    @pytest.mark.gen_test(timeout=120)
    async def test_slow_consumer_is_dropped_while_a_fast_one_keeps_receiving(self, api, server):
        token = await api.user_token("alice")
        slow = await _raw_upgrade(server.port)
        await slow.write(_masked_text_frame('{"op":"subscribe","channels":["posts"]}'))
        fast = await WsClient.connect(server.port)
        await fast.subscribe(["posts"])
        await wait_until(lambda: len(server.ctx.hub.channels.get("posts", ())) == 2)

        big = "x" * 90_000
        total = 120  # about 11 MB: more than the kernel's socket buffers can hide
        loop = asyncio.get_running_loop()
        delays = []
        for index in range(total):
            response = await api.post("/api/v1/posts", {"title": f"big {index}", "content": big},
                                      token=token)
            assert response.code == 201
            sent = loop.time()
            [event] = await fast.events(1)
            delays.append(loop.time() - sent)
            assert event["data"]["title"] == f"big {index}"
        assert server.ctx.connections.slow_consumers_closed == 1
        assert len(server.ctx.hub.channels["posts"]) == 1
        assert max(delays) < 1.0
        slow.close()
        fast.close()


class TestPings:
    @pytest.fixture
    def settings_overrides(self):
        return {"ws_ping_interval": 0.2}

    @pytest.mark.gen_test
    async def test_a_peer_that_does_not_answer_pings_is_closed(self, server):
        silent = await _raw_upgrade(server.port)
        await wait_until(lambda: len(server.ctx.connections.sockets) == 1)
        await wait_until(lambda: len(server.ctx.connections.sockets) == 0, timeout=5)
        silent.close()

    @pytest.mark.gen_test
    async def test_a_peer_that_answers_pings_stays(self, server):
        ws = await WsClient.connect(server.port)
        await asyncio.sleep(1.0)
        await ws.send({"op": "ping", "ref": 1})
        assert (await ws.recv())["type"] == "pong"
        ws.close()


async def _server_frames(stream: IOStream, answer_pings: bool, until: float):
    """(time, opcode) of each frame the server sends until `until` (loop time) or the end of
    the connection, which is the last item: (time, None)."""
    loop = asyncio.get_running_loop()
    frames = []
    while True:
        try:
            head = await asyncio.wait_for(stream.read_bytes(2), max(0.01, until - loop.time()))
        except asyncio.TimeoutError:
            return frames
        except StreamClosedError:
            frames.append((loop.time(), None))
            return frames
        opcode, length = head[0] & 0x0F, head[1] & 0x7F
        payload = await stream.read_bytes(length) if length else b""
        frames.append((loop.time(), opcode))
        if opcode == 0x9 and answer_pings:
            mask = os.urandom(4)
            await stream.write(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + mask
                               + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


class TestPingInterval:
    """WS_PING_INTERVAL holds for one socket as for thousands: the round of pings is spread over
    the interval, and a socket alone is not pinged at every tick of it."""

    INTERVAL = 2.0

    @pytest.fixture
    def settings_overrides(self):
        return {"ws_ping_interval": self.INTERVAL}

    @pytest.mark.gen_test(timeout=30)
    async def test_a_silent_peer_gets_its_first_ping_after_an_interval_and_is_dropped_after_two(
            self, server):
        loop = asyncio.get_running_loop()
        opened = loop.time()
        silent = await _raw_upgrade(server.port)
        frames = await _server_frames(silent, answer_pings=False,
                                      until=opened + 5 * self.INTERVAL)
        silent.close()
        pings = [at - opened for at, opcode in frames if opcode == 0x9]
        assert frames and frames[-1][1] is None, "the silent peer was never dropped"
        dropped = frames[-1][0] - opened
        assert len(pings) == 1, pings
        assert pings[0] >= 0.9 * self.INTERVAL, pings
        assert dropped >= 1.8 * self.INTERVAL, dropped
        assert dropped - pings[0] >= 0.9 * self.INTERVAL, (pings, dropped)

    @pytest.mark.gen_test(timeout=30)
    async def test_a_peer_that_answers_is_pinged_once_per_interval_and_stays(self, server):
        loop = asyncio.get_running_loop()
        peer = await _raw_upgrade(server.port)
        opened = loop.time()
        frames = await _server_frames(peer, answer_pings=True, until=opened + 4.5 * self.INTERVAL)
        pings = [at for at, opcode in frames if opcode == 0x9]
        assert None not in [opcode for _, opcode in frames], "the answering peer was dropped"
        assert 2 <= len(pings) <= 5, len(pings)
        gaps = [later - earlier for earlier, later in zip(pings, pings[1:])]
        assert min(gaps) >= 0.9 * self.INTERVAL, gaps
        assert len(server.ctx.connections.sockets) == 1
        peer.close()


@pytest.mark.gen_test
async def test_a_fan_out_shared_over_several_turns_keeps_every_subscriber_in_order(
        server, monkeypatch):
    """Events hand out a few subscribers per turn of the loop; a subscriber not reached yet
    gets the later events in the same turn, in order."""
    hand_out_per_turn(monkeypatch, 2)
    clients = [await WsClient.connect(server.port) for _ in range(5)]
    for ws in clients:
        await ws.subscribe(["posts"])
    hub = server.ctx.hub
    first = hub.last_seq + 1
    for n in range(3):  # three events in one turn, as Redis can bring them
        hub.on_event({"seq": first + n, "channel": "posts", "type": "test.event", "data": {"n": n},
                      "created_at": "2026-01-01T00:00:00Z"})
    assert len(hub._turns) == 5  # shared out over later turns
    for ws in clients:
        assert [event["data"]["n"] for event in await ws.events(3)] == [0, 1, 2]
        ws.close()
