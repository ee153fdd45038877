"""The replay-then-live handover (tornado_app/realtime/subscription.py, the one every transport
uses: WebSocket, SSE, long-poll): a subscription with `since` gets every event of its channels
after `since` exactly once and in seq order, however the events published while the replay is
running fall between its reads."""

import asyncio

import pytest

from tests.unit.memory_log import MemoryLog
from tornado_app.core.errors import ApiError
from tornado_app.realtime import subscription as subscription_module
from tornado_app.realtime.hub import Hub
from tornado_app.realtime.subscription import Subscription


class Client:
    """What the connection's sink wrote, as seqs."""

    def __init__(self):
        self.seqs: list[int] = []
        self.expired: list[tuple] = []

    def sink(self, records) -> None:
        self.seqs.extend(record.seq for record in records)

    def on_expired(self, epoch, oldest_seq) -> None:
        self.expired.append((epoch, oldest_seq))


async def setup(memory: int = 2):
    """A hub whose memory holds only the newest `memory` events: older replays read the log."""
    log = MemoryLog()
    hub = Hub(log, memory=memory)
    await hub.start()
    client = Client()
    return log, hub, client, Subscription(hub, client.sink, client.on_expired)


def publish(log: MemoryLog, hub: Hub, channel: str = "posts") -> int:
    event = log.append(channel)
    hub.on_event(event)
    return event["seq"]


def seqs_of(log: MemoryLog, channels, after: int = 0) -> list[int]:
    return [event["seq"] for event in log.events
            if event["channel"] in channels and event["seq"] > after]


