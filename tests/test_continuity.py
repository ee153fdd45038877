"""Continuity is never silent: the log's epoch, cursors ahead of the log or from another epoch,
a log replaced under running clients, and the Event-Seq of every GET (the contract's "Stream
position" and "Realtime" sections), on all three transports."""

import asyncio

import pytest

from tests.conftest import assert_error
from tests.realtime_helpers import WsClient, create_posts, wait_until
from tests.test_sse import SseClient

POLL = "/api/v1/poll"


async def _epoch(api) -> str:
    response = await api.get(f"{POLL}?channels=posts&timeout=0")
    assert response.code == 200, response.body
    return response.json["epoch"]


async def _replace_log(server) -> None:
    """What a restore from another backup, or a new database, looks like to a running server."""
    await server.ctx.db["events"].drop()
    await server.ctx.db["event_log_meta"].drop()


# --- the epoch is told ---------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_the_epoch_is_a_stable_32_hex_string(api):
    first, second = await _epoch(api), await _epoch(api)
    assert first == second
    assert len(first) == 32 and int(first, 16) >= 0


@pytest.mark.gen_test
async def test_websocket_subscribed_ack_carries_the_epoch(api, server):
    epoch = await _epoch(api)
    ws = await WsClient.connect(server.port)
    try:
        assert (await ws.subscribe(["posts"]))["epoch"] == epoch
    finally:
        ws.close()


@pytest.mark.gen_test
async def test_sse_stream_starts_with_its_epoch_and_position(api, server):
    epoch = await _epoch(api)
    stream = await SseClient.open(server.port, "?channels=posts&since=0")
    try:
        await wait_until(lambda: stream.position is not None)
        assert stream.position == {"epoch": epoch, "cursor": 0}
        assert stream.headers["Event-Epoch"] == epoch
    finally:
        await stream.close()


@pytest.mark.gen_test
async def test_a_cursor_with_its_own_epoch_resumes(api, server):
    token = await api.user_token()
    await create_posts(api, token, 2)
    epoch = await _epoch(api)
    response = await api.get(f"{POLL}?channels=posts&since=1&epoch={epoch}&timeout=0")
    assert response.code == 200, response.body
    assert [event["seq"] for event in response.json["events"]] == [2]


# --- a cursor from another epoch ----------------------------------------------------------------

@pytest.mark.gen_test
async def test_poll_with_another_epoch_is_410_with_the_current_one(api):
    epoch = await _epoch(api)
    response = await api.get(f"{POLL}?channels=posts&since=0&epoch={'0' * 32}&timeout=0")
    assert_error(response, 410, "cursor_expired")
    detail = response.json["error"]["details"][0]
    assert detail["epoch"] == epoch and detail["oldest_seq"] == 0


@pytest.mark.gen_test
async def test_websocket_subscribe_with_another_epoch_is_cursor_expired(api, server):
    epoch = await _epoch(api)
    ws = await WsClient.connect(server.port)
    try:
        await ws.send({"op": "subscribe", "channels": ["posts"], "since": 0,
                       "epoch": "f" * 32, "ref": 7})
        reply = await ws.recv()
        assert reply["type"] == "error" and reply["code"] == "cursor_expired", reply
        assert reply["epoch"] == epoch and reply["ref"] == 7
        await ws.send({"op": "ping", "ref": 8})
        assert (await ws.recv())["type"] == "pong"  # the connection goes on
    finally:
        ws.close()


@pytest.mark.gen_test
async def test_sse_with_another_epoch_is_410(api, server):
    await _epoch(api)
    stream = await SseClient.open(server.port, f"?channels=posts&since=0&epoch={'a' * 32}")
    assert stream.code == 410
    assert stream.json["error"]["code"] == "cursor_expired"


# --- a cursor ahead of the log ------------------------------------------------------------------

@pytest.mark.gen_test
async def test_poll_since_ahead_of_the_log_is_410(api):
    token = await api.user_token()
    await create_posts(api, token, 1)
    response = await api.get(f"{POLL}?channels=posts&since=5&timeout=1")
    assert_error(response, 410, "cursor_expired")


@pytest.mark.gen_test
async def test_websocket_since_ahead_of_the_log_is_cursor_expired(api, server):
    ws = await WsClient.connect(server.port)
    try:
        await ws.send({"op": "subscribe", "channels": ["posts"], "since": 1000, "ref": 1})
        reply = await ws.recv()
        assert reply["type"] == "error" and reply["code"] == "cursor_expired", reply
        assert "oldest_seq" in reply and reply["epoch"]
    finally:
        ws.close()


