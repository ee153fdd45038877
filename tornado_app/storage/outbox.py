"""The outbox: a change and its event are one atomic step, on MongoDB and FerretDB alike.

Neither FerretDB 1.x nor a standalone MongoDB has transactions or change streams, so a change
and its event cannot be written together to two collections. Instead the single-document write
that makes a change also appends the change's pending event to that document's `_outbox`
array. The pending event is then stored in the log (`EventLog.publish`, under the change's
unique `cid`, so a change offered twice is stored once).

- The request that made the change stores its event at once (`flush`). If it cannot (the
  database went away, the process died), the entry stays in the document and the recovery
  sweep stores it later: at start every pending document (a process that died left them);
  then every few seconds the documents this process failed to flush and, on MongoDB, every
  pending document again (the `outbox` index serves that; another worker may have died).
- Stored entries are taken out of their documents later, in batches (`$pullAll` of the exact
  entries, one command per collection). On FerretDB 1.24 every update reads the whole
  collection (only inserts are O(1)), so one more update per request made POST /api/v1/posts
  0.13x as fast (bench/writes.py, with the pop on the request's path), and a batch every half
  second still 0.39x (each batch blocks the one write connection while it scans); so on
  MongoDB (served by the _id index) a batch goes every half second, and on FerretDB the
  entries are taken out one document per command, only while no event is being stored
  (`_clear_one_by_one`). Until then a stored entry is known in memory (`_stored`) and not
  offered again; one left in its document (a server that never goes quiet keeps at most
  STORED_MEMORY documents to clear) is harmless: a later flush or the sweep finds its event in
  the log. An entry the
  log does not hold that is older than the oldest retained event counts as stored: a process
  that died before taking it out stayed down past the retention, which removed its event.
- Entries are stored in the order they were appended, and a flusher stores every entry ahead
  of its own first, so the events of one resource are in the log in the order of its versions.
- A deleted document stays as a tombstone (`_gone: true`) until its event is stored; reads skip
  tombstones. Its deletion entry is the last that counts: a change that lands on a tombstone
  is void, answered 404, and gets no event. The flush then removes the document.
- Values that span two documents are completed by the same entries: a comment's entry carries
  the `±1` for its post's `comment_count`, applied once (the post remembers the change in
  `_counted` for a while); a post's deletion entry removes the post's comments.
- A write whose outcome is unknown (it timed out after it was sent: the database may still
  apply it when it resumes) is resolved before the request answers. An insert is fenced: a
  placeholder with the same `_id` makes the original fail if it arrives late, so the answer is
  then certain. An update is looked for; when it cannot be found yet, nothing certain can be
  said, and the request is closed unanswered (`OutcomeUnknown`) rather than answered 503, which
  would claim that nothing changed; if the update lands later, its event follows.
"""

import asyncio
import logging
from collections import OrderedDict
from datetime import timedelta

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import (DuplicateKeyError, InvalidOperation, PyMongoError,
                            ServerSelectionTimeoutError, WaitQueueTimeoutError)

from ..core.clock import utcnow
from .db import is_unavailable
from ..core.errors import not_found, service_unavailable

log = logging.getLogger(__name__)

# Lists never show tombstones or fence placeholders: every list query includes this. A lookup
# by id checks `is_live(doc)` instead, so its query stays `{_id}` (FerretDB serves only that
# shape in SQLite; any other filter decodes every document in Go: 77 ms against 10 ms at 1,000
# posts, bench/filter_cost.py).
LIVE = {"_gone": {"$ne": True}}
# Documents with pending events: `_outbox.cid` is indexed, and ObjectIds sort above MinKey/null.
PENDING = {"_outbox.cid": {"$gte": ObjectId("0" * 24)}}
SWEEP_INTERVAL = 5.0
# is_ferretdb → seconds between batches. On FerretDB a batch stops at the first new event, so
# it is tried often, to find the quiet moments.
CLEAR_INTERVAL = {False: 0.5, True: 1.0}
# On FerretDB: seconds since the log last stored an event before entries are taken out. Tried
# at once (after any stored event), one update held the write connection 130-240 ms at 15,000
# subscribers (FerretDB short of CPU), once a second.
CLEAR_QUIET = 1.0
# The least pause between two of those updates (seconds).
CLEAR_PAUSE = 0.01
# At stop, stored entries are taken out for at most this long (the rest stay, harmless).
STOP_CLEAR_BUDGET = 2.0
# Cids of entries stored lately, so a flush of the same document before its entries are taken
# out does not offer them again (which would cost a lookup in the log).
STORED_MEMORY = 20_000
# A placeholder that fenced off an insert is kept this long; the late original, if it ever
# arrives, arrives within seconds of the database resuming.
FENCE_KEEP = timedelta(hours=1)
PLACEHOLDER_PURGE_INTERVAL = 3600.0
# A write of unknown outcome that lands late lands within this (the database resumed).
RETRY_FOR = 60.0
# Tries at learning the outcome of a write that timed out, each bounded by DB_TIMEOUT.
FENCE_ATTEMPTS = 3


