"""Long-poll `GET /api/v1/poll`, as the contract's "Realtime" / "Long-poll" section has it."""

import asyncio
import json
import logging
import time
from email.utils import parsedate_to_datetime

import pytest
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from tests.conftest import JWT_SECRET, Api, assert_error
from tests.realtime_helpers import create_posts, expire_events, publish, user_with_id
from tornado_app.core.clock import utcnow
from tornado_app.runtime.server import Server

POLL = "/api/v1/poll"
EVENT_FIELDS = {"seq", "channel", "type", "data", "created_at"}


def without_epoch(answer: dict) -> dict:
    """A poll answer without its epoch (tests/test_continuity.py checks that one)."""
    assert isinstance(answer.pop("epoch"), str)
    return answer


async def store_events(server, count: int, channel: str = "posts") -> None:
    """Events already in the log (stored before a restart), in the log's own shape."""
    now = utcnow()
    await server.ctx.db["events"].insert_many([
        {"_id": seq, "channel": channel, "type": "test.event", "data": {"n": seq},
         "created_at": now} for seq in range(1, count + 1)])


@pytest.fixture
def restarted(io_loop, server, settings, mongodb_uri):
    """Starts another Server on the same database: a restart, or another worker, whose hub has
    nothing in memory yet, so replays come from the event log."""
    started = []

    async def start() -> tuple[Server, Api]:
        srv = Server(settings, mongodb_uri, JWT_SECRET)
        await srv.start()
        client = Api(f"http://127.0.0.1:{srv.port}")
        started.append((srv, client))
        return srv, client

    yield start
    for srv, client in started:
        client.close()
        io_loop.run_sync(srv.stop)


async def wait_until_pending(server, count: int = 1) -> None:
    """Until `count` long-polls are held by the server, so what follows happens while they wait."""
    for _ in range(200):
        if len(server.ctx.connections.polls) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the long-poll was never held")


async def poll(api, query: str, **kw):
    return await api.get(f"{POLL}?{query}", **kw)


@pytest.mark.gen_test
async def test_poll_answers_at_once_with_the_events_after_since(api, server):
    token = await api.user_token("alice")
    await create_posts(api, token, 3)
    started = time.monotonic()
    response = await poll(api, "channels=posts&since=1&timeout=5")
    assert time.monotonic() - started < 1.0
    assert response.code == 200, response.body
    events = response.json["events"]
    assert [e["seq"] for e in events] == [2, 3]
    assert response.json["cursor"] == 3
    assert set(response.json) == {"events", "cursor", "epoch"}


@pytest.mark.gen_test
async def test_poll_events_have_the_contract_shape(api, server):
    token = await api.user_token("alice")
    await create_posts(api, token, 1)
    response = await poll(api, "channels=posts&since=0&timeout=5")
    (event,) = response.json["events"]
    assert set(event) == EVENT_FIELDS
    assert event["channel"] == "posts"
    assert event["type"] == "post.created"
    assert event["data"]["title"] == "post 0"
    assert event["created_at"].endswith("Z")


@pytest.mark.gen_test
async def test_poll_without_since_sends_nothing_old_and_waits(api, server):
    token = await api.user_token("alice")
    await create_posts(api, token, 2)
    started = time.monotonic()
    response = await poll(api, "channels=posts&timeout=0.5")
    assert time.monotonic() - started >= 0.4
    assert response.code == 200, response.body
    assert without_epoch(response.json) == {"events": [], "cursor": 2}


@pytest.mark.gen_test
async def test_held_poll_is_answered_as_soon_as_an_event_arrives(api, server):
    token = await api.user_token("alice")
    started = time.monotonic()
    pending = asyncio.ensure_future(poll(api, "channels=posts&timeout=10"))
    await wait_until_pending(server)
    await create_posts(api, token, 1, prefix="live")
    response = await pending
    assert time.monotonic() - started < 2.0
    assert response.code == 200, response.body
    (event,) = response.json["events"]
    assert event["type"] == "post.created"
    assert event["data"]["title"] == "live 0"
    assert response.json["cursor"] == event["seq"]


@pytest.mark.gen_test
async def test_held_poll_with_since_is_answered_by_a_new_event(api, server):
    await publish(server, "posts", 2)
    pending = asyncio.ensure_future(poll(api, "channels=posts&since=2&timeout=10"))
    await wait_until_pending(server)
    await publish(server, "posts", 1)
    response = await pending
    assert [e["seq"] for e in response.json["events"]] == [3]
    assert response.json["cursor"] == 3