@pytest.mark.gen_test
async def test_sse_last_event_id_ahead_of_the_log_is_410(api, server):
    stream = await SseClient.open(server.port, "?channels=posts", headers={"Last-Event-ID": "99"})
    assert stream.code == 410
    assert stream.json["error"]["code"] == "cursor_expired"


@pytest.mark.gen_test
async def test_since_equal_to_the_newest_seq_is_accepted(api):
    token = await api.user_token()
    await create_posts(api, token, 2)
    response = await api.get(f"{POLL}?channels=posts&since=2&timeout=0")
    assert response.code == 200 and response.json["events"] == []


# --- a log replaced under running clients -------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_a_replaced_log_ends_websocket_subscriptions_with_cursor_expired(api, server):
    old = await _epoch(api)
    ws = await WsClient.connect(server.port)
    try:
        await ws.subscribe(["posts"], since=0)
        await _replace_log(server)
        reply = await ws.recv(timeout=15)
        assert reply["type"] == "error" and reply["code"] == "cursor_expired", reply
        assert reply["epoch"] != old and reply["ref"] is None
        await ws.send({"op": "ping", "ref": 2})
        assert (await ws.recv())["type"] == "pong"
    finally:
        ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_replaced_log_ends_the_sse_stream_with_an_error_event(api, server):
    stream = await SseClient.open(server.port, "?channels=posts&since=0")
    try:
        await wait_until(lambda: stream.position is not None)
        old = stream.position["epoch"]
        await _replace_log(server)
        message = await stream.next(timeout=15)
        assert message["event"] == "error", message
        assert '"cursor_expired"' in message["data"] and old not in message["data"]
        assert await asyncio.wait_for(stream.messages.get(), 5) is None  # the stream ended
    finally:
        await stream.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_replaced_log_answers_a_waiting_poll_and_the_next_one_is_410(api, server):
    old = await _epoch(api)
    waiting = asyncio.ensure_future(api.get(f"{POLL}?channels=posts&since=0&epoch={old}&timeout=20"))
    await asyncio.sleep(0.5)
    await _replace_log(server)
    answered = await asyncio.wait_for(waiting, 15)
    assert answered.code == 200 and answered.json["events"] == []
    again = await api.get(f"{POLL}?channels=posts&since=0&epoch={old}&timeout=0")
    assert_error(again, 410, "cursor_expired")
    assert again.json["error"]["details"][0]["epoch"] != old


@pytest.mark.gen_test(timeout=30)
async def test_a_replaced_log_answers_every_waiting_poll(api, server):
    """Parked polls share one callback for a replaced log: the first told answers them all."""
    old = await _epoch(api)
    waiting = [asyncio.ensure_future(api.get(f"{POLL}?channels={channel}&since=0&epoch={old}"
                                             "&timeout=20"))
               for channel in ("posts", "products", "posts")]
    await wait_until(lambda: len(server.ctx.connections.polls) == 3)
    await _replace_log(server)
    answers = await asyncio.wait_for(asyncio.gather(*waiting), 15)
    assert [(answer.code, answer.json["events"]) for answer in answers] == [(200, [])] * 3
    assert not server.ctx.connections.polls


# --- Event-Seq: no gap between loading and subscribing -------------------------------------------

@pytest.mark.parametrize("path", ["/api/v1/posts", "/api/v1/products"])
@pytest.mark.gen_test
async def test_list_answers_carry_event_seq_and_epoch(api, path):
    token = await api.user_token()
    await create_posts(api, token, 3)
    response = await api.get(path)
    assert response.headers["Event-Seq"] == "3"
    assert response.headers["Event-Epoch"] == await _epoch(api)


@pytest.mark.gen_test
async def test_resource_answers_carry_event_seq(api):
    token = await api.user_token()
    await create_posts(api, token, 1)
    post_id = (await api.get("/api/v1/posts")).json["items"][0]["id"]
    for path in (f"/api/v1/posts/{post_id}", f"/api/v1/posts/{post_id}/comments"):
        assert (await api.get(path)).headers["Event-Seq"] == "1", path


@pytest.mark.gen_test
async def test_subscribing_from_event_seq_delivers_every_later_change(api, server):
    token = await api.user_token()
    await create_posts(api, token, 2)
    loaded = await api.get("/api/v1/posts")
    await create_posts(api, token, 1, prefix="later")
    ws = await WsClient.connect(server.port)
    try:
        await ws.subscribe(["posts"], since=int(loaded.headers["Event-Seq"]))
        (event,) = await ws.events(1)
        assert event["data"]["title"] == "later 0"
    finally:
        ws.close()