class OutcomeUnknown(Exception):
    """A write timed out and the database could not tell whether it happened."""


def entry(channel: str, type_: str, data: dict | None = None, cid=None, **effects) -> dict:
    """A pending event. `data` None: the document's public form when the event is stored.
    Effects: `gone=True` (a deletion: the last entry that counts), and per resource."""
    return {"cid": cid or ObjectId(), "channel": channel, "type": type_, "data": data, **effects}


def is_live(doc: dict | None) -> bool:
    return doc is not None and not doc.get("_gone")


def voided(doc: dict, cid) -> bool:
    """Whether change `cid` came after the document's deletion (and so never happened)."""
    for item in doc.get("_outbox") or ():
        if item["cid"] == cid:
            return False
        if item.get("gone"):
            return True
    return bool(doc.get("_gone"))


class Resource:
    """How the outbox treats one collection: its public form and its cross-document effects."""

    def __init__(self, name: str, render, before_publish=None, after_cleared=None):
        self.name = name
        self.render = render
        # before_publish(outbox, doc, entry) -> bool: False when the change is void (the
        # document is removed and no event is stored).
        self.before_publish = before_publish
        # after_cleared(entries): a batch of stored entries was taken out of their documents.
        self.after_cleared = after_cleared


class Outbox:
    def __init__(self, db, events):
        self.db = db
        self.events = events
        self.resources: dict[str, Resource] = {}
        # (collection, _id) → [lock, users]: one flusher per document in this process at a time.
        self._locks: dict[tuple, list] = {}
        self._stored: OrderedDict = OrderedDict()
        # collection → {_id: [entries stored, to take out of the document]}
        self._to_clear: dict[str, dict] = {}
        # (collection, _id) → until when: documents whose flush failed here, or whose write had
        # an unknown outcome (it may land late), retried by the sweep meanwhile.
        self._retry: dict[tuple, float] = {}
        # Whether the periodic sweep reads every pending document (an index serves it).
        self.full_sweeps = not getattr(db, "is_ferretdb", False)
        self.per_document = bool(getattr(db, "is_ferretdb", False))
        self.clear_interval = CLEAR_INTERVAL[self.per_document]
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

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
            self._retry_later(name, doc["_id"])
            if is_unavailable(exc) or isinstance(exc, InvalidOperation):
                log.warning("could not store the events of %s %s (%s); the sweep will retry",
                            name, doc["_id"], exc)
            else:
                log.exception("could not store the events of %s %s; the sweep will retry",
                              name, doc["_id"])
            return True

    async def _flush(self, name: str, doc: dict, stored: set | None = None) -> bool:
        key = (name, doc["_id"])
        held = self._locks.get(key)
        if held is None:
            held = self._locks[key] = [asyncio.Lock(), 0]
        held[1] += 1
        try:
            async with held[0]:
                return await self._store_entries(self.resources[name], doc, stored or ())
        finally:
            held[1] -= 1
            if not held[1]:
                del self._locks[key]

    async def _store_entries(self, resource: Resource, doc: dict, stored) -> bool:
        entries = doc.get("_outbox") or []
        # Entries ahead of the writer's own (the last) that this process does not know: another
        # process's, perhaps one that died before taking them out, whose events retention may
        # have removed since. Rare, so the log is asked only then.
        leftovers = [item["cid"] for item in entries[:-1]
                     if item["cid"] not in self._stored and item["cid"] not in stored]
        if leftovers:
            stored = set(stored) | await self._expired(resource, leftovers)
        done = []
        for item in entries:
            cid = item["cid"]
            if cid not in self._stored and cid not in stored:
                if resource.before_publish is not None and \
                        not await resource.before_publish(self, doc, item):
                    await self.db[resource.name].delete_one({"_id": doc["_id"]})
                    return False
                data = item["data"]
                if data is None:
                    data = resource.render(doc)
                await self.events.publish(item["channel"], item["type"], data, cid)
                self._remember(cid)
            done.append(item)
            if item.get("gone"):
                break  # whatever came after the deletion is void
        if doc.get("_gone"):
            await self.db[resource.name].delete_one({"_id": doc["_id"]})
        elif done:
            to_clear = self._to_clear.setdefault(resource.name, {})
            to_clear.setdefault(doc["_id"], []).extend(done)
            if len(to_clear) > STORED_MEMORY:
                del to_clear[next(iter(to_clear))]  # left in its document: harmless
        return True

    async def _expired(self, resource: Resource, cids: list) -> set:
        """Of these changes, which the log does not hold, those older than its oldest retained
        event: counted as stored. An entry stored but not yet taken out when its process died,
        whose event retention has removed since (the process stayed down that long), is no
        longer in the log, and storing it again would give the change a second event."""
        if not cids:
            return set()
        horizon = await self.events.retained_from()
        expired = {cid for cid in cids if horizon is not None and cid < horizon}
        if expired:
            log.warning("%d pending events of %s predate the oldest retained event: not stored "
                        "again", len(expired), resource.name)
        return expired

    def _remember(self, cid) -> None:
        self._stored[cid] = None
        if len(self._stored) > STORED_MEMORY:
            self._stored.popitem(last=False)

    async def clear_stored(self, until_busy: bool = False, budget: float | None = None) -> None:
        """Takes stored entries out of their documents: on MongoDB one command per collection;
        on FerretDB one document per command, stopping (the rest kept for later) after `budget`
        seconds, or when `until_busy` and the log stored an event less than CLEAR_QUIET ago."""
        if self.per_document:
            await self._clear_one_by_one(until_busy, budget)
            return
        batches, self._to_clear = self._to_clear, {}
        for name, by_id in batches.items():
            entries = [item for items in by_id.values() for item in items]
            try:
                await self.db[name].update_many({"_id": {"$in": list(by_id)}},
                                                {"$pullAll": {"_outbox": entries}})
                after_cleared = self.resources[name].after_cleared
                if after_cleared is not None:
                    await after_cleared(entries)
            except PyMongoError as exc:
                # Left in place: harmless (they are known stored), taken out next time.
                log.warning("could not take stored events out of %s: %s", name, exc)
                self._keep_for_later(name, by_id)

    async def _clear_one_by_one(self, until_busy: bool, budget: float | None) -> None:
        # On FerretDB 1.24 every update reads the whole collection, whatever its filter: about
        # 5 µs per document (20 ms at 4,000 posts, one update by _id; an update_many of 100
        # by $in took 1.2 s at 2,000). A batch every 10 s held the one write connection 0.2 to
        # 1.5 s, and every request that writes waited behind it: at 20 posts/s to 15,000
        # subscribers the POST's worst time rose run after run with the collection (0.9, then
        # 2.0 s) and took delivery p99 with it. Stored entries in a document are harmless
        # (known stored; after a restart the sweep finds them in the log), so they are taken out
        # only while no event is being stored, one document per command: a write waits behind
        # one of them at most.
        loop = asyncio.get_running_loop()
        started = loop.time()
        batches, self._to_clear = self._to_clear, {}
        for name, by_id in batches.items():
            cleared: list = []
            try:
                while by_id:
                    if (until_busy and loop.time() - self.events.last_published < CLEAR_QUIET) or \
                            (budget is not None and loop.time() - started > budget):
                        break
                    oid, items = next(iter(by_id.items()))
                    began = loop.time()
                    await self.db[name].update_one({"_id": oid}, {"$pullAll": {"_outbox": items}})
                    del by_id[oid]
                    cleared.extend(items)
                    if until_busy:
                        # Twice as long off the connection as on it: whatever else needs the one
                        # write connection (a login, a token refresh) waits for one update at
                        # most. Back to back, the 1,200 left after a busy spell held it for
                        # seconds, and the upgrades of 96 reconnecting clients that needed it
                        # failed with 503 (bench.rate, third run at 15,000).
                        await asyncio.sleep(max(CLEAR_PAUSE, 2 * (loop.time() - began)))
            except PyMongoError as exc:
                log.warning("could not take stored events out of %s: %s", name, exc)
            finally:
                self._keep_for_later(name, by_id)
                after_cleared = self.resources[name].after_cleared
                if cleared and after_cleared is not None:
                    try:
                        await after_cleared(cleared)
                    except PyMongoError as exc:
                        log.warning("could not finish clearing %s: %s", name, exc)

    def _keep_for_later(self, name: str, by_id: dict) -> None:
        for oid, items in by_id.items():
            self._to_clear.setdefault(name, {}).setdefault(oid, []).extend(items)

    async def sweep(self) -> int:
        """Stores every pending event still in the database; returns how many documents."""
        count = 0
        for resource in list(self.resources.values()):
            docs = await self.db.read(resource.name).find(PENDING).sort("_id", 1).to_list(None)
            docs = [doc for doc in docs if doc.get("_outbox")]
            if not docs:
                continue
            # Which of their entries the log has already: one query for all of them.
            cids = [item["cid"] for doc in docs for item in doc["_outbox"]]
            stored = {found["cid"] async for found in self.events.events_read.find(
                {"cid": {"$in": cids}}, {"cid": 1})}
            stored |= await self._expired(resource, [cid for cid in cids if cid not in stored])
            for doc in docs:
                if any(item["cid"] not in stored for item in doc["_outbox"]):
                    count += 1
                await self._flush(resource.name, doc, stored)
        return count

    def _retry_later(self, name: str, oid) -> None:
        self._retry[(name, oid)] = asyncio.get_running_loop().time() + RETRY_FOR

    async def retry_failed(self) -> int:
        """Stores the pending events of the documents whose flush failed in this process."""
        count = 0
        now = asyncio.get_running_loop().time()
        for key, until in sorted(self._retry.items(), key=str):
            name, oid = key
            doc = await self.db[name].find_one({"_id": oid})
            if doc is not None and doc.get("_outbox"):
                await self._flush(name, doc)
                count += 1
            if until < now or doc is None:
                self._retry.pop(key, None)
        return count

    async def purge_placeholders(self) -> None:
        """Placeholders of fenced inserts, once no late write can arrive any more."""
        for resource in list(self.resources.values()):
            await self.db[resource.name].delete_many(
                {"_gone": True, "_fence": True, "_gone_at": {"$lt": utcnow() - FENCE_KEEP}})

    # --- background work ---------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        if not self._tasks or all(task.done() for task in self._tasks):
            loop = asyncio.get_running_loop()
            self._tasks = [loop.create_task(self._sweeping()), loop.create_task(self._clearing())]

    async def stop(self) -> None:
        # The flag as well as the cancel: a cancel that lands just as a driver call completes
        # can be lost, and the loops must end all the same.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        try:
            await self.clear_stored(budget=STOP_CLEAR_BUDGET)
        except Exception as exc:  # the database may be gone already: the next start sweeps
            log.warning("stored events left in their documents at stop: %s", exc)

    async def _clearing(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.clear_interval)
            try:
                await self.clear_stored(until_busy=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not take stored events out of documents: %s", exc)

    async def _sweeping(self) -> None:
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
            await collection.replace_one({"_id": doc["_id"], "_fence": True}, doc)
            found = await collection.find_one({"_id": doc["_id"]})
        if not is_live(found):
            return None
        if not await self.flush(name, found):
            return None
        return found

    # --- writes whose outcome must be known --------------------------------------------------

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
                self._retry_later(name, doc["_id"])
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

    async def update(self, name: str, query: dict, update: dict, cid, what: str) -> dict | None:
        """find_one_and_update (after) whose update appends the entry `cid`. None: nothing
        matched. A change that landed on a deleted document is void: 404."""
        collection = self.db[name]
        try:
            doc = await collection.find_one_and_update(query, update,
                                                       return_document=ReturnDocument.AFTER)
        except PyMongoError as exc:
            if not _maybe_applied(exc):
                raise
            doc = await self._find_update(name, query["_id"], cid)
        if doc is not None and voided(doc, cid):
            raise not_found(what)
        return doc

    async def applied(self, name: str, oid, cid) -> tuple[bool, dict | None]:
        """Whether change `cid` to document `oid` was applied, and the document as it is now."""
        doc = await self.db[name].find_one({"_id": oid})
        if doc is not None and any(item["cid"] == cid for item in doc.get("_outbox") or ()):
            return True, doc
        # Applied, and its event stored and taken out already?
        return bool(await self.events.find_change(cid)), doc

    async def _find_update(self, name: str, oid, cid) -> dict:
        """The document if update `cid` was applied; OutcomeUnknown if that cannot be known."""
        for _ in range(FENCE_ATTEMPTS):
            try:
                done, doc = await self.applied(name, oid, cid)
                if done:
                    return doc
                break  # not (yet) applied: it may still arrive
            except PyMongoError as exc:
                if not is_unavailable(exc):
                    raise
        self._retry_later(name, oid)
        raise OutcomeUnknown(f"could not learn whether change {cid} was applied")


def _maybe_applied(exc: BaseException) -> bool:
    """A write that failed this way may still have reached the database (one that never left
    the pool's queue or found no server did not)."""
    return is_unavailable(exc) and not isinstance(
        exc, (ServerSelectionTimeoutError, WaitQueueTimeoutError))