@pytest.mark.gen_test
async def test_held_poll_is_not_answered_by_events_on_other_channels(api, server):
    started = time.monotonic()
    pending = asyncio.ensure_future(poll(api, "channels=products&since=0&timeout=0.5"))
    await wait_until_pending(server)
    await publish(server, "posts", 3)
    response = await pending
    assert time.monotonic() - started >= 0.4
    assert response.code == 200, response.body
    assert without_epoch(response.json) == {"events": [], "cursor": 0}


@pytest.mark.gen_test
async def test_poll_on_several_channels_gets_events_of_each(api, server):
    await publish(server, "posts", 1)
    await publish(server, "products", 1)
    await publish(server, "posts", 1)
    response = await poll(api, "channels=products,posts&since=0&timeout=5")
    assert [(e["seq"], e["channel"]) for e in response.json["events"]] == [
        (1, "posts"), (2, "products"), (3, "posts")]


@pytest.mark.gen_test
async def test_poll_timeout_answers_no_events_and_the_same_cursor(api, server):
    await publish(server, "posts", 4)
    started = time.monotonic()
    response = await poll(api, "channels=posts&since=4&timeout=0.5")
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 1.5
    assert response.code == 200, response.body
    assert without_epoch(response.json) == {"events": [], "cursor": 4}


@pytest.mark.gen_test
async def test_poll_answers_at_most_100_events_and_the_cursor_continues_exactly(api, server):
    await publish(server, "posts", 150)
    first = await poll(api, "channels=posts&since=0&timeout=5")
    assert [e["seq"] for e in first.json["events"]] == list(range(1, 101))
    assert first.json["cursor"] == 100
    second = await poll(api, f"channels=posts&since={first.json['cursor']}&timeout=5")
    assert [e["seq"] for e in second.json["events"]] == list(range(101, 151))
    assert second.json["cursor"] == 150
    received = first.json["events"] + second.json["events"]
    assert [e["data"]["n"] for e in received] == list(range(150))


@pytest.mark.gen_test
async def test_poll_cursor_is_the_last_event_sent_when_other_channels_interleave(api, server):
    for _ in range(120):
        await publish(server, "posts", 1)
        await publish(server, "products", 1)
    first = await poll(api, "channels=posts&since=0&timeout=5")
    seqs = [e["seq"] for e in first.json["events"]]
    assert seqs == list(range(1, 201, 2))
    assert first.json["cursor"] == 199
    second = await poll(api, "channels=posts&since=199&timeout=5")
    assert [e["seq"] for e in second.json["events"]] == list(range(201, 241, 2))
    assert second.json["cursor"] == 239


@pytest.mark.gen_test
async def test_poll_since_older_than_retention_is_410_cursor_expired(api, server):
    await publish(server, "posts", 10)
    await expire_events(server, up_to=5)
    response = await poll(api, "channels=posts&since=0&timeout=0.5")
    assert_error(response, 410, "cursor_expired")
    error = response.json["error"]
    assert "6" in error["message"] or "6" in str(error.get("details")), error


@pytest.mark.gen_test
async def test_poll_since_just_before_the_oldest_retained_still_works(api, server):
    await publish(server, "posts", 10)
    await expire_events(server, up_to=5)
    response = await poll(api, "channels=posts&since=5&timeout=5")
    assert response.code == 200, response.body
    assert [e["seq"] for e in response.json["events"]] == [6, 7, 8, 9, 10]
    assert response.json["cursor"] == 10


@pytest.mark.gen_test
@pytest.mark.parametrize("query", [
    "since=0&timeout=0.5",                      # channels missing
    "channels=&timeout=0.5",                    # channels empty
    "channels=nope&timeout=0.5",                # unknown channel
    "channels=posts,nope&timeout=0.5",          # one unknown among known
    "channels=post:123&timeout=0.5",            # malformed id in a channel
    "channels=posts&since=-1&timeout=0.5",
    "channels=posts&since=abc&timeout=0.5",
    "channels=posts&timeout=61",
    "channels=posts&timeout=-1",
    "channels=posts&timeout=abc",
])
async def test_poll_invalid_query_is_422(api, query):
    response = await poll(api, query)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"], response.json


@pytest.mark.gen_test
async def test_poll_timeout_of_60_is_allowed(api, server):
    await publish(server, "posts", 1)
    response = await poll(api, "channels=posts&since=0&timeout=60")
    assert response.code == 200, response.body
    assert [e["seq"] for e in response.json["events"]] == [1]


