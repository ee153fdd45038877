"""The outbox: a change and its event are one atomic step, on MongoDB and FerretDB alike.

Neither FerretDB 1.x nor a standalone MongoDB has transactions or change streams, so a change
and its event cannot be written together to two collections. Instead the single-document write
that makes a change also appends the change's pending event to that document's `_outbox`
array. The pending event is then stored in the log (`EventLog.publish`, under the change's
unique `cid`, so a change offered twice is stored once) and popped from the document.

- The request that made the change does this at once (`flush`), so the normal path costs one
  extra write, the pop. If it cannot (the database went away, the process died), the entry stays
  in the document and the recovery sweep stores it later. Either way every stored change gets
  exactly one event. The sweep reads every pending document at start (a process that died
  before left them); after that, every few seconds, the documents this process failed to flush,
  and, on MongoDB, every pending document again (the `outbox` index serves that query; another
  worker may have died). FerretDB serves no such query from an index (measured: 1.1-2.2 s to
  scan 20,000 posts), and there is only one worker on it, so it is only scanned at start.
- Entries are stored in the order they were appended, and a flusher stores every entry ahead
  of its own first, so the events of one resource are in the log in the order of its versions.
- A deleted document stays as a tombstone (`_gone: true`) until its event is stored; reads skip
  tombstones (`LIVE`). The flush then removes it.
- Values that span two documents are completed by the same entries: a comment's entry carries
  the `±1` for its post's `comment_count`, applied at most once (the post remembers the change
  in `_counted` until the entry is gone); a post's deletion entry removes the post's comments.
- A write whose outcome is unknown (it timed out after it was sent: the database may still
  apply it when it resumes) is fenced (`fence_insert`, `fence_update`): a marker is written that
  makes the original fail if it ever arrives late. Once the fence is in, the answer is certain:
  either the original was applied before it (success) or it never will be (503, nothing changed).
"""

import asyncio
import logging
from datetime import timedelta

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import (DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError,
                            WaitQueueTimeoutError)

from .clock import utcnow
from .db import is_unavailable
from .errors import service_unavailable

log = logging.getLogger(__name__)

# Reads never show tombstones or fences: every query of a resource includes this.
LIVE = {"_gone": {"$ne": True}}
# Documents with pending events: `_outbox.cid` is indexed, and ObjectIds sort above MinKey/null.
PENDING = {"_outbox.cid": {"$gte": ObjectId("0" * 24)}}
SWEEP_INTERVAL = 5.0
# Placeholders of fenced inserts are removed this often (a scan on FerretDB).
PLACEHOLDER_PURGE_INTERVAL = 3600.0
# A placeholder that fenced off an insert is kept this long; the late original, if it ever
# arrives, arrives within seconds of the database resuming.
FENCE_KEEP = timedelta(hours=1)
# How long a request may spend learning the outcome of a write that timed out.
FENCE_ATTEMPTS = 3


class OutcomeUnknown(Exception):
    """A write timed out and the database could not be asked whether it happened."""


def entry(channel: str, type_: str, data: dict | None = None, cid=None, **effects) -> dict:
    """A pending event. `data` None: the document's public form when the event is stored."""
    return {"cid": cid or ObjectId(), "channel": channel, "type": type_, "data": data, **effects}


class Resource:
    """How the outbox treats one collection: its public form and its cross-document effects."""

    def __init__(self, name: str, render, before_publish=None, after_publish=None):
        self.name = name
        self.render = render
        # before_publish(outbox, doc, entry) -> bool: False when the change is void (the
        # document is removed and no event is stored).
        self.before_publish = before_publish
        self.after_publish = after_publish


