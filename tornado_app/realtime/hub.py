"""The hub: channel → subscribers in this process, fed in seq order, with no gap and no duplicate.

Events reach the hub from this process's own writes and, with several workers, from Redis. The
log's seq has no gaps, so the hub always knows whether it has missed something: an event that
arrives ahead of the next expected seq is held while the missing ones are read from the log.
Each event is serialized once; a subscriber's `deliver(records)` only writes prebuilt bytes.

Events that come faster than one fan-out pass (about 150 ms for 15,000 subscribers) are
coalesced: each subscriber waits in one queue with every event it has not been handed yet, and
when its turn comes it gets them all at once, which it writes in one send (each event still its
own frame). The kernel's cost of a loopback send (~6.5 µs) is then paid once per subscriber and
pass, not once per subscriber and event.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Protocol

from ..core.errors import ApiError
from .record import Record

log = logging.getLogger(__name__)

REPLAY_BATCH = 1000
# The fan-out runs in slices of time, one per turn of the event loop, so whatever else the loop
# has to do waits at most one slice. Everything else waits too: a POST that stores an event
# takes about twenty turns (its reads and writes on the database, the log's lock), so the
# slice sets how fast events reach the hub while a fan-out is under way, and so how many of
# them a subscriber's turn carries in one send. Measured with `RATE_N=15000 RATE_SECONDS=15
# RATE_TARGETS=ours python -m bench.run rate --runs 1`, 20 events/s to 15,000 subscribers, one
# run each on a quiet machine, slices as fixed counts of hand-overs (about 11 µs each):
#   2,000 per turn (earlier, for /health during a fan-out: it waited up to 103 ms)
#     500 (about 5 ms):   POST 3.2 s, 1.23 events per send, p99 27.8 s (a growing backlog)
#     200 (about 2 ms):   POST 1.7 s, 2.85 events per send, p99 3.3 s
#     100 (about 1 ms):   POST 34 ms, 3.35 events per send, p99 399 ms
#      50 (about 0.5 ms): POST 22 ms, 3.38, p99 252 ms
#      25 (about 0.3 ms): POST 16 ms, 3.56, p99 240 ms; server CPU per delivered event 3.2 µs
#                         where 500 took 7.8 µs
FANOUT_SLICE = 0.00025  # seconds
# When the rest of the loop is busy too (requests, other sockets), the fan-out gets as long as
# the rest took since its last slice: half the loop each, so a busy server still fans out at
# half speed, not at the pace of a quarter millisecond per turn. At most this long, so that
# one long turn (a pause of the collector, a slow callback) does not hold the loop twice over.
FANOUT_SLICE_MAX = 0.004
# Hand-overs between two looks at the clock (one look: ~0.06 µs; one hand-over: ~11 µs with
# its send, 0.5 µs without: bench.fanout_cpu).
FANOUT_BATCH = 16


class Subscriber(Protocol):
    """What the hub delivers to: one connection's subscription (realtime.subscription.Subscription,
    whatever the transport)."""

    def deliver(self, records: Sequence[Record]) -> None:
        """Takes events of its channels, in seq order (several when they were ready together,
        to be written in one send); must not block or raise."""

    def expire(self, epoch: str, oldest_seq: int) -> None:
        """The log was replaced: every cursor is void, and the hub has dropped the subscriber."""


class Hub:
    def __init__(self, event_log, memory: int = 20000, clock: Callable[[], float] = time.perf_counter):
        self.log = event_log
        self._clock = clock
        self.last_seq = 0
        self.started = False
        self.channels: dict[str, set[Subscriber]] = {}
        # The newest events, contiguous in seq, so most replays never touch the database.
        self.recent: deque[Record] = deque(maxlen=memory)
        self._ahead: dict[int, dict] = {}
        # channel → the JSON of the last event dispatched to its subscribers.
        self._previous: dict[str, bytes] = {}
        self._catch_up: asyncio.Task | None = None
        # Subscribers with events still to be handed to them, each with its events in seq
        # order, and the order of their turns. A subscriber is queued once however many events
        # it waits for: an event dispatched before its turn joins that turn, one dispatched
        # after it queues it again at the back. So every subscriber gets its events in order,
        # each once, and a new event reaches everyone within one pass.
        self._pending: dict[Subscriber, list[Record] | tuple[Record]] = {}
        self._turns: deque[Subscriber] = deque()
        self._handing_out = False
        # When the last slice of the fan-out ended (None: the fan-out was idle since).
        self._slice_end: float | None = None
        # Turns queued and taken so far, and per event in hand (when it was dispatched, how
        # many turns had been queued then): it has reached everyone once those are all taken.
        self._queued = 0
        self._taken = 0
        self._marks: deque[tuple[float, int]] = deque()
        self.delivered = 0  # events handed to subscribers (one per event and subscriber)
        self.handed = 0     # hand-overs: a subscriber's turn, one write for all its events
        # Hears how long each event took to reach every subscriber here (seconds), once per
        # event (metrics).
        self.on_fanout: Callable[[float], None] | None = None

    async def start(self) -> None:
        if not self.started:
            self.last_seq = await self.log.latest_seq()
            self.started = True

    # --- subscriptions -----------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        for name in channels:
            self.channels.setdefault(name, set()).add(subscriber)

    def unsubscribe(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        for name in channels:
            subs = self.channels.get(name)
            if subs is not None:
                subs.discard(subscriber)
                if not subs:
                    del self.channels[name]
                    self._previous.pop(name, None)

    # --- intake ------------------------------------------------------------------------------

    def on_event(self, event: dict) -> None:
        seq = event["seq"]
        if not self.started:
            # The log's position is not known yet (database down at start): begin here.
            self.started = True
            self.last_seq = seq - 1
        if seq <= self.last_seq:
            return  # already delivered (our own event echoed back by Redis, or a replay)
        if seq == self.last_seq + 1:
            self._dispatch(Record(event))
            self._drain_ahead()
            return
        self._ahead[seq] = event
        if self._catch_up is None or self._catch_up.done():
            self._catch_up = asyncio.get_running_loop().create_task(self._fill_gap())

    def _drain_ahead(self) -> None:
        while self._ahead:
            event = self._ahead.pop(self.last_seq + 1, None)
            if event is None:
                for seq in [s for s in self._ahead if s <= self.last_seq]:
                    del self._ahead[seq]
                return
            self._dispatch(Record(event))

    async def _fill_gap(self) -> None:
        # Give an out-of-order event from another worker a moment to arrive on its own.
        await asyncio.sleep(0.02)
        while self._ahead:
            self._drain_ahead()
            if not self._ahead:
                return
            first_ahead = min(self._ahead)
            try:
                missing = await self.log.read(None, self.last_seq, first_ahead - 1)
            except Exception as exc:
                log.warning("could not read missing events from the log: %s", exc)
                await asyncio.sleep(1)
                continue
            for event in missing:
                if event["seq"] == self.last_seq + 1:
                    self._dispatch(Record(event))
            if not missing or self.last_seq < first_ahead - 1:
                # Purged before we could read them: nothing left to wait for.
                log.warning("events %s..%s are gone from the log", self.last_seq + 1,
                            first_ahead - 1)
                self.last_seq = first_ahead - 1

    async def poll_log(self) -> int:
        """Reads whatever the log has past what we delivered (when Redis cannot tell us)."""
        events = await self.log.read(None, self.last_seq, None, REPLAY_BATCH)
        for event in events:
            self.on_event(event)
        return len(events)

    def _dispatch(self, record: Record) -> None:
        self.last_seq = record.seq
        self.recent.append(record)
        subscribers = self.channels.get(record.channel)
        if not subscribers:
            self._previous.pop(record.channel, None)
            return
        # Compressed after the channel's previous event for peers that inflated that one last
        # (realtime/deflate.py): the JSON is needed by every subscriber anyway.
        record.previous = self._previous.get(record.channel)
        self._previous[record.channel] = record.json
        # The subscribers of this moment: whoever subscribes from now on has this event
        # through its replay.
        pending = self._pending
        turns = self._turns
        before = len(turns)
        if not pending:
            # Nothing waiting (the usual case): built in C, one tuple shared by everyone.
            pending.update(dict.fromkeys(subscribers, (record,)))
            turns.extend(subscribers)
        else:
            # A dict lookup and an append per subscriber (about 0.1 µs, a small share of its
            # send); the shared tuple becomes a list of a subscriber's own.
            for subscriber in subscribers:
                waiting = pending.get(subscriber)
                if waiting is None:
                    pending[subscriber] = [record]
                    turns.append(subscriber)
                elif type(waiting) is tuple:
                    pending[subscriber] = [*waiting, record]
                else:
                    waiting.append(record)
        self._queued += len(turns) - before
        self._marks.append((time.perf_counter(), self._queued))
        if not self._handing_out:
            self._handing_out = True
            self._hand_out()  # nothing under way: the first slice goes out at once

    def pending_events(self) -> int:
        """Events (one per subscriber) dispatched but not yet handed over."""
        return sum(len(records) for records in self._pending.values())

    def _hand_out(self) -> None:
        pending = self._pending
        turns = self._turns
        clock = self._clock
        start = clock()
        budget = FANOUT_SLICE
        if self._slice_end is not None:
            budget = min(max(budget, start - self._slice_end), FANOUT_SLICE_MAX)
        deadline = start + budget
        delivered = handed = 0
        popleft, pop = turns.popleft, pending.pop
        while True:
            batch = min(FANOUT_BATCH, len(turns))
            for _ in range(batch):
                subscriber = popleft()
                records = pop(subscriber)
                try:
                    subscriber.deliver(records)
                except Exception:
                    log.exception("delivery to a subscriber failed")
                delivered += len(records)
            handed += batch
            if not turns or clock() >= deadline:
                break
        self.delivered += delivered
        self.handed += handed
        self._taken += handed
        marks = self._marks
        while marks and marks[0][1] <= self._taken:
            dispatched, _ = marks.popleft()
            if self.on_fanout is not None:
                self.on_fanout(time.perf_counter() - dispatched)
        if turns:
            self._slice_end = clock()
            asyncio.get_running_loop().call_soon(self._hand_out)
        else:
            self._slice_end = None
            self._handing_out = False

    def forget_before(self, oldest_seq: int | None) -> None:
        """Keeps the in-memory window consistent with the log after retention purged it."""
        if oldest_seq is None:
            return
        while self.recent and self.recent[0].seq < oldest_seq:
            self.recent.popleft()

    # --- replay ------------------------------------------------------------------------------

    async def check_cursor(self, since: int, epoch: str | None = None) -> None:
        """cursor_expired (410) unless the log still holds everything after `since`: the cursor
        is from this log's epoch, not ahead of its newest event, and not older than retention."""
        current = self.log.epoch
        if epoch is not None and current is not None and epoch != current:
            raise await self.expired_error(
                f"the cursor is from epoch {epoch}; the log's is {current}")
        if since > self.last_seq:
            # This process may lag the log by a few ms (another worker's newest event): only
            # the log itself can say the cursor is ahead of it. The event `since` exists
            # unless it is ahead (retention keeps the newest); one lookup by _id, where the
            # newest seq would be a scan on FerretDB.
            if not await self.log.events_read.find_one({"_id": since}, {"_id": 1}):
                raise await self.expired_error(
                    f"since {since} is ahead of the newest event of this log")
            return
        if self.recent and since >= self.recent[0].seq - 1:
            return
        oldest = await self.log.oldest_seq()
        if oldest is not None and since < oldest - 1:
            raise await self.expired_error(
                f"events after {since} are no longer retained; the oldest is {oldest}", oldest)

    async def expired_error(self, message: str, oldest: int | None = None) -> ApiError:
        if oldest is None:
            oldest = await self.log.oldest_seq()
        oldest = oldest or 0
        return ApiError(410, "cursor_expired", message,
                        details=[{"loc": ["since"], "msg": message, "oldest_seq": oldest,
                                  "epoch": self.log.epoch}])

    # --- a log replaced under us ---------------------------------------------------------------

    async def watch_log(self) -> bool:
        """Notices a log that was replaced (another epoch: a new or restored database) or rolled
        back (its newest event is older than one already delivered). Every subscriber then gets
        cursor_expired and the hub starts over at the log's position. True if that happened."""
        before = self.log.epoch
        epoch = await self.log.load_epoch()
        if epoch == before and not await self._history_diverged():
            return False
        latest = await self.log.latest_seq()
        if epoch == before:
            # Rolled back (a backup restored): the seqs after `latest` will be reused for other
            # events, so this is another history and gets another epoch.
            epoch = await self.log.new_epoch(before)
        log.warning("the event log was replaced (epoch %s → %s, newest seq %s, delivered %s); "
                    "every subscriber resumes from scratch", before, epoch, latest, self.last_seq)
        self.reset(latest, await self.log.oldest_seq() or 0)
        return True

    async def _history_diverged(self) -> bool:
        """Whether the log no longer holds the last event this hub delivered, as delivered.
        One lookup by _id (the log's newest seq would be a scan on FerretDB: 2-3 s at 50,000
        events, measured). Retention always keeps the newest event, so a missing one means
        the log was rolled back."""
        if not self.last_seq:
            return False
        doc = await self.log.events_read.find_one({"_id": self.last_seq},
                                                  {"type": 1, "channel": 1, "cid": 1})
        if doc is None:
            return True
        mine = self.recent[-1].event if self.recent else None
        return mine is not None and mine["seq"] == self.last_seq and (
            doc["type"], doc["channel"]) != (mine["type"], mine["channel"])

    def reset(self, latest: int, oldest: int) -> None:
        self.last_seq = latest
        self.recent.clear()
        self._ahead.clear()
        self._previous.clear()
        self._pending.clear()
        self._turns.clear()
        self._marks.clear()
        self._taken = self._queued
        subscribers: set[Subscriber] = set()
        for subs in self.channels.values():
            subscribers.update(subs)
        self.channels = {}
        for subscriber in subscribers:
            try:
                subscriber.expire(self.log.epoch, oldest)
            except Exception:
                log.exception("a subscriber failed to expire")

    def in_memory(self, since: int, epoch: str | None = None) -> bool:
        """True when `since` is a good cursor (check_cursor would pass it) and every event after
        it is still in memory: a resume that needs no database and no await."""
        current = self.log.epoch
        if epoch is not None and current is not None and epoch != current:
            return False
        return since <= self.last_seq and bool(self.recent) and since >= self.recent[0].seq - 1

    def replay_recent(self, channels, after: int, up_to: int, limit: int | None = None):
        """`replay` from memory: None unless memory holds everything after `after`."""
        if not self.recent or self.recent[0].seq > after + 1:
            return None
        wanted = set(channels)
        out: list[Record] = []
        start = max(after + 1 - self.recent[0].seq, 0)
        for record in islice(self.recent, start, None):
            if record.seq > up_to:
                break
            if record.channel in wanted:
                out.append(record)
                if limit is not None and len(out) >= limit:
                    break
        return out

    async def replay(self, channels, after: int, up_to: int, limit: int | None = None):
        """Records on `channels` with after < seq <= up_to, in order (memory first, then the log)."""
        out = self.replay_recent(channels, after, up_to, limit)
        if out is not None:
            return out
        wanted = set(channels)
        out = []
        cursor = after
        while cursor < up_to:
            batch = REPLAY_BATCH if limit is None else min(REPLAY_BATCH, limit - len(out))
            events = await self.log.read(wanted, cursor, up_to, batch)
            out.extend(Record(event) for event in events)
            if len(events) < batch or (limit is not None and len(out) >= limit):
                break
            cursor = events[-1]["seq"]
        return out