@pytest.mark.gen_test
async def test_poll_private_channel_needs_a_token(api):
    user_id, _ = await user_with_id(api, "alice")
    response = await poll(api, f"channels=user:{user_id}&timeout=0.5")
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
async def test_poll_private_channel_with_a_bad_token_is_401(api):
    user_id, _ = await user_with_id(api, "alice")
    response = await poll(api, f"channels=user:{user_id}&timeout=0.5", token="not-a-token")
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
async def test_poll_private_channel_of_another_user_is_403(api):
    alice_id, _ = await user_with_id(api, "alice")
    _, bob_token = await user_with_id(api, "bob")
    response = await poll(api, f"channels=posts,user:{alice_id}&timeout=0.5", token=bob_token)
    assert_error(response, 403, "forbidden")


@pytest.mark.gen_test
async def test_poll_private_channel_is_allowed_for_its_owner(api, server):
    alice_id, alice_token = await user_with_id(api, "alice")
    await publish(server, f"user:{alice_id}", 1, "notification")
    response = await poll(api, f"channels=user:{alice_id}&since=0&timeout=0.5", token=alice_token)
    assert response.code == 200, response.body
    assert [e["channel"] for e in response.json["events"]] == [f"user:{alice_id}"]


@pytest.mark.gen_test
async def test_poll_private_channel_is_allowed_for_an_admin(api, server):
    alice_id, _ = await user_with_id(api, "alice")
    admin_token = await api.admin_token(server)
    await publish(server, f"user:{alice_id}", 1, "notification")
    response = await poll(api, f"channels=user:{alice_id}&since=0&timeout=0.5", token=admin_token)
    assert response.code == 200, response.body
    assert [e["channel"] for e in response.json["events"]] == [f"user:{alice_id}"]


@pytest.mark.gen_test
async def test_poll_whose_client_goes_away_is_released(api, server):
    stream = await TCPClient().connect("127.0.0.1", server.port)
    await stream.write(b"GET /api/v1/poll?channels=posts&timeout=30 HTTP/1.1\r\n"
                       b"Host: 127.0.0.1\r\n\r\n")
    await wait_until_pending(server)
    stream.close()
    hung_up = time.monotonic()
    for _ in range(200):
        if not server.ctx.connections.polls:
            break
        await asyncio.sleep(0.01)
    assert not server.ctx.connections.polls
    assert time.monotonic() - hung_up < 0.5
    assert "posts" not in server.ctx.hub.channels
    assert server.ctx.parked_polls.sockets_held == 0


@pytest.mark.gen_test
async def test_poll_whose_replay_fails_leaves_no_subscription_behind(api, server, monkeypatch):
    await publish(server, "posts", 2)

    async def unreadable_log(*args, **kwargs):
        raise RuntimeError("the log cannot be read")

    monkeypatch.setattr(server.ctx.hub, "replay", unreadable_log)
    response = await poll(api, "channels=posts&since=0&timeout=5")
    assert_error(response, 500, "internal_error")
    assert "posts" not in server.ctx.hub.channels


@pytest.mark.gen_test
async def test_an_event_published_while_the_poll_reads_the_log_follows_the_replayed_ones(
        api, server, monkeypatch):
    old = await publish(server, "posts", 2)
    replay = server.ctx.hub.replay
    published = []

    async def replay_then_publish(*args, **kwargs):
        records = await replay(*args, **kwargs)
        if not published:  # the log has been read: this event is past the replay's end
            published.extend(await publish(server, "posts", 1))
        return records

    monkeypatch.setattr(server.ctx.hub, "replay", replay_then_publish)
    response = await poll(api, "channels=posts&since=0&timeout=5")
    assert response.code == 200
    answer = json.loads(response.body)
    seqs = [event["seq"] for event in old + published]
    assert [event["seq"] for event in answer["events"]] == seqs
    assert answer["cursor"] == seqs[-1]


@pytest.mark.gen_test
async def test_poll_since_older_than_retention_is_410_after_a_restart(server, restarted):
    await store_events(server, 10)
    await server.ctx.db["events"].delete_many({"_id": {"$lte": 5}})
    _, other = await restarted()
    response = await poll(other, "channels=posts&since=0&timeout=0.5")
    assert_error(response, 410, "cursor_expired")
    assert "6" in str(response.json["error"])


@pytest.mark.gen_test
async def test_poll_pages_through_the_log_after_a_restart_exactly(server, restarted):
    await store_events(server, 250)
    _, other = await restarted()
    seqs, cursor = [], 0
    for _ in range(3):
        response = await poll(other, f"channels=posts&since={cursor}&timeout=5")
        assert response.code == 200, response.body
        assert len(response.json["events"]) <= 100
        seqs += [e["seq"] for e in response.json["events"]]
        cursor = response.json["cursor"]
    assert seqs == list(range(1, 251))
    assert cursor == 250


