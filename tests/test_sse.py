"""Server-Sent Events `GET /api/v1/stream`, as the contract's "Realtime" / "Server-Sent Events"
section has it: a real socket, reading the stream as a browser's EventSource would."""

import asyncio
import json

import pytest
from tornado.httputil import HTTPHeaders
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from tests.conftest import JWT_SECRET
from tests.realtime_helpers import (create_posts, expire_events, hand_out_per_turn, publish,
                                    user_with_id)
from tornado_app.core.clock import utcnow
from tornado_app.realtime import connections
from tornado_app.runtime.server import Server

STREAM = "/api/v1/stream"


class SseClient:
    """An HTTP/1.1 client on a raw IOStream: status and headers, then the event stream, parsed
    into {"id", "event", "data"} messages by a background reader (chunked encoding undone)."""

    def __init__(self, stream, code: int, headers: HTTPHeaders, body: bytes = b""):
        self.stream = stream
        self.code = code
        self.headers = headers
        self.body = body
        self.json = None
        self.messages: asyncio.Queue = asyncio.Queue()
        self.comments: list[str] = []
        self.position = None
        self._reader = None

    @classmethod
    async def open(cls, port: int, query: str, token: str | None = None,
                   headers: dict | None = None) -> "SseClient":
        stream = await TCPClient().connect("127.0.0.1", port)
        lines = [f"GET {STREAM}{query} HTTP/1.1", f"Host: 127.0.0.1:{port}",
                 "Accept: text/event-stream"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        await stream.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)
        status_line, _, rest = head.decode("latin-1").partition("\r\n")
        client = cls(stream, int(status_line.split()[1]), HTTPHeaders.parse(rest))
        if client.code != 200:
            length = int(client.headers.get("Content-Length", "0"))
            client.body = await asyncio.wait_for(stream.read_bytes(length), 5) if length else b""
            client.json = json.loads(client.body) if client.body else None
            stream.close()
        else:
            client._reader = asyncio.ensure_future(client._read())
        return client

    async def _chunks(self):
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        while True:
            if not chunked:
                yield await self.stream.read_bytes(65536, partial=True)
                continue
            size = int((await self.stream.read_until(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                return
            data = await self.stream.read_bytes(size + 2)
            yield data[:-2]

    async def _read(self) -> None:
        buffer = b""
        try:
            async for chunk in self._chunks():
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self._parse(block.decode("utf-8"))
        except StreamClosedError:
            pass
        finally:
            self.messages.put_nowait(None)

    def _parse(self, block: str) -> None:
        message = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data" and "data" in message:
                message["data"] += "\n" + value
            else:
                message[name] = value
        if message.get("event") == "epoch":
            # The stream's position comes first, as a named message without an id; an
            # EventSource hands it to an "epoch" listener, never to onmessage.
            self.position = json.loads(message["data"])
        elif message:
            self.messages.put_nowait(message)

    async def next(self, timeout: float = 5.0) -> dict:
        message = await asyncio.wait_for(self.messages.get(), timeout)
        assert message is not None, "the stream ended"
        return message

    async def events(self, count: int, timeout: float = 5.0) -> list[dict]:
        """The next `count` events, each as the event JSON with its SSE id and event name."""
        out = []
        while len(out) < count:
            message = await self.next(timeout)
            event = json.loads(message["data"])
            assert message["id"] == str(event["seq"]), message
            assert message["event"] == event["type"], message
            out.append(event)
        return out

    async def nothing_within(self, seconds: float) -> bool:
        try:
            message = await asyncio.wait_for(self.messages.get(), seconds)
        except asyncio.TimeoutError:
            return True
        self.messages.put_nowait(message)
        return False

    async def close(self) -> None:
        self.stream.close()
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)


@pytest.fixture
def sse(server):
    """Opens SSE streams on the test server and closes whatever is still open at the end."""
    opened = []

    async def open_stream(query: str = "?channels=posts", **kw) -> SseClient:
        client = await SseClient.open(server.port, query, **kw)
        opened.append(client)
        return client

    yield open_stream
    for client in opened:
        client.stream.close()


@pytest.fixture
def restarted(io_loop, server, settings, mongodb_uri):
    """Starts another Server on the same database: a restart, or another worker, whose hub has
    nothing in memory yet, so replays come from the event log."""
    started = []

    async def start() -> Server:
        srv = Server(settings, mongodb_uri, JWT_SECRET)
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        io_loop.run_sync(srv.stop)


async def store_events(server, count: int, channel: str = "posts") -> None:
    """Events already in the log (stored before a restart), in the log's own shape."""
    now = utcnow()
    await server.ctx.db["events"].insert_many([
        {"_id": seq, "channel": channel, "type": "test.event", "data": {"n": seq},
         "created_at": now} for seq in range(1, count + 1)])


def assert_stream_error(client: SseClient, status: int, code: str) -> None:
    assert client.code == status, (client.code, client.body)
    assert client.headers["Content-Type"].startswith("application/json")
    assert set(client.json) == {"error"}, client.json
    assert client.json["error"]["code"] == code, client.json
    assert isinstance(client.json["error"]["message"], str)


async def wait_until_streaming(server, count: int = 1) -> None:
    for _ in range(200):
        if len(server.ctx.connections.streams) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the stream was never registered")


@pytest.mark.gen_test
async def test_stream_is_text_event_stream(sse):
    client = await sse("?channels=posts")
    assert client.code == 200
    assert client.headers["Content-Type"].split(";")[0].strip() == "text/event-stream"


@pytest.mark.gen_test
async def test_live_event_arrives_with_id_event_and_data(api, server, sse):
    token = await api.user_token("alice")
    client = await sse("?channels=posts")
    await create_posts(api, token, 1, prefix="live")
    message = await client.next()
    assert set(message) == {"id", "event", "data"}
    event = json.loads(message["data"])
    assert set(event) == {"seq", "channel", "type", "data", "created_at"}
    assert message["id"] == str(event["seq"])
    assert message["event"] == "post.created" == event["type"]
    assert event["channel"] == "posts"
    assert event["data"]["title"] == "live 0"


@pytest.mark.gen_test
async def test_stream_without_since_sends_nothing_old(server, sse):
    await publish(server, "posts", 3)
    client = await sse("?channels=posts")
    await publish(server, "posts", 1)
    (event,) = await client.events(1)
    assert event["seq"] == 4


@pytest.mark.gen_test
async def test_stream_sends_only_events_of_its_channels(server, sse):
    client = await sse("?channels=products")
    await publish(server, "posts", 2)
    await publish(server, "products", 1)
    (event,) = await client.events(1)
    assert (event["seq"], event["channel"]) == (3, "products")
    assert await client.nothing_within(0.2)


@pytest.mark.gen_test
async def test_stream_resumes_from_last_event_id_then_goes_live(server, sse):
    await publish(server, "posts", 5)
    client = await sse("?channels=posts", headers={"Last-Event-ID": "2"})
    replayed = await client.events(3)
    assert [e["seq"] for e in replayed] == [3, 4, 5]
    await publish(server, "posts", 2)
    live = await client.events(2)
    assert [e["seq"] for e in live] == [6, 7]
    assert await client.nothing_within(0.2)


@pytest.mark.gen_test
async def test_stream_resumes_from_since_then_goes_live(server, sse):
    await publish(server, "posts", 5)
    client = await sse("?channels=posts&since=3")
    assert [e["seq"] for e in await client.events(2)] == [4, 5]
    await publish(server, "posts", 1)
    assert [e["seq"] for e in await client.events(1)] == [6]
    assert await client.nothing_within(0.2)


@pytest.mark.gen_test
async def test_stream_resume_has_no_gap_and_no_duplicate_while_events_keep_coming(server, sse):
    await publish(server, "posts", 100)

    async def keep_publishing():
        for index in range(40):
            await server.ctx.events.publish("posts", "test.event", {"n": 100 + index})

    publisher = asyncio.ensure_future(keep_publishing())
    client = await sse("?channels=posts", headers={"Last-Event-ID": "10"})
    events = await client.events(130)
    await publisher
    assert [e["seq"] for e in events] == list(range(11, 141))
    assert await client.nothing_within(0.2)


@pytest.mark.gen_test
async def test_last_event_id_is_taken_over_since(server, sse):
    await publish(server, "posts", 5)
    client = await sse("?channels=posts&since=1", headers={"Last-Event-ID": "3"})
    assert [e["seq"] for e in await client.events(2)] == [4, 5]
    assert await client.nothing_within(0.2)


@pytest.mark.gen_test
async def test_stream_cursor_older_than_retention_is_410_before_streaming(server, sse):
    await publish(server, "posts", 10)
    await expire_events(server, up_to=5)
    client = await sse("?channels=posts&since=0")
    assert_stream_error(client, 410, "cursor_expired")
    assert "6" in str(client.json["error"])


@pytest.mark.gen_test
async def test_stream_last_event_id_older_than_retention_is_410(server, sse):
    await publish(server, "posts", 10)
    await expire_events(server, up_to=5)
    client = await sse("?channels=posts", headers={"Last-Event-ID": "2"})
    assert_stream_error(client, 410, "cursor_expired")


@pytest.mark.gen_test
async def test_stream_since_just_before_the_oldest_retained_still_works(server, sse):
    await publish(server, "posts", 10)
    await expire_events(server, up_to=5)
    client = await sse("?channels=posts&since=5")
    assert client.code == 200
    assert [e["seq"] for e in await client.events(5)] == [6, 7, 8, 9, 10]


@pytest.mark.gen_test
@pytest.mark.parametrize("query", [
    "",
    "?channels=",
    "?channels=nope",
    "?channels=posts,user:123",
    "?channels=posts&since=-1",
    "?channels=posts&since=abc",
])
async def test_stream_invalid_query_is_422(sse, query):
    client = await sse(query)
    assert_stream_error(client, 422, "validation_error")


@pytest.mark.gen_test
async def test_stream_invalid_last_event_id_is_422(sse):
    client = await sse("?channels=posts", headers={"Last-Event-ID": "abc"})
    assert_stream_error(client, 422, "validation_error")


@pytest.mark.gen_test
async def test_stream_private_channel_needs_a_token(api, sse):
    user_id, _ = await user_with_id(api, "alice")
    client = await sse(f"?channels=user:{user_id}")
    assert_stream_error(client, 401, "unauthorized")
    assert client.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
async def test_stream_private_channel_of_another_user_is_403(api, sse):
    alice_id, _ = await user_with_id(api, "alice")
    _, bob_token = await user_with_id(api, "bob")
    client = await sse(f"?channels=posts,user:{alice_id}", token=bob_token)
    assert_stream_error(client, 403, "forbidden")


@pytest.mark.gen_test
async def test_stream_private_channel_is_allowed_for_its_owner(api, server, sse):
    alice_id, alice_token = await user_with_id(api, "alice")
    client = await sse(f"?channels=user:{alice_id}", token=alice_token)
    assert client.code == 200
    await publish(server, f"user:{alice_id}", 1, "notification")
    (event,) = await client.events(1)
    assert (event["channel"], event["type"]) == (f"user:{alice_id}", "notification")


@pytest.mark.gen_test
async def test_stream_private_channel_is_allowed_for_an_admin(api, server, sse):
    alice_id, _ = await user_with_id(api, "alice")
    admin_token = await api.admin_token(server)
    client = await sse(f"?channels=user:{alice_id}", token=admin_token)
    assert client.code == 200
    await publish(server, f"user:{alice_id}", 1, "notification")
    (event,) = await client.events(1)
    assert event["channel"] == f"user:{alice_id}"


@pytest.fixture
def fast_keepalive(monkeypatch):
    """The keep-alive comment every 0.1 s instead of 15 s; listed before `sse` so the server
    starts with it."""
    monkeypatch.setattr(connections, "SSE_KEEPALIVE_SECONDS", 0.1)


@pytest.mark.gen_test
async def test_stream_sends_comment_lines_to_keep_proxies_from_closing_it(fast_keepalive, sse):
    client = await sse("?channels=posts")
    await asyncio.sleep(0.35)
    assert client.comments.count("keep-alive") >= 2, client.comments
    assert await client.nothing_within(0.01)


@pytest.mark.gen_test
async def test_stream_whose_client_goes_away_is_released(server, sse):
    client = await sse("?channels=posts")
    await wait_until_streaming(server)
    await client.close()
    for _ in range(200):
        if not server.ctx.connections.streams:
            break
        await asyncio.sleep(0.01)
    assert not server.ctx.connections.streams
    assert "posts" not in server.ctx.hub.channels


@pytest.mark.gen_test
async def test_stream_resume_from_the_log_has_no_gap_and_no_duplicate(server, sse, restarted):
    await store_events(server, 1200)  # more than one replay page
    fresh = await restarted()

    async def keep_publishing():
        for index in range(30):
            await fresh.ctx.events.publish("posts", "test.event", {"n": 1201 + index})

    publisher = asyncio.ensure_future(keep_publishing())
    client = await SseClient.open(fresh.port, "?channels=posts&since=10")
    try:
        events = await client.events(1220)
        await publisher
        assert [e["seq"] for e in events] == list(range(11, 1231))
        assert await client.nothing_within(0.2)
    finally:
        await client.close()


@pytest.mark.gen_test
async def test_a_burst_arrives_in_order_each_once(server, sse, monkeypatch):
    """Events handed over together go out in one write, each its own SSE message."""
    hand_out_per_turn(monkeypatch, 1)
    clients = [await sse("?channels=posts") for _ in range(2)]
    await wait_until_streaming(server, 2)
    hub = server.ctx.hub
    first = hub.last_seq + 1
    handed = hub.handed
    for seq in range(first, first + 10):
        hub.on_event({"seq": seq, "channel": "posts", "type": "test.event", "data": {"n": seq},
                      "created_at": "2026-01-01T00:00:00Z"})
    for client in clients:
        events = await client.events(10)
        assert [e["seq"] for e in events] == list(range(first, first + 10))
    assert hub.handed - handed == 3  # [1] then [2..10] to one, [1..10] to the other
    for client in clients:
        assert await client.nothing_within(0.3)
