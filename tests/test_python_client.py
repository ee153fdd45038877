"""The Python client (clients/python) against real servers: events in order and exactly once,
across a server killed with SIGKILL and restarted on the same data, falling back from WebSocket
to SSE and long-poll when a transport is refused, cursor_expired, and token refresh."""

import asyncio
import sys
from pathlib import Path

import pytest

from tests.realtime_helpers import create_posts, expire_events, publish, user_with_id
from tests.server_process import ServerProcess, http_json
from tests.test_live_page import RefusingProxy, stored_events

# The client is its own distribution (pip install ./clients/python); the suite imports it from
# the source tree so that it is tested as committed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "clients" / "python"))
from tornado_app_realtime import RealtimeClient  # noqa: E402

FAST = {"backoff": (0.1, 1.0)}


async def take(client: RealtimeClient, count: int, timeout: float = 15.0) -> list[dict]:
    out = []

    async def read():
        async for event in client:
            out.append(event)
            if len(out) == count:
                return

    await asyncio.wait_for(read(), timeout)
    return out


async def until(predicate, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def seqs(events):
    return [event["seq"] for event in events]


@pytest.mark.gen_test(timeout=60)
async def test_events_arrive_in_order_once_each_over_websocket(api, server):
    token = await api.user_token("alice")
    async with RealtimeClient(api.base_url, channels=["posts"], token=token, **FAST) as client:
        await until(lambda: client.status.state == "open")
        assert client.status.transport == "websocket"
        await create_posts(api, token, 20)
        events = await take(client, 20)
    assert [e["data"]["title"] for e in events] == [f"post {i}" for i in range(20)]
    stored = (await api.get("/api/v1/poll?channels=posts&since=0&timeout=0")).json["events"]
    assert seqs(events) == seqs(stored)


@pytest.fixture
def process(mongodb_uri, db_name, tmp_path):
    server = ServerProcess(mongodb_uri, db_name, tmp_path / "server")
    yield server
    server.kill()


@pytest.mark.gen_test(timeout=120)
async def test_a_sigkill_restart_mid_stream_loses_and_repeats_nothing(process):
    server = await asyncio.to_thread(process.start)
    token = await asyncio.to_thread(server.create_admin)
    statuses = []
    client = RealtimeClient(server.base_url, channels=["posts"], token=token,
                            on_status=statuses.append, **FAST)
    events = []
    async with client:
        await until(lambda: client.status.state == "open")
        collected = asyncio.get_running_loop().create_task(_collect(client, events))
        await asyncio.to_thread(_posts, server, token, 0, 10)
        await asyncio.to_thread(server.kill)
        await until(lambda: client.status.state == "reconnecting")
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(_posts, server, token, 10, 10)
        expected = seqs(await asyncio.to_thread(stored_events, server, "posts"))
        await until(lambda: len(events) >= len(expected), 20)
        await asyncio.sleep(0.3)
        collected.cancel()
    assert seqs(events) == expected
    assert any(s.state == "reconnecting" and s.attempt >= 1 for s in statuses)


async def _collect(client, out):
    async for event in client:
        out.append(event)


def _posts(server, token, first, count):
    for index in range(first, first + count):
        status, _, body = http_json("POST", f"{server.base_url}/api/v1/posts",
                                    {"title": f"post {index}", "content": "c"}, token)
        assert status == 201, body


class TestOriginRefused:
    @pytest.fixture
    def settings_overrides(self):
        return {"allowed_origins": ["https://app.example"]}

    @pytest.mark.gen_test(timeout=60)
    async def test_websocket_refused_by_origin_falls_back_to_sse(self, api, server):
        token = await api.user_token("alice")
        await create_posts(api, token, 1, prefix="before")
        async with RealtimeClient(api.base_url, channels=["posts"], token=token, since=0,
                                  websocket_options={"origin": "https://elsewhere.example"},
                                  **FAST) as client:
            await until(lambda: client.status.state == "open")
            assert client.status.transport == "sse"
            await create_posts(api, token, 5)
            events = await take(client, 6)
        assert [e["data"]["title"] for e in events] == ["before 0"] + [f"post {i}"
                                                                       for i in range(5)]


@pytest.mark.gen_test(timeout=60)
async def test_a_proxy_refusing_websocket_and_sse_leaves_long_poll(api, server):
    token = await api.user_token("alice")
    proxy = RefusingProxy(server.port)
    port = await proxy.start()
    try:
        async with RealtimeClient(f"http://127.0.0.1:{port}", channels=["posts"], token=token,
                                  poll_timeout=2, **FAST) as client:
            await until(lambda: client.status.state == "open")
            assert client.status.transport == "poll"
            await create_posts(api, token, 5)
            events = await take(client, 5)
        assert [e["data"]["title"] for e in events] == [f"post {i}" for i in range(5)]
    finally:
        await proxy.close()


@pytest.mark.gen_test(timeout=60)
async def test_cursor_expired_calls_on_reset_and_continues_live(api, server):
    published = await publish(server, "posts", 5)
    await expire_events(server, published[2]["seq"])
    resets = []

    async def on_reset(info):
        resets.append(info)  # the application reloads what it shows here

    async with RealtimeClient(api.base_url, channels=["posts"], since=0, on_reset=on_reset,
                              **FAST) as client:
        await until(lambda: resets)
        assert resets[0]["code"] == "cursor_expired"
        assert resets[0]["oldest_seq"] == published[3]["seq"]
        await until(lambda: client.status.state == "open")
        fresh = await publish(server, "posts", 1, "after.reset")
        events = await take(client, 1)
    assert events[0]["seq"] == fresh[0]["seq"]


class TestShortLivedTokens:
    @pytest.fixture
    def settings_overrides(self):
        return {"access_token_ttl": 2}

    @pytest.mark.parametrize("transport", ["websocket", "poll"])
    @pytest.mark.gen_test(timeout=60)
    async def test_the_token_is_refreshed_across_expiry(self, api, server, transport):
        user_id, _ = await user_with_id(api, "bob")
        await api.admin_token(server)
        issued = []
        errors = []

        async def get_token():
            issued.append(1)
            return (await api.login("bob"))["access_token"]

        async with RealtimeClient(api.base_url, channels=[f"user:{user_id}"],
                                  get_token=get_token, transports=[transport], poll_timeout=1,
                                  on_error=errors.append, **FAST) as client:
            await until(lambda: client.status.state == "open")
            titles = []
            for index in range(3):
                admin = (await api.login("admin"))["access_token"]  # it lives 2 s too
                response = await api.post("/api/v1/notifications", {
                    "user_id": user_id, "title": f"n{index}", "body": "b"}, token=admin)
                assert response.code == 202
                titles += [e["data"]["title"] for e in await take(client, 1)]
                await asyncio.sleep(1.5)
        assert titles == ["n0", "n1", "n2"]
        assert len(issued) >= 3
        assert errors == []
