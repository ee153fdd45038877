"""Open connections keep only the rights their user still has: a logout, a role change or an
expired access token reaches WebSockets, SSE streams and parked long-polls that are already open
(tornado_app/realtime/grants.py). Their private channels end with an error; public ones go on."""

import asyncio
import time

import pytest

from tests.conftest import JWT_SECRET
from tests.realtime_helpers import WsClient, publish, user_with_id, wait_until
from tests.test_sse import SseClient
from tornado_app.accounts import grant_changes
from tornado_app.realtime.channels import disallowed
from tornado_app.runtime.server import Server

LOGOUT = "/api/v1/auth/logout"


async def _logout(api, token: str) -> None:
    response = await api.post(LOGOUT, token=token)
    assert response.code == 204, response.body


async def _admin(api, server, name: str) -> tuple[str, str]:
    token = await api.admin_token(server, name)
    return (await api.get("/api/v1/users/me", token=token)).json["id"], token


async def _next_event(ws: WsClient, timeout: float = 5.0) -> dict:
    return (await ws.recv_until("event", timeout))["event"]


async def _watching(server, token: str, channels: list[str]) -> WsClient:
    ws = await WsClient.connect(server.port, token=token)
    await ws.subscribe(channels)
    return ws


async def _private_then_public(server, private: str) -> None:
    """Publishes on `private` and then on `posts`: the first event a socket without the
    private channel sees is the one on posts."""
    await publish(server, private, 1)
    await publish(server, "posts", 1)


@pytest.mark.gen_test(timeout=30)
async def test_logout_ends_the_private_channel_of_an_open_websocket_with_an_error(api, server):
    alice, token = await user_with_id(api, "alice")
    ws = await _watching(server, token, [f"user:{alice}", "posts"])
    await _logout(api, token)
    frame = await ws.recv_until("error")
    assert frame["code"] == "unauthorized", frame
    assert frame["channels"] == [f"user:{alice}"]
    assert isinstance(frame["message"], str)
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_after_logout_a_websocket_gets_public_events_and_no_private_ones(api, server):
    alice, token = await user_with_id(api, "alice")
    ws = await _watching(server, token, [f"user:{alice}", "posts"])
    await _logout(api, token)
    await ws.recv_until("error")
    await _private_then_public(server, f"user:{alice}")
    assert (await _next_event(ws))["channel"] == "posts"
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_after_logout_a_websocket_cannot_subscribe_to_the_private_channel(api, server):
    alice, token = await user_with_id(api, "alice")
    ws = await _watching(server, token, ["posts"])
    await _logout(api, token)
    await ws.recv_until("error")
    await ws.send({"op": "subscribe", "channels": [f"user:{alice}"], "ref": 7})
    reply = await ws.recv()
    assert (reply["type"], reply["code"], reply["ref"]) == ("error", "unauthorized", 7), reply
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_demoted_admin_loses_another_users_channel_on_an_open_websocket(api, server):
    bob, _ = await user_with_id(api, "bob")
    _, root = await _admin(api, server, "root")
    carol, carol_token = await _admin(api, server, "carol")
    ws = await _watching(server, carol_token, [f"user:{bob}", f"user:{carol}", "posts"])
    response = await api.patch(f"/api/v1/users/{carol}", {"role": "user"}, token=root)
    assert response.code == 200, response.body
    frame = await ws.recv_until("error")
    assert frame["code"] == "forbidden", frame
    assert frame["channels"] == [f"user:{bob}"]
    await _private_then_public(server, f"user:{bob}")
    assert (await _next_event(ws))["channel"] == "posts"
    await publish(server, f"user:{carol}", 1)
    assert (await _next_event(ws))["channel"] == f"user:{carol}"  # her own channel stays
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_websocket_auth_op_as_another_user_ends_what_that_user_may_not_read(api, server):
    bob, _ = await user_with_id(api, "bob")
    _, root = await _admin(api, server, "root")
    _, alice_token = await user_with_id(api, "alice")
    ws = await _watching(server, root, [f"user:{bob}", "posts"])
    await ws.send({"op": "auth", "token": alice_token, "ref": 1})
    assert (await ws.recv())["type"] == "authenticated"
    frame = await ws.recv()
    assert (frame["type"], frame["code"], frame["channels"]) == (
        "error", "forbidden", [f"user:{bob}"]), frame
    await _private_then_public(server, f"user:{bob}")
    assert (await _next_event(ws))["channel"] == "posts"
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_websocket_reauthenticates_in_band_after_logout_and_subscribes_again(api, server):
    alice, token = await user_with_id(api, "alice")
    ws = await _watching(server, token, [f"user:{alice}"])
    await _logout(api, token)
    await ws.recv_until("error")
    fresh = (await api.login("alice"))["access_token"]
    await ws.send({"op": "auth", "token": fresh, "ref": 2})
    assert (await ws.recv())["type"] == "authenticated"
    await ws.subscribe([f"user:{alice}"])
    await publish(server, f"user:{alice}", 1)
    assert (await _next_event(ws))["channel"] == f"user:{alice}"
    ws.close()