@pytest.mark.gen_test
async def test_events_published_during_the_replay_follow_it_once_and_in_order():
    log, hub, client, sub = await setup()
    for _ in range(5):
        publish(log, hub)
    log.hold_reads()
    adding = asyncio.ensure_future(sub.add(["posts"], since=1))
    await log.read_started.wait()  # the replay is reading the log
    for _ in range(3):
        publish(log, hub)
    log.release_reads()
    await adding
    publish(log, hub)
    assert client.seqs == [2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.gen_test
async def test_events_published_during_every_page_of_the_replay_follow_it_once_and_in_order(
        monkeypatch):
    monkeypatch.setattr(subscription_module, "REPLAY_PAGE", 2)
    log, hub, client, sub = await setup()
    for channel in ["posts", "other", "posts", "posts", "other", "posts", "posts"]:
        publish(log, hub, channel)

    def meanwhile():
        publish(log, hub, "posts")
        publish(log, hub, "other")

    log.during_read = meanwhile
    await sub.add(["posts"], since=0)
    log.during_read = None
    publish(log, hub)
    assert log.reads == 3  # pages [1, 3], [4, 6], [7]
    assert client.seqs == seqs_of(log, ["posts"])


@pytest.mark.gen_test
async def test_events_published_while_the_cursor_is_checked_are_replayed_once():
    """check_cursor may read the log (a cursor older than the hub's memory) before the
    subscription joins the hub: what arrives meanwhile comes with the replay."""
    log, hub, client, sub = await setup(memory=1)
    for _ in range(4):
        publish(log, hub)
    checked = asyncio.Event()
    oldest_seq = log.oldest_seq

    async def slow_oldest_seq():
        publish(log, hub)
        publish(log, hub)
        checked.set()
        return await oldest_seq()

    log.oldest_seq = slow_oldest_seq
    await sub.add(["posts"], since=2)
    assert checked.is_set()
    publish(log, hub)
    assert client.seqs == [3, 4, 5, 6, 7]


@pytest.mark.gen_test
async def test_the_replay_from_memory_hands_over_to_live_events():
    log, hub, client, sub = await setup(memory=100)
    for _ in range(3):
        publish(log, hub)
    await sub.add(["posts"], since=1)
    publish(log, hub)
    assert client.seqs == [2, 3, 4]
    assert log.reads == 0


@pytest.mark.gen_test
async def test_only_the_subscribed_channels_are_replayed_and_delivered():
    log, hub, client, sub = await setup()
    for channel in ["posts", "products", "posts", "other"]:
        publish(log, hub, channel)
    await sub.add(["posts", "products"], since=0)
    for channel in ["other", "products", "posts"]:
        publish(log, hub, channel)
    assert client.seqs == seqs_of(log, ["posts", "products"])


@pytest.mark.gen_test
async def test_on_subscribed_comes_before_any_event():
    log, hub, client, sub = await setup()
    publish(log, hub)
    order = []
    sub.sink = lambda records: order.extend(record.seq for record in records)
    await sub.add(["posts"], since=0, on_subscribed=lambda: order.append("subscribed"))
    assert order == ["subscribed", 1]


@pytest.mark.gen_test
async def test_an_expired_cursor_subscribes_to_nothing():
    log, hub, client, sub = await setup()
    publish(log, hub)
    subscribed = []
    with pytest.raises(ApiError) as raised:
        await sub.add(["posts"], since=5, on_subscribed=lambda: subscribed.append(True))
    assert raised.value.code == "cursor_expired"
    publish(log, hub)
    assert subscribed == [] and client.seqs == [] and sub.channels == {}


@pytest.mark.gen_test
async def test_a_replay_that_fails_leaves_no_subscription_and_delivers_nothing():
    log, hub, client, sub = await setup()
    for _ in range(4):
        publish(log, hub)
    log.hold_reads()
    log.fail_reads = True
    adding = asyncio.ensure_future(sub.add(["posts"], since=0))
    await log.read_started.wait()
    publish(log, hub)  # queued behind the replay
    log.release_reads()
    with pytest.raises(ConnectionError):
        await adding
    publish(log, hub)
    assert client.seqs == []
    assert sub.channels == {} and "posts" not in hub.channels


@pytest.mark.gen_test
async def test_a_connection_closed_during_the_replay_gets_nothing_more():
    log, hub, client, sub = await setup()
    for _ in range(4):
        publish(log, hub)
    log.hold_reads()
    adding = asyncio.ensure_future(sub.add(["posts"], since=0))
    await log.read_started.wait()
    publish(log, hub)
    sub.close()
    log.release_reads()
    await adding
    publish(log, hub)
    assert client.seqs == []
    assert "posts" not in hub.channels


@pytest.mark.gen_test
async def test_a_channel_left_during_the_replay_is_not_delivered_after_it():
    log, hub, client, sub = await setup()
    for channel in ["posts", "products", "posts", "products"]:
        publish(log, hub, channel)
    log.hold_reads()
    adding = asyncio.ensure_future(sub.add(["posts", "products"], since=0))
    await log.read_started.wait()
    publish(log, hub, "products")
    publish(log, hub, "posts")
    sub.remove(["products"])  # its right to read it ended
    log.release_reads()
    await adding
    publish(log, hub, "products")
    publish(log, hub, "posts")
    # The replay was read for both; after it only posts goes on.
    assert client.seqs == [1, 2, 3, 4, 6, 8]


@pytest.mark.gen_test
async def test_a_live_subscription_gets_only_newer_events():
    log, hub, client, sub = await setup()
    publish(log, hub)
    await sub.add(["posts"], since=None)
    publish(log, hub)
    assert client.seqs == [2]


@pytest.mark.gen_test
async def test_a_cursor_ahead_of_the_hub_holds_back_only_its_own_channel():
    """A `since` from another worker's newer event: that channel starts after it, the others
    are not held back."""
    log, hub, client, sub = await setup()
    await sub.add(["products"], since=None)
    ahead = log.append("posts")["seq"]  # in the log, not yet at this hub
    await sub.add(["posts"], since=ahead)
    hub.on_event(log.events[-1])
    publish(log, hub, "products")
    publish(log, hub, "posts")
    assert client.seqs == [2, 3]


@pytest.mark.gen_test
async def test_a_replaced_log_drops_every_channel_and_tells_the_connection():
    log, hub, client, sub = await setup()
    await sub.add(["posts"], since=None)
    log.stored_epoch = "epoch-2"
    await hub.watch_log()
    assert client.expired == [("epoch-2", 0)]
    assert sub.channels == {}


# --- the seam every transport uses: its position, a consumer's limit, a new consumer -----------

@pytest.mark.gen_test
async def test_add_returns_the_position_where_live_delivery_began():
    log, hub, client, sub = await setup()
    for _ in range(3):
        publish(log, hub)
    log.hold_reads()
    adding = asyncio.ensure_future(sub.add(["posts"], since=0))
    await log.read_started.wait()
    publish(log, hub)
    log.release_reads()
    assert await adding == 3  # 1 to 3 came from the replay, 4 from the live queue
    assert client.seqs == [1, 2, 3, 4]
    other = Subscription(hub, Client().sink)
    assert await other.add(["posts"], since=None) == 4


@pytest.mark.gen_test
async def test_a_replay_that_fills_the_consumers_limit_ends_the_subscription():
    """A long-poll takes at most so many events: the rest waits for its next call."""
    log, hub, client, sub = await setup()
    for _ in range(5):
        publish(log, hub)
    log.hold_reads()
    adding = asyncio.ensure_future(sub.add(["posts"], since=0, limit=3))
    await log.read_started.wait()
    publish(log, hub)
    log.release_reads()
    await adding
    publish(log, hub)
    assert client.seqs == [1, 2, 3]
    assert sub.channels == {} and "posts" not in hub.channels


@pytest.mark.gen_test
async def test_a_replay_under_the_limit_hands_over_to_live_events(monkeypatch):
    monkeypatch.setattr(subscription_module, "REPLAY_PAGE", 2)
    log, hub, client, sub = await setup()
    for _ in range(3):
        publish(log, hub)
    log.during_read = lambda: publish(log, hub)
    await sub.add(["posts"], since=0, limit=10)
    log.during_read = None
    publish(log, hub)
    assert client.seqs == seqs_of(log, ["posts"])


@pytest.mark.gen_test
async def test_retarget_hands_live_events_to_the_new_consumer_with_no_gap():
    log, hub, client, sub = await setup()
    await sub.add(["posts"], since=None)
    publish(log, hub)
    parked = Client()
    sub.retarget(parked.sink, parked.on_expired)
    publish(log, hub)
    publish(log, hub)
    assert client.seqs == [1] and parked.seqs == [2, 3]
    log.stored_epoch = "epoch-2"
    await hub.watch_log()
    assert parked.expired == [("epoch-2", 1)] and client.expired == []
