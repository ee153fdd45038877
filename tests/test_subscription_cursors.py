"""Cursors are per channel subscription (issue 12, item 7): a `since` given for one channel never
holds back another channel's events on the same connection."""

import pytest

from tests.realtime_helpers import WsClient, publish
from tornado_app.core.clock import utcnow


async def _write_as_another_worker(server, channel: str, seq: int) -> None:
    """An event in the log that this process's hub has not seen yet (another worker wrote it,
    and it has not reached us through Redis)."""
    await server.ctx.db["events"].insert_one({
        "_id": seq, "channel": channel, "type": "test.event", "data": {"seq": seq},
        "created_at": utcnow()})


@pytest.mark.gen_test
async def test_a_since_ahead_on_one_channel_does_not_mute_another(server):
    await publish(server, "posts", 1)
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"], ref="p")
    newest = server.ctx.hub.last_seq
    await ws.send({"op": "subscribe", "channels": ["products"], "since": newest + 100,
                   "ref": "q"})
    await ws.recv()  # subscribed, or cursor_expired for a since past the log: either way
    event, = await publish(server, "posts", 1)
    received, = await ws.events(1, timeout=5)
    assert received["seq"] == event["seq"]
    ws.close()


@pytest.mark.gen_test
async def test_events_another_worker_wrote_first_reach_every_channel_they_are_due_on(server):
    """The client learned of seq N+2 from another worker and resumes `products` there; this
    worker's hub is still at N. When it catches up, the post at N+1 is still due on `posts`."""
    await publish(server, "posts", 1)
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"], ref="p")
    n = server.ctx.hub.last_seq
    await _write_as_another_worker(server, "posts", n + 1)
    await _write_as_another_worker(server, "products", n + 2)
    await ws.subscribe(["products"], since=n + 2, ref="q")
    # This worker's next event shows the hub the gap, which it fills from the log.
    await publish(server, "posts", 1)
    received = await ws.events(2, timeout=5)
    assert [(event["channel"], event["seq"]) for event in received] == [
        ("posts", n + 1), ("posts", n + 3)]
    ws.close()


@pytest.mark.gen_test
async def test_resubscribing_with_since_replays_that_channel_only(server):
    await publish(server, "posts", 2)
    await publish(server, "products", 2)
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts", "products"], ref="a")
    await ws.subscribe(["products"], since=0, ref="b")
    replayed = await ws.events(2)
    assert {event["channel"] for event in replayed} == {"products"}
    event, = await publish(server, "posts", 1)
    assert (await ws.events(1))[0]["seq"] == event["seq"]
    ws.close()
