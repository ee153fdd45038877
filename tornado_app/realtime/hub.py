"""The hub: channel → subscribers in this process, fed in seq order, with no gap and no duplicate.

Events reach the hub from this process's own writes and, with several workers, from Redis. The
log's seq has no gaps, so the hub always knows whether it has missed something: an event that
arrives ahead of the next expected seq is held while the missing ones are read from the log.
Each event is serialized once; a subscriber's `deliver(record)` only writes prebuilt bytes.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Protocol

from ..core.errors import ApiError
from .record import Record

log = logging.getLogger(__name__)

REPLAY_BATCH = 1000
# Subscribers served per turn of the event loop: one event to tens of thousands of subscribers
# is one send each (about 7 µs), so it is shared out over several turns and the loop keeps
# answering other requests meanwhile, instead of stalling for the whole fan-out. A request takes
# several turns of its own, so each turn is kept to a few ms (measured over 19,000 subscribers:
# 2,000 per turn, /health waited up to 103 ms during the fan-out; 500 per turn, 37 ms; the
# fan-out itself took as long either way).
FANOUT_SHARE = 500


class Subscriber(Protocol):
    """What the hub delivers to: one connection's subscription (realtime.subscription.Subscription,
    whatever the transport)."""

    def deliver(self, record: Record) -> None:
        """Takes one event of a subscribed channel, in seq order; must not block or raise."""

    def expire(self, epoch: str, oldest_seq: int) -> None:
        """The log was replaced: every cursor is void, and the hub has dropped the subscriber."""


class Hub:
    def __init__(self, event_log, memory: int = 20000):
        self.log = event_log
        self.last_seq = 0
        self.started = False
        self.channels: dict[str, set[Subscriber]] = {}
        # The newest events, contiguous in seq, so most replays never touch the database.
        self.recent: deque[Record] = deque(maxlen=memory)
        self._ahead: dict[int, dict] = {}
        self._catch_up: asyncio.Task | None = None
        # Events still being handed out: (record, its subscribers when it was dispatched, how
        # many of them have it, when it was dispatched). Strictly in seq order: a share of the
        # next event only starts once every subscriber of the previous one has it.
        self._outbox: deque[tuple[Record, tuple[Subscriber, ...], int, float]] = deque()
        self.delivered = 0
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
        if subscribers:
            # A snapshot: whoever subscribes from now on has this event through its replay, and
            # a delivery may drop a slow subscriber, which changes the set.
            self._outbox.append((record, tuple(subscribers), 0, time.perf_counter()))
            if len(self._outbox) == 1:
                self._hand_out()  # nothing ahead of it: the first share goes out at once

    def _hand_out(self) -> None:
        budget = FANOUT_SHARE
        outbox = self._outbox
        while outbox and budget > 0:
            record, subscribers, done, dispatched = outbox[0]
            end = min(done + budget, len(subscribers))
            for index in range(done, end):
                try:
                    subscribers[index].deliver(record)
                except Exception:
                    log.exception("delivery to a subscriber failed")
            self.delivered += end - done
            budget -= end - done
            if end < len(subscribers):
                outbox[0] = (record, subscribers, end, dispatched)
            else:
                outbox.popleft()
                if self.on_fanout is not None:
                    self.on_fanout(time.perf_counter() - dispatched)
        if outbox:
            asyncio.get_running_loop().call_soon(self._hand_out)

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
        self._outbox.clear()
        subscribers: set[Subscriber] = set()
        for subs in self.channels.values():
            subscribers.update(subs)
        self.channels = {}
        for subscriber in subscribers:
            try:
                subscriber.expire(self.log.epoch, oldest)
            except Exception:
                log.exception("a subscriber failed to expire")

    async def replay(self, channels, after: int, up_to: int, limit: int | None = None):
        """Records on `channels` with after < seq <= up_to, in order (memory first, then the log)."""
        wanted = set(channels)
        out: list[Record] = []
        if self.recent and self.recent[0].seq <= after + 1:
            start = max(after + 1 - self.recent[0].seq, 0)
            for record in islice(self.recent, start, None):
                if record.seq > up_to:
                    break
                if record.channel in wanted:
                    out.append(record)
                    if limit is not None and len(out) >= limit:
                        break
            return out
        cursor = after
        while cursor < up_to:
            batch = REPLAY_BATCH if limit is None else min(REPLAY_BATCH, limit - len(out))
            events = await self.log.read(wanted, cursor, up_to, batch)
            out.extend(Record(event) for event in events)
            if len(events) < batch or (limit is not None and len(out) >= limit):
                break
            cursor = events[-1]["seq"]
        return out