class TestExpiryOnOpenConnections:
    @pytest.fixture
    def settings_overrides(self):
        return {"access_token_ttl": 2, "auth_recheck_interval": 0.3}

    @pytest.mark.gen_test(timeout=30)
    async def test_expired_token_ends_the_private_channel_and_public_ones_go_on(
            self, api, server):
        alice, token = await user_with_id(api, "alice")
        ws = await _watching(server, token, [f"user:{alice}", "posts"])
        frame = await ws.recv_until("error", timeout=10)
        assert (frame["code"], frame["channels"]) == ("unauthorized", [f"user:{alice}"]), frame
        await _private_then_public(server, f"user:{alice}")
        assert (await _next_event(ws))["channel"] == "posts"
        ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_logout_ends_an_sse_stream_of_a_private_channel_with_an_error_event(api, server):
    alice, token = await user_with_id(api, "alice")
    client = await SseClient.open(server.port, f"?channels=user:{alice},posts", token=token)
    assert client.code == 200
    await wait_until(lambda: server.ctx.connections.streams)
    await _logout(api, token)
    message = await client.next(timeout=10)
    while message.get("event") == "epoch":  # the stream's first message, where it exists
        message = await client.next(timeout=10)
    assert message["event"] == "error", message
    assert '"code":"unauthorized"' in message["data"], message
    assert await client.messages.get() is None  # and the stream has ended
    await client.close()


@pytest.mark.gen_test(timeout=30)
async def test_logout_answers_a_waiting_long_poll_of_a_private_channel_without_events(api,
                                                                                      server):
    alice, token = await user_with_id(api, "alice")
    started = time.monotonic()
    pending = asyncio.ensure_future(api.get(
        f"/api/v1/poll?channels=user:{alice}&timeout=20", token=token))
    await wait_until(lambda: server.ctx.connections.polls)
    await _logout(api, token)
    response = await asyncio.wait_for(pending, 10)  # long before the poll's own timeout
    assert response.code == 200
    assert response.json["events"] == []
    assert time.monotonic() - started < 15
    again = await api.get(f"/api/v1/poll?channels=user:{alice}&timeout=1", token=token)
    assert again.code == 401


class TestOtherWorker:
    """The logout goes through one server, the socket is on another: only the database joins
    them (as with `--workers N`)."""

    @pytest.fixture
    def settings_overrides(self):
        return {"auth_recheck_interval": 0.3}

    @pytest.fixture
    def other(self, io_loop, server, settings, mongodb_uri):
        """A second server on the test server's database, as another worker would be."""
        srv = Server(settings, mongodb_uri, JWT_SECRET)
        io_loop.run_sync(srv.start)
        yield srv
        io_loop.run_sync(srv.stop)

    @pytest.mark.gen_test(timeout=30)
    async def test_logout_on_one_worker_reaches_a_websocket_on_another(
            self, api, server, other):
        alice, token = await user_with_id(api, "alice")
        ws = await _watching(other, token, [f"user:{alice}", "posts"])
        await _logout(api, token)
        frame = await ws.recv_until("error", timeout=10)
        assert (frame["code"], frame["channels"]) == ("unauthorized", [f"user:{alice}"]), frame
        ws.close()

    @pytest.mark.gen_test(timeout=30)
    async def test_demotion_on_one_worker_reaches_a_websocket_on_another(
            self, api, server, other):
        bob, _ = await user_with_id(api, "bob")
        _, root = await _admin(api, server, "root")
        carol, carol_token = await _admin(api, server, "carol")
        ws = await _watching(other, carol_token, [f"user:{bob}"])
        response = await api.patch(f"/api/v1/users/{carol}", {"role": "user"}, token=root)
        assert response.code == 200
        frame = await ws.recv_until("error", timeout=10)
        assert (frame["code"], frame["channels"]) == ("forbidden", [f"user:{bob}"]), frame
        ws.close()


@pytest.mark.parametrize("user, channels, expected", [
    (None, ["posts", "user:" + "a" * 24], ("unauthorized", ["user:" + "a" * 24])),
    ({"_id": "a" * 24, "role": "user"}, ["user:" + "a" * 24, "user:" + "b" * 24, "posts"],
     ("forbidden", ["user:" + "b" * 24])),
    ({"_id": "a" * 24, "role": "admin"}, ["user:" + "b" * 24], ("forbidden", [])),
    (None, ["posts", "products"], ("unauthorized", [])),
])
def test_disallowed_names_the_private_channels_a_user_may_not_read(user, channels, expected):
    assert disallowed(user, channels) == expected


@pytest.mark.gen_test(timeout=30)
async def test_a_process_that_missed_the_news_checks_every_connection_afresh(api, server):
    alice, token = await user_with_id(api, "alice")
    ws = await _watching(server, token, [f"user:{alice}", "posts"])
    # Revoked with no news left to read (as if purged while this process could not read it).
    await server.ctx.db["token_families"].update_many({}, {"$set": {"revoked": True}})
    server.ctx.grants.news_read_at -= grant_changes.RETAIN_SECONDS
    server.ctx.grants.check_soon()
    frame = await ws.recv_until("error")
    assert (frame["code"], frame["channels"]) == ("unauthorized", [f"user:{alice}"]), frame
    ws.close()
