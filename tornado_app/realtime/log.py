"""The durable event log: every change is stored with a deployment-wide seq before delivery.

An event's `_id` is its seq. A worker writes seq = last + 1 and relies on the unique `_id` index:
when another worker took that number first, the insert fails and it retries with the next one.
So seq N is only ever written once N - 1 exists, which keeps the log gap-free in the order it
becomes visible (a reader that has seen N has seen everything below it), on MongoDB and on
FerretDB alike, with no transactions and no read-modify-write of a counter.

Every event also carries the id of the change it reports (`cid`, unique in the log): the outbox
(tornado_app/storage/outbox.py) may offer one change twice (a request and the recovery sweep, or two
workers), and the second offer finds the first instead of storing a second event.

The log has an epoch, a random id made once with the log (in `event_log_meta`). A database
restored from a backup or replaced keeps or changes it with the events, so a client cursor from
another epoch is known to point into a different history.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING
from pymongo.errors import DuplicateKeyError, ExecutionTimeout

from ..core.clock import iso, utcnow

log = logging.getLogger(__name__)


META_ID = "event_log"

# Told of every event this process stores, in seq order: the hub (Hub.on_event) and, with several
# workers, the Redis fan-out (RedisFanout.publish). Must not block or raise.
EventListener = Callable[[dict], None]


def event_public(doc: dict) -> dict:
    return {"seq": doc["_id"], "channel": doc["channel"], "type": doc["type"],
            "data": doc["data"], "created_at": iso(doc["created_at"])}


class EventLog:
    def __init__(self, db, retention: int, timeout: float = 3.0):
        self.events = db["events"]
        self.events_read = db.read("events")
        self.retention = retention
        self.timeout = timeout
        self._last_seq: int | None = None
        # Serializes this process's writes, so its own events are stored (and handed on) in
        # seq order; other processes are kept in order by the unique index.
        self._lock = asyncio.Lock()
        self._listeners: list[EventListener] = []
        self.published = 0
        # When this process last stored an event (the loop's clock; -inf: never): how busy the
        # write path is (the outbox takes stored entries out only while it is quiet).
        self.last_published = float("-inf")
        self.meta = db["event_log_meta"]
        self.epoch: str | None = None

    async def load_epoch(self) -> str:
        """The log's epoch, made by whichever process asks first (the unique _id decides)."""
        doc = await self.meta.find_one({"_id": META_ID})
        if doc is None:
            try:
                await self.meta.insert_one({"_id": META_ID, "epoch": uuid.uuid4().hex,
                                            "created_at": utcnow()})
            except DuplicateKeyError:
                pass
            doc = await self.meta.find_one({"_id": META_ID})
        if doc["epoch"] != self.epoch:
            self._last_seq = None  # another log: its position is read again
        self.epoch = doc["epoch"]
        return self.epoch

    async def new_epoch(self, old: str) -> str:
        """Gives the log a new epoch (it was rolled back), unless another process did first."""
        await self.meta.update_one({"_id": META_ID, "epoch": old},
                                   {"$set": {"epoch": uuid.uuid4().hex}})
        return await self.load_epoch()

    def add_listener(self, callback: EventListener) -> None:
        """callback(event_dict) is called, in seq order, for every event this process stores."""
        self._listeners.append(callback)

    async def latest_seq(self) -> int:
        doc = await self.events.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
        return doc["_id"] if doc else 0

    async def oldest_seq(self) -> int | None:
        # A plain read: on FerretDB, through the read pool, not queued on the one write
        # connection (it scans the log there: 1.2 s at 20,000 events, measured).
        doc = await self.events_read.find_one({}, {"_id": 1}, sort=[("_id", ASCENDING)])
        return doc["_id"] if doc else None

    async def retained_from(self):
        """The change id (`cid`) of the oldest retained event when retention has removed older
        ones; None while the log still holds its first event (seq 1).

        A change whose cid sorts below it and that the log does not hold may have had its event
        stored and then removed by retention: cids are ObjectIds, made before their event is
        stored, so they sort by time (exactly, within one process)."""
        doc = await self.events_read.find_one({}, {"_id": 1, "cid": 1}, sort=[("_id", ASCENDING)])
        if doc is None or doc["_id"] <= 1:
            return None
        return doc.get("cid")

    async def find_change(self, cid) -> dict | None:
        """The event already stored for change `cid`, if any."""
        doc = await self.events.find_one({"cid": cid})
        return event_public(doc) if doc else None

    async def publish(self, channel: str, type_: str, data: dict, cid=None) -> dict | None:
        """Stores the event of change `cid`; None when that change has its event already."""
        if cid is None:
            cid = ObjectId()
        # Waiting for the lock is bounded like any database call: in an outage every holder
        # spends DB_TIMEOUT failing, and writes queued behind it must not wait n times that.
        try:
            await asyncio.wait_for(self._lock.acquire(), self.timeout)
        except asyncio.TimeoutError:
            raise ExecutionTimeout("timed out waiting to write to the event log") from None
        try:
            if self._last_seq is None:
                self._last_seq = await self.latest_seq()
            while True:
                doc = {"_id": self._last_seq + 1, "channel": channel, "type": type_,
                       "data": data, "created_at": utcnow(), "cid": cid}
                try:
                    await self.events.insert_one(doc)
                except DuplicateKeyError:
                    # Either another worker took this seq, or this change is in the log already.
                    if await self.events.find_one({"cid": cid}, {"_id": 1}):
                        return None
                    self._last_seq = await self.latest_seq()
                    continue
                self._last_seq = doc["_id"]
                self.published += 1
                self.last_published = asyncio.get_running_loop().time()
                break
        finally:
            self._lock.release()
        event = event_public(doc)
        for callback in self._listeners:
            try:
                callback(event)
            except Exception:
                log.exception("event listener failed for seq %s", event["seq"])
        return event

    async def read(self, channels, after: int, up_to: int | None = None, limit: int = 1000):
        """Events after seq `after` (and at most `up_to`), in seq order; all channels if None."""
        seq = {"$gt": after}
        if up_to is not None:
            seq["$lte"] = up_to
        query = {"_id": seq}
        if channels is not None:
            query["channel"] = {"$in": list(channels)}
        docs = await self.events_read.find(query).sort("_id", ASCENDING).limit(limit).to_list(limit)
        return [event_public(doc) for doc in docs]

    async def purge(self) -> int:
        """Removes events past retention, always keeping the newest so seq never restarts."""
        # Read through the read pool: on FerretDB it scans the log (1.2 s at 20,000 events,
        # measured), which on the one write connection held every write meanwhile.
        doc = await self.events_read.find_one({}, {"_id": 1}, sort=[("_id", DESCENDING)])
        latest = doc["_id"] if doc else 0
        cutoff = utcnow() - timedelta(seconds=self.retention)
        done = await self.events.delete_many({"created_at": {"$lt": cutoff}, "_id": {"$lt": latest}})
        return done.deleted_count