# --- waiting polls on raw connections: what goes over the wire ----------------------------------

async def connect(server):
    return await TCPClient().connect("127.0.0.1", server.port)


def poll_request(query: str, *headers: bytes, version: bytes = b"HTTP/1.1") -> bytes:
    start = b"GET %s?%s %s" % (POLL.encode(), query.encode(), version)
    return b"\r\n".join([start, b"Host: 127.0.0.1", *headers, b"", b""])


async def read_answer(stream, timeout: float = 5.0):
    """(status line, [(name, value)] in the order sent, body) of one response."""
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), timeout)
    status, *lines = head[:-4].decode("latin1").split("\r\n")
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
    length = int(dict((name.lower(), value) for name, value in headers)["content-length"])
    return status, headers, await asyncio.wait_for(stream.read_bytes(length), timeout)


async def closed_by_server(stream, timeout: float = 5.0) -> bytes:
    """Whatever the server sends until it closes the connection."""
    try:
        return await asyncio.wait_for(stream.read_until_close(), timeout)
    except StreamClosedError:
        return b""


@pytest.mark.gen_test
async def test_a_keep_alive_client_polls_twice_in_a_row_on_one_connection(server):
    stream = await connect(server)
    cursor = 0
    for expected_seq in (1, 2):
        await stream.write(poll_request(f"channels=posts&since={cursor}&timeout=10"))
        await wait_until_pending(server)
        await publish(server, "posts", 1)
        status, _, body = await read_answer(stream)
        assert status == "HTTP/1.1 200 OK"
        answer = json.loads(body)
        assert [e["seq"] for e in answer["events"]] == [expected_seq]
        cursor = answer["cursor"]
    assert cursor == 2
    assert not stream.closed()
    stream.close()