class Outbox:
    def __init__(self, db, events):
        self.db = db
        self.events = events
        self.resources: dict[str, Resource] = {}
        # (collection, _id) → [lock, users]: one flusher per document in this process at a time
        # (only to save work: a second flusher's offers are found in the log and skipped).
        self._locks: dict[tuple, list] = {}
        self._task: asyncio.Task | None = None
        self._stopping = False
        # (collection, _id) of documents whose flush failed here: retried by the sweep.
        self._retry: set[tuple] = set()
        # Whether the periodic sweep reads every pending document (an index serves it).
        self.full_sweeps = not getattr(db, "is_ferretdb", False)
        self.recovered = 0  # events stored by the sweep rather than by their request
        self.failures = 0

    def register(self, resource: Resource) -> None:
        self.resources[resource.name] = resource

    # --- storing pending events --------------------------------------------------------------

    async def flush(self, name: str, doc: dict) -> bool:
        """Stores the pending events of `doc` (as the writer saw it), in order. Returns False
        when the change turned out void (and the document is gone).

        Called by the request that made the change: a failure here does not undo the change, so
        it is logged and left to the sweep, and the request still answers success."""
        try:
            return await self._flush(name, doc)
        except Exception as exc:
            self.failures += 1
            self._retry.add((name, doc["_id"]))
            if not is_unavailable(exc):
                log.exception("could not store the events of %s %s; the sweep will retry",
                              name, doc["_id"])
            else:
                log.warning("could not store the events of %s %s (%s); the sweep will retry",
                            name, doc["_id"], exc)
            return True

    async def _flush(self, name: str, doc: dict) -> bool:
        key = (name, doc["_id"])
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = [asyncio.Lock(), 0]
        held[1] += 1
        try:
            async with held[0]:
                return await self._store_entries(self.resources[name], doc)
        finally:
            held[1] -= 1
            if not held[1]:
                del self._locks[key]

    async def _store_entries(self, resource: Resource, doc: dict) -> bool:
        collection = self.db[resource.name]
        entries = doc.get("_outbox") or []
        done = []
        for item in entries:
            if resource.before_publish is not None and \
                    not await resource.before_publish(self, doc, item):
                await collection.delete_one({"_id": doc["_id"]})
                return False
            data = item["data"]
            if data is None:
                data = resource.render(doc)
            await self.events.publish(item["channel"], item["type"], data, item["cid"])
            if resource.after_publish is not None:
                await resource.after_publish(self, doc, item)
            done.append(item)
        if doc.get("_gone"):
            await collection.delete_one({"_id": doc["_id"], "_gone": True})
        elif done:
            # Popped from the head, each only if it is still the head: entries appended since
            # stay for their own writer (or the sweep).
            await collection.bulk_write(
                [UpdateOne({"_id": doc["_id"], "_outbox.0.cid": item["cid"]},
                           {"$pop": {"_outbox": -1}}) for item in done], ordered=True)
        return True

    async def sweep(self) -> int:
        """Stores every pending event still in the database; returns how many documents."""
        count = 0
        for resource in list(self.resources.values()):
            async for doc in self.db.read(resource.name).find(PENDING).sort("_id", 1):
                if doc.get("_outbox"):
                    await self._flush(resource.name, doc)
                    count += 1
        self.recovered += count
        return count

    async def retry_failed(self) -> int:
        """Stores the pending events of the documents whose flush failed in this process."""
        count = 0
        for name, oid in sorted(self._retry, key=str):
            doc = await self.db[name].find_one({"_id": oid})
            if doc is not None and doc.get("_outbox"):
                await self._flush(name, doc)
                count += 1
            self._retry.discard((name, oid))
        self.recovered += count
        return count

    async def purge_placeholders(self) -> None:
        """Placeholders of fenced inserts, once no late write can arrive any more."""
        for resource in list(self.resources.values()):
            await self.db[resource.name].delete_many(
                {"_gone": True, "_fence": True, "_gone_at": {"$lt": utcnow() - FENCE_KEEP}})

    # --- the recovery sweep ------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        # The flag as well as the cancel: a cancel that lands just as a driver call completes
        # can be lost, and the loop must end all the same.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        swept = False
        purged_at = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                found = await self.retry_failed()
                if not swept or self.full_sweeps:
                    found += await self.sweep()
                    swept = True
                if found:
                    log.info("recovery sweep stored the pending events of %d documents", found)
                if loop.time() - purged_at > PLACEHOLDER_PURGE_INTERVAL:
                    await self.purge_placeholders()
                    purged_at = loop.time()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("recovery sweep failed, will retry: %s", exc)
            await asyncio.sleep(SWEEP_INTERVAL)

    async def existing(self, name: str, doc: dict) -> dict | None:
        """After a DuplicateKeyError on `doc`'s `_id`: the document stored by an earlier attempt
        of the same operation (its events stored now), or None when it is gone since."""
        collection = self.db[name]
        found = await collection.find_one({"_id": doc["_id"]})
        if found is not None and found.get("_fence"):
            # An earlier attempt was fenced off: this one takes the place.
            found = await collection.find_one_and_replace(
                {"_id": doc["_id"], "_fence": True}, doc,
                return_document=ReturnDocument.AFTER) or await collection.find_one(
                {"_id": doc["_id"]})
        if found is None or found.get("_gone"):
            return None
        if not await self.flush(name, found):
            return None
        return found

    # --- writes whose outcome is unknown -----------------------------------------------------

    async def insert(self, name: str, doc: dict) -> None:
        """insert_one that never leaves the outcome unknown: raises DuplicateKeyError, a 503 (the
        document is certainly not stored and never will be) or OutcomeUnknown."""
        collection = self.db[name]
        try:
            await collection.insert_one(doc)
        except DuplicateKeyError:
            raise
        except PyMongoError as exc:
            if not _maybe_applied(exc):
                raise
            try:
                if await self._fence_insert(collection, doc):
                    return  # the original got there first
            except OutcomeUnknown:
                self._retry.add((name, doc["_id"]))
                raise
            raise service_unavailable() from exc

    async def _fence_insert(self, collection, doc: dict) -> bool:
        """True if `doc` was stored; False once it is certain it never will be."""
        placeholder = {"_id": doc["_id"], "_gone": True, "_fence": True, "_gone_at": utcnow()}
        # Unique fields other than _id need a value that cannot collide.
        if "sku" in doc:
            placeholder["sku"] = f"\x00fence:{doc['_id']}"
        for _ in range(FENCE_ATTEMPTS):
            try:
                await collection.insert_one(placeholder)
                return False
            except DuplicateKeyError:
                existing = await collection.find_one({"_id": doc["_id"]}, {"_fence": 1})
                if existing is None:
                    continue  # a duplicate on another unique field: try again
                return not existing.get("_fence")
            except PyMongoError as exc:
                if not is_unavailable(exc):
                    raise
        raise OutcomeUnknown(f"could not learn whether {doc['_id']} was stored")

    async def update(self, name: str, query: dict, update: dict, cid) -> dict | None:
        """find_one_and_update (after) whose update appends the entry `cid`; never leaves the
        outcome unknown. None: nothing matched."""
        collection = self.db[name]
        query = {**query, "_fences": {"$ne": cid}}
        try:
            return await collection.find_one_and_update(query, update,
                                                        return_document=ReturnDocument.AFTER)
        except PyMongoError as exc:
            if not _maybe_applied(exc):
                raise
            try:
                doc = await self._fence_update(collection, query["_id"], cid)
            except OutcomeUnknown:
                self._retry.add((name, query["_id"]))
                raise
            if doc is None:
                raise service_unavailable() from exc
            return doc

    async def _fence_update(self, collection, oid, cid) -> dict | None:
        """The document if the update `cid` was applied; None once it is certain it never will."""
        for _ in range(FENCE_ATTEMPTS):
            try:
                doc = await collection.find_one_and_update(
                    {"_id": oid}, {"$push": {"_fences": cid}},
                    return_document=ReturnDocument.AFTER)
                if doc is None:
                    return None
                if any(item["cid"] == cid for item in doc.get("_outbox") or ()):
                    return doc
                if await self.events.find_change(cid):
                    return doc  # applied, and its event stored and popped already
                return None
            except PyMongoError as exc:
                if not is_unavailable(exc):
                    raise
        raise OutcomeUnknown(f"could not learn whether change {cid} was applied")


def _maybe_applied(exc: BaseException) -> bool:
    """A write that failed this way may still have reached the database (one that never left
    the pool's queue or found no server did not)."""
    return is_unavailable(exc) and not isinstance(
        exc, (ServerSelectionTimeoutError, WaitQueueTimeoutError))
