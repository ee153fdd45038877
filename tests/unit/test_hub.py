"""The hub (tornado_app/realtime/hub.py): events to the subscribers of their channel, in seq order,
with no gap and no duplicate; replay from memory or the log; cursors checked against the log."""

import asyncio

import pytest

from tests.unit.memory_log import MemoryLog
from tornado_app.core.errors import ApiError
from tornado_app.realtime import hub as hub_module
from tornado_app.realtime.hub import Hub


class Recorder:
    """A subscriber that keeps what it is given."""

    def __init__(self):
        self.seqs: list[int] = []
        self.expired: list[tuple] = []

    def deliver(self, records) -> None:
        self.seqs.extend(record.seq for record in records)

    def expire(self, epoch, oldest_seq) -> None:
        self.expired.append((epoch, oldest_seq))


class SteppingClock:
    """A clock that moves a second each time it is read: every slice of the fan-out is then
    exactly one batch, whatever the machine's speed."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


async def started_hub(log: MemoryLog, memory: int = 20000, clock=None) -> Hub:
    hub = Hub(log, memory=memory) if clock is None else Hub(log, memory=memory, clock=clock)
    await hub.start()
    return hub


async def turns(count: int = 300) -> None:
    """Lets the loop run the callbacks the hub scheduled."""
    for _ in range(count):
        await asyncio.sleep(0)


def publish(log: MemoryLog, hub: Hub, channel: str) -> dict:
    event = log.append(channel)
    hub.on_event(event)
    return event


# --- delivery ------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_start_takes_the_logs_newest_seq_as_delivered():
    log = MemoryLog()
    log.append("posts")
    log.append("posts")
    hub = await started_hub(log)
    assert hub.last_seq == 2


@pytest.mark.gen_test
async def test_an_event_goes_to_the_subscribers_of_its_channel_only():
    log = MemoryLog()
    hub = await started_hub(log)
    posts, products = Recorder(), Recorder()
    hub.subscribe(posts, ["posts"])
    hub.subscribe(products, ["products"])
    publish(log, hub, "posts")
    assert posts.seqs == [1]
    assert products.seqs == []


@pytest.mark.gen_test
async def test_a_subscriber_of_several_channels_gets_each_event_once_in_seq_order():
    log = MemoryLog()
    hub = await started_hub(log)
    both = Recorder()
    hub.subscribe(both, ["posts", "products"])
    for channel in ["posts", "products", "posts", "other", "products"]:
        publish(log, hub, channel)
    assert both.seqs == [1, 2, 3, 5]


@pytest.mark.gen_test
async def test_an_event_already_delivered_is_dropped():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    event = publish(log, hub, "posts")
    hub.on_event(event)  # our own event echoed back by Redis
    assert sub.seqs == [1]


@pytest.mark.gen_test
async def test_unsubscribed_channels_get_nothing_more():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    hub.unsubscribe(sub, ["posts"])
    publish(log, hub, "posts")
    assert sub.seqs == [1]
    assert "posts" not in hub.channels


@pytest.mark.gen_test
async def test_before_start_the_first_event_sets_the_position():
    """The database was down at start: the hub begins at whatever event comes first."""
    hub = Hub(MemoryLog())
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    hub.on_event({"seq": 41, "channel": "posts", "type": "t", "data": {}})
    hub.on_event({"seq": 42, "channel": "posts", "type": "t", "data": {}})
    assert sub.seqs == [41, 42]


@pytest.mark.gen_test
async def test_a_failing_subscriber_does_not_keep_the_event_from_the_others():
    log = MemoryLog()
    hub = await started_hub(log)

    class Broken(Recorder):
        def deliver(self, records):
            raise RuntimeError("socket gone")

    first, second = Recorder(), Recorder()
    for sub in (first, Broken(), second):
        hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    assert first.seqs == [1] and second.seqs == [1]


@pytest.mark.gen_test
async def test_a_slow_subscriber_dropped_during_the_fan_out_leaves_the_others_served():
    """A session drops itself from the hub when its socket backs up (realtime/session.py
    on_backpressure): the fan-out in progress goes on to everyone else."""
    log = MemoryLog()
    hub = await started_hub(log)

    class Slow(Recorder):
        def deliver(self, records):
            super().deliver(records)
            hub.unsubscribe(self, ["posts"])

    subs = [Recorder(), Slow(), Recorder(), Recorder()]
    for sub in subs:
        hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    publish(log, hub, "posts")
    assert [sub.seqs for sub in subs] == [[1, 2], [1], [1, 2], [1, 2]]


# --- events out of order and gaps --------------------------------------------------------------

@pytest.mark.gen_test
async def test_an_event_ahead_waits_for_the_missing_one_then_both_go_in_order():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    first, second = log.append("posts"), log.append("posts")
    hub.on_event(second)  # another worker's event overtook ours
    assert sub.seqs == []
    hub.on_event(first)
    assert sub.seqs == [1, 2]


@pytest.mark.gen_test
async def test_a_gap_that_does_not_fill_by_itself_is_read_from_the_log():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    log.append("posts")
    log.append("other")
    publish(log, hub, "posts")  # seq 3 arrives; 1 and 2 never do
    await asyncio.wait_for(hub._catch_up, 5)
    assert sub.seqs == [1, 3]
    assert hub.last_seq == 3


@pytest.mark.gen_test
async def test_a_gap_purged_from_the_log_is_skipped():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    log.append("posts")
    log.append("posts")
    log.purge_before(3)
    publish(log, hub, "posts")
    publish(log, hub, "posts")
    await asyncio.wait_for(hub._catch_up, 5)
    assert sub.seqs == [3, 4]


@pytest.mark.gen_test
async def test_a_gap_is_retried_while_the_log_cannot_be_read(monkeypatch):
    sleeps = []
    real_sleep = asyncio.sleep

    async def short_sleep(seconds):
        sleeps.append(seconds)
        log.fail_reads = len(sleeps) < 3  # unreachable for the first two attempts
        await real_sleep(0)

    # asyncio.sleep itself (the hub's module object), restored after the test.
    monkeypatch.setattr(hub_module.asyncio, "sleep", short_sleep)
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    log.append("posts")
    publish(log, hub, "posts")
    await asyncio.wait_for(hub._catch_up, 5)
    assert sub.seqs == [1, 2]
    assert sleeps == [0.02, 1, 1]  # a moment for the event itself, then a retry each second
    assert log.reads == 3


@pytest.mark.gen_test
async def test_poll_log_delivers_what_the_log_has_past_the_hub():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    log.append("posts")
    log.append("posts")
    assert await hub.poll_log() == 2
    assert sub.seqs == [1, 2]


# --- fan-out in slices ------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_a_large_fan_out_is_shared_over_turns_of_the_loop():
    log = MemoryLog()
    hub = await started_hub(log, clock=SteppingClock())
    subs = [Recorder() for _ in range(hub_module.FANOUT_BATCH * 2 + 1)]
    for sub in subs:
        hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    assert sum(1 for sub in subs if sub.seqs) == hub_module.FANOUT_BATCH
    await asyncio.sleep(0)
    assert sum(1 for sub in subs if sub.seqs) == hub_module.FANOUT_BATCH * 2
    await turns()
    assert all(sub.seqs == [1] for sub in subs)


@pytest.mark.gen_test
async def test_a_slice_of_the_fan_out_lasts_its_time_not_a_count():
    """On the real clock, a slice hands over to as many subscribers as fit in FANOUT_SLICE:
    subscribers that cost nothing are all served in the first one."""
    log = MemoryLog()
    hub = await started_hub(log, clock=lambda: 0.0)  # time stands still: one slice does all
    subs = [Recorder() for _ in range(hub_module.FANOUT_BATCH * 50)]
    for sub in subs:
        hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    assert all(sub.seqs == [1] for sub in subs)


@pytest.mark.gen_test
async def test_an_event_during_a_fan_out_joins_the_turns_still_to_come():
    """Coalescing: a subscriber not reached yet gets both events in one hand-over (one write);
    every subscriber gets each event once, in order."""
    log = MemoryLog()
    hub = await started_hub(log, clock=SteppingClock())
    handovers = []

    class Witness(Recorder):
        def deliver(self, records):
            super().deliver(records)
            handovers.append([record.seq for record in records])

    subs = [Witness() for _ in range(hub_module.FANOUT_BATCH + 10)]
    for sub in subs:
        hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")  # the first slice has it at once
    publish(log, hub, "posts")
    await turns()
    assert all(sub.seqs == [1, 2] for sub in subs)
    assert sorted(handovers) == ([[1]] * hub_module.FANOUT_BATCH + [[1, 2]] * 10
                                 + [[2]] * hub_module.FANOUT_BATCH)
    assert hub.delivered == 2 * len(subs)


@pytest.mark.gen_test
async def test_a_subscriber_added_during_a_fan_out_is_not_given_that_event():
    """It was dispatched before: the newcomer has it through its replay, not twice."""
    log = MemoryLog()
    hub = await started_hub(log, clock=SteppingClock())
    subs = [Recorder() for _ in range(hub_module.FANOUT_BATCH + 1)]
    for sub in subs:
        hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    late = Recorder()
    hub.subscribe(late, ["posts"])
    await turns()
    publish(log, hub, "posts")
    await turns()
    assert late.seqs == [2]
    assert subs[-1].seqs == [1, 2]


# --- replay ------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_replay_from_memory_does_not_read_the_log():
    log = MemoryLog()
    hub = await started_hub(log)
    for channel in ["posts", "other", "posts", "posts"]:
        publish(log, hub, channel)
    records = await hub.replay(["posts"], after=1, up_to=3)
    assert [record.seq for record in records] == [3]
    assert log.reads == 0


@pytest.mark.gen_test
async def test_replay_older_than_memory_reads_the_log_in_batches(monkeypatch):
    monkeypatch.setattr(hub_module, "REPLAY_BATCH", 2)
    log = MemoryLog()
    hub = await started_hub(log, memory=2)
    for channel in ["posts", "other", "posts", "posts", "posts", "posts"]:
        publish(log, hub, channel)
    records = await hub.replay(["posts"], after=0, up_to=5)
    assert [record.seq for record in records] == [1, 3, 4, 5]
    assert log.reads == 2  # [1, 3], then [4, 5]


@pytest.mark.gen_test
async def test_replay_stops_at_its_limit():
    log = MemoryLog()
    hub = await started_hub(log, memory=2)
    for _ in range(5):
        publish(log, hub, "posts")
    from_log = await hub.replay(["posts"], after=0, up_to=5, limit=2)
    from_memory = await hub.replay(["posts"], after=3, up_to=5, limit=1)
    assert [record.seq for record in from_log] == [1, 2]
    assert [record.seq for record in from_memory] == [4]


@pytest.mark.gen_test
async def test_forget_before_keeps_memory_within_what_the_log_retains():
    log = MemoryLog()
    hub = await started_hub(log)
    for _ in range(4):
        publish(log, hub, "posts")
    log.purge_before(3)
    hub.forget_before(3)
    assert [record.seq for record in hub.recent] == [3, 4]
    assert [record.seq for record in await hub.replay(["posts"], after=0, up_to=4)] == [3, 4]


# --- cursors -----------------------------------------------------------------------------------

async def expired(hub: Hub, since: int, epoch=None) -> dict:
    with pytest.raises(ApiError) as raised:
        await hub.check_cursor(since, epoch)
    error = raised.value
    assert (error.status, error.code) == (410, "cursor_expired")
    return error.details[0]


@pytest.mark.gen_test
async def test_a_cursor_within_the_log_is_good():
    log = MemoryLog()
    hub = await started_hub(log, memory=1)
    for _ in range(3):
        publish(log, hub, "posts")
    for since in (0, 2, 3):
        await hub.check_cursor(since, "epoch-1")


@pytest.mark.gen_test
async def test_a_cursor_older_than_retention_is_expired_with_the_oldest_seq():
    log = MemoryLog()
    hub = await started_hub(log, memory=1)
    for _ in range(5):
        publish(log, hub, "posts")
    log.purge_before(4)
    details = await expired(hub, 2)
    assert details["oldest_seq"] == 4 and details["epoch"] == "epoch-1"
    await hub.check_cursor(3)  # everything after 3 is still there


@pytest.mark.gen_test
async def test_a_cursor_from_another_epoch_is_expired():
    log = MemoryLog()
    hub = await started_hub(log)
    publish(log, hub, "posts")
    details = await expired(hub, 1, epoch="another-epoch")
    assert details["epoch"] == "epoch-1"


@pytest.mark.gen_test
async def test_a_cursor_ahead_of_the_log_is_expired():
    log = MemoryLog()
    hub = await started_hub(log)
    publish(log, hub, "posts")
    await expired(hub, 2)


@pytest.mark.gen_test
async def test_a_cursor_ahead_of_this_hub_but_in_the_log_is_good():
    """Another worker's newest event may not have reached this process yet."""
    log = MemoryLog()
    hub = await started_hub(log)
    log.append("posts")
    await hub.check_cursor(1)


# --- a log replaced under the hub --------------------------------------------------------------

@pytest.mark.gen_test
async def test_an_unchanged_log_is_left_alone():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    assert await hub.watch_log() is False
    assert sub.expired == []


@pytest.mark.gen_test
async def test_a_log_of_another_epoch_expires_every_subscriber_and_restarts_there():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    replacement = MemoryLog(epoch="epoch-2")
    replacement.append("posts")
    replacement.append("posts")
    replacement.purge_before(2)
    log.stored_epoch, log.events, log.next_seq = "epoch-2", replacement.events, 3
    assert await hub.watch_log() is True
    assert sub.expired == [("epoch-2", 2)]
    assert hub.channels == {} and hub.last_seq == 2


@pytest.mark.gen_test
async def test_a_log_rolled_back_gets_a_new_epoch():
    log = MemoryLog()
    hub = await started_hub(log)
    sub = Recorder()
    hub.subscribe(sub, ["posts"])
    publish(log, hub, "posts")
    publish(log, hub, "posts")
    log.events.pop()  # a backup from before seq 2 restored
    log.next_seq = 2
    assert await hub.watch_log() is True
    assert sub.expired == [("epoch-1-rolled-back", 1)]
    assert hub.last_seq == 1
