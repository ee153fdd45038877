"""An event log held in a list, with the part of EventLog's interface (tornado_app/realtime/log.py)
that the hub reads: the unit tests of the hub and the subscription seam run on it, with no
database. Seqs are gap-free from 1, as in the real log; retention is `purge_before`.

A test can hold reads (`hold_reads()`): a read then waits until `release_reads()`, so events can
be published while a replay is in the middle of reading; or set `during_read` to a function that
every read calls while it is in progress.
"""

import asyncio

# Bound here: a test may replace asyncio.sleep to watch the hub's own waits.
_sleep = asyncio.sleep


class MemoryLog:
    def __init__(self, epoch: str = "epoch-1"):
        self.stored_epoch = epoch  # the one in the database (event_log_meta)
        self.epoch = epoch  # the one this process loaded, as EventLog.epoch
        self.events: list[dict] = []  # in seq order; purged ones are gone from the front
        self.next_seq = 1
        self.reads = 0  # calls of read(): how often the database would have been asked
        self.read_started = asyncio.Event()
        self._gate: asyncio.Event | None = None
        self.fail_reads = False
        self.during_read = None
        # The hub looks single events up by _id through the read pool.
        self.events_read = self

    def append(self, channel: str, type_: str = "thing.created", data=None) -> dict:
        event = {"seq": self.next_seq, "channel": channel, "type": type_,
                 "data": data if data is not None else {"n": self.next_seq},
                 "created_at": "2026-01-01T00:00:00Z"}
        self.next_seq += 1
        self.events.append(event)
        return event

    def purge_before(self, seq: int) -> None:
        self.events = [event for event in self.events if event["seq"] >= seq]

    def hold_reads(self) -> None:
        self._gate = asyncio.Event()
        self.read_started = asyncio.Event()

    def release_reads(self) -> None:
        gate, self._gate = self._gate, None
        if gate is not None:
            gate.set()

    # --- EventLog's interface ------------------------------------------------------------------

    async def latest_seq(self) -> int:
        return self.events[-1]["seq"] if self.events else 0

    async def oldest_seq(self) -> int | None:
        return self.events[0]["seq"] if self.events else None

    async def read(self, channels, after: int, up_to: int | None = None, limit: int = 1000):
        self.reads += 1
        self.read_started.set()
        if self._gate is not None:
            await self._gate.wait()
        await _sleep(0)  # a read always gives the loop a turn, as a database call does
        if self.during_read is not None:
            self.during_read()
        if self.fail_reads:
            raise ConnectionError("the log is unreachable")
        found = [event for event in self.events
                 if event["seq"] > after and (up_to is None or event["seq"] <= up_to)
                 and (channels is None or event["channel"] in channels)]
        return found[:limit]

    async def find_one(self, query: dict, projection=None) -> dict | None:
        for event in self.events:
            if event["seq"] == query["_id"]:
                return {"_id": event["seq"], **event}
        return None

    async def load_epoch(self) -> str:
        self.epoch = self.stored_epoch
        return self.epoch

    async def new_epoch(self, old: str) -> str:
        if self.stored_epoch == old:
            self.stored_epoch = old + "-rolled-back"
        return await self.load_epoch()
