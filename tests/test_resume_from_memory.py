"""A resume whose cursor the hub's memory covers is done at once (Subscription.add_recent):
the ack, then every missed event of the channels, in order; anything else is left to the
awaiting Subscription.add (the log, cursor_expired)."""

from types import SimpleNamespace

import pytest

from tests.realtime_helpers import WsClient, publish
from tornado_app.realtime.hub import Hub
from tornado_app.realtime.record import Record
from tornado_app.realtime.subscription import Subscription


def hub_holding(first: int, last: int, epoch: str = "e1") -> Hub:
    """A hub whose memory holds seqs first..last, alternately on posts and products."""
    hub = Hub(event_log=SimpleNamespace(epoch=epoch))
    for seq in range(first, last + 1):
        channel = "posts" if seq % 2 else "products"
        hub.recent.append(Record({"seq": seq, "channel": channel, "type": "t", "data": {}}))
    hub.last_seq = last
    return hub


class Sink:
    def __init__(self):
        self.sent: list = []

    def __call__(self, records) -> None:
        self.sent.append(("events", [record.seq for record in records]))

    def acked(self) -> None:
        self.sent.append(("ack", None))


def test_a_cursor_in_memory_gets_the_ack_then_the_missed_events_of_its_channels():
    hub, sink = hub_holding(10, 20), Sink()
    subscription = Subscription(hub, sink)
    assert subscription.add_recent(["posts"], 14, sink.acked) == 20
    assert sink.sent == [("ack", None), ("events", [15, 17, 19])]


def test_after_a_resume_from_memory_live_events_follow_without_a_duplicate():
    hub, sink = hub_holding(10, 20), Sink()
    subscription = Subscription(hub, sink)
    subscription.add_recent(["posts"], 14, sink.acked)
    subscription.deliver([hub.recent[-2], Record({"seq": 21, "channel": "posts"})])
    assert sink.sent[-1] == ("events", [21])


def test_a_cursor_at_the_newest_event_gets_the_ack_alone():
    hub, sink = hub_holding(10, 20), Sink()
    assert Subscription(hub, sink).add_recent(["posts"], 20, sink.acked) == 20
    assert sink.sent == [("ack", None)]


@pytest.mark.parametrize("since, epoch", [
    (21, None),   # ahead of this process: only the log can tell
    (8, None),    # older than memory: the log replays it, or cursor_expired
    (14, "e0"),   # another epoch: cursor_expired
])
def test_a_cursor_memory_cannot_answer_is_left_to_add_untouched(since, epoch):
    hub, sink = hub_holding(10, 20), Sink()
    subscription = Subscription(hub, sink)
    assert subscription.add_recent(["posts"], since, sink.acked, epoch) is None
    assert sink.sent == [] and subscription.channels == {} and hub.channels == {}


@pytest.mark.gen_test(timeout=30)
async def test_a_websocket_resuming_from_memory_gets_the_ack_then_what_it_missed(server):
    ws = await WsClient.connect(server.port)
    await ws.subscribe(["posts"])
    [last] = await publish(server, "posts", 1)
    await ws.events(1)
    ws.close()
    missed = await publish(server, "posts", 3)
    ws = await WsClient.connect(server.port)
    await ws.send({"op": "subscribe", "channels": ["posts"], "since": last["seq"], "ref": 7})
    ack = await ws.recv()
    assert ack["type"] == "subscribed" and ack["ref"] == 7, ack
    assert [e["seq"] for e in await ws.events(3)] == [e["seq"] for e in missed]
    ws.close()