class TestParkedAnswerHeaders:
    @pytest.fixture
    def settings_overrides(self):
        return {"allowed_origins": ["https://app.example.com"]}

    @pytest.mark.gen_test
    async def test_a_parked_answer_carries_the_headers_of_an_immediate_one(self, server):
        sent = (b"X-Request-ID: client-id.42", b"Origin: https://app.example.com")
        await publish(server, "posts", 1)
        stream = await connect(server)
        await stream.write(poll_request("channels=posts&since=0&timeout=10", *sent))
        _, immediate, _ = await read_answer(stream)
        await stream.write(poll_request("channels=posts&since=1&timeout=10", *sent))
        await wait_until_pending(server)
        await publish(server, "posts", 1)
        status, parked, body = await read_answer(stream)
        stream.close()

        def fixed(headers):
            return [(name, value) for name, value in headers if name not in ("Date", "Content-Length")]

        assert status == "HTTP/1.1 200 OK"
        assert fixed(parked) == fixed(immediate)
        values = dict(parked)
        assert values["X-Request-Id"] == "client-id.42"
        assert values["Content-Type"] == "application/json; charset=utf-8"
        assert values["Cache-Control"] == "no-store"
        assert values["X-Content-Type-Options"] == "nosniff"
        assert values["X-Frame-Options"] == "DENY"
        assert values["Referrer-Policy"] == "no-referrer"
        assert values["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
        assert values["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert values["Vary"] == "Origin"
        assert int(values["Content-Length"]) == len(body)
        assert parsedate_to_datetime(values["Date"]).tzname() == "UTC"
        assert [e["seq"] for e in json.loads(body)["events"]] == [2]


@pytest.mark.gen_test
@pytest.mark.parametrize("version, headers, says", [
    (b"HTTP/1.0", (), None),
    (b"HTTP/1.1", (b"Connection: close",), "close"),
], ids=["http-1.0", "connection-close"])
async def test_a_parked_poll_that_may_not_keep_its_connection_is_closed_after_the_answer(
        server, version, headers, says):
    stream = await connect(server)
    await stream.write(poll_request("channels=posts&since=0&timeout=10", *headers, version=version))
    await wait_until_pending(server)
    await publish(server, "posts", 1)
    status, sent, body = await read_answer(stream)
    assert status == "HTTP/1.1 200 OK"
    assert dict(sent).get("Connection") == says
    assert [e["seq"] for e in json.loads(body)["events"]] == [1]
    assert await closed_by_server(stream) == b""
    assert server.ctx.parked_polls.sockets_held == 0


@pytest.mark.gen_test
async def test_a_parked_http_1_0_keep_alive_poll_keeps_its_connection(server):
    stream = await connect(server)
    await stream.write(poll_request("channels=posts&since=0&timeout=10", b"Connection: keep-alive",
                                    version=b"HTTP/1.0"))
    await wait_until_pending(server)
    await publish(server, "posts", 1)
    _, sent, _ = await read_answer(stream)
    assert dict(sent)["Connection"] == "Keep-Alive"
    await stream.write(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, _, body = await read_answer(stream)
    assert status == "HTTP/1.1 200 OK" and json.loads(body) == {"status": "ok"}
    stream.close()


@pytest.mark.gen_test
@pytest.mark.parametrize("together", [True, False], ids=["sent-with-the-poll", "sent-while-parked"])
async def test_a_request_pipelined_behind_a_parked_poll_is_answered_after_it(server, together):
    first = poll_request("channels=posts&since=0&timeout=10")
    second = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: second\r\n\r\n"
    stream = await connect(server)
    await stream.write(first + second if together else first)
    await wait_until_pending(server)
    if not together:
        await stream.write(second)
        await asyncio.sleep(0.2)
        assert len(server.ctx.connections.polls) == 1  # still waiting for its event
    await publish(server, "posts", 1)
    _, _, body = await read_answer(stream)
    assert [e["seq"] for e in json.loads(body)["events"]] == [1]
    status, headers, body = await read_answer(stream)
    assert status == "HTTP/1.1 200 OK"
    assert dict(headers)["X-Request-Id"] == "second"
    assert json.loads(body) == {"status": "ok"}
    stream.close()


@pytest.mark.gen_test
async def test_parked_polls_time_out_each_at_its_own_deadline(api, server):
    started = time.monotonic()
    longer = asyncio.ensure_future(poll(api, "channels=posts&timeout=2.5"))
    await wait_until_pending(server)
    shorter = asyncio.ensure_future(poll(api, "channels=posts&timeout=0.5"))
    response = await shorter
    assert 0.4 <= time.monotonic() - started < 1.5
    assert without_epoch(response.json) == {"events": [], "cursor": 0}
    assert not longer.done()
    response = await longer
    assert 2.4 <= time.monotonic() - started < 3.5
    assert without_epoch(response.json) == {"events": [], "cursor": 0}


@pytest.mark.gen_test
async def test_a_parked_answer_is_logged_and_counted_like_any_request(api, server, caplog):
    caplog.set_level(logging.INFO, logger="tornado_app.access")
    registry = server.ctx.metrics.registry
    labels = {"route": "realtime.poll", "method": "GET", "status": "200"}
    before = registry.get_sample_value("tornado_app_http_requests_total", labels) or 0
    pending = asyncio.ensure_future(poll(api, "channels=posts&timeout=10",
                                         headers={"X-Request-ID": "parked-1"}))
    await wait_until_pending(server)
    await asyncio.sleep(0.2)
    await publish(server, "posts", 1)
    assert (await pending).code == 200
    assert registry.get_sample_value("tornado_app_http_requests_total", labels) == before + 1
    (line,) = [r for r in caplog.records
               if r.name == "tornado_app.access" and r.request_id == "parked-1"]
    assert (line.method, line.path, line.route, line.status, line.user_id) == (
        "GET", POLL, "realtime.poll", 200, None)
    assert line.duration_ms >= 200


@pytest.mark.gen_test
async def test_a_parked_poll_at_shutdown_is_answered_then_closed(server):
    stream = await connect(server)
    await stream.write(poll_request("channels=posts&since=0&timeout=30"))
    await wait_until_pending(server)
    await server.stop()
    status, _, body = await read_answer(stream)
    assert status == "HTTP/1.1 200 OK"
    assert without_epoch(json.loads(body)) == {"events": [], "cursor": 0}
    assert await closed_by_server(stream) == b""


class TestParkedPollsAndTheConnectionCap:
    @pytest.fixture
    def settings_overrides(self):
        return {"max_connections": 3}

    @pytest.mark.gen_test(timeout=30)
    async def test_parked_polls_count_toward_the_connection_cap(self, server):
        streams = [await connect(server) for _ in range(3)]
        for stream in streams:
            await stream.write(poll_request("channels=posts&since=0&timeout=30"))
        await wait_until_pending(server, 3)
        extra = await connect(server)
        await extra.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await closed_by_server(extra)).startswith(b"HTTP/1.1 503")
        await publish(server, "posts", 1)
        for stream in streams:
            assert (await read_answer(stream))[0] == "HTTP/1.1 200 OK"
        # Answered, the three are open connections of the HTTP server again.
        extra = await connect(server)
        await extra.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert (await closed_by_server(extra)).startswith(b"HTTP/1.1 503")
        streams.pop().close()
        deadline = time.monotonic() + 5
        while True:
            extra = await connect(server)
            await extra.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = await closed_by_server(extra)
            if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        for stream in streams:
            stream.close()
