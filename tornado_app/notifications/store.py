"""Notifications: accepted with 202, delivered in the background on the same IOLoop.

Delivery is one conditional update (`queued` → `delivered`) that carries the `notification`
event on `user:{id}` in the outbox (tornado_app/storage/outbox.py): of several deliverers (workers)
exactly one wins, and a crash at any point neither loses the event nor sends it twice.
Whatever is still queued when the server stops is delivered after the next start.
"""

import asyncio
import logging

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from ..core.clock import iso, utcnow
from ..core.errors import not_found, validation_error
from ..core.ids import parse_id
from ..storage.outbox import Resource, entry, is_live
from ..storage.pagination import fetch_page

log = logging.getLogger(__name__)

# Queued notifications taken per read: one query (served by the `queued` index) per batch
# rather than one per delivery, so delivering does not cost more as notifications pile up.
DELIVERY_BATCH = 100


def notification_public(doc: dict) -> dict:
    return {"id": str(doc["_id"]), "user_id": str(doc["user_id"]), "title": doc["title"],
            "body": doc["body"], "status": doc["status"], "created_at": iso(doc["created_at"]),
            "delivered_at": iso(doc.get("delivered_at")), "read_at": iso(doc.get("read_at"))}


def notification_accepted(doc: dict) -> dict:
    return {"id": str(doc["_id"]), "status": doc["status"]}


class NotificationService:
    def __init__(self, db, outbox, users):
        self.notifications = db["notifications"]
        self.notifications_read = db.read("notifications")
        self.outbox = outbox
        self.users = users
        outbox.register(Resource("notifications", notification_public))
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def create(self, user_id: str, title: str, body: str,
                     op_id: ObjectId | None = None) -> dict:
        user = await self.users.get(user_id)
        if user is None:
            raise validation_error(["body", "user_id"], "no such user")
        doc = {"_id": op_id or ObjectId(), "user_id": user["_id"], "title": title, "body": body,
               "status": "queued", "created_at": utcnow(), "delivered_at": None, "read_at": None}
        try:
            await self.outbox.insert("notifications", doc)
        except DuplicateKeyError:
            # The same request retried with its Idempotency-Key: accepted once.
            existing = await self.outbox.existing("notifications", doc)
            if existing is None:
                raise
            return existing
        self._wake.set()
        return doc

    async def get_for(self, user: dict, notification_id: str) -> dict:
        oid = parse_id(notification_id)
        doc = oid and await self.notifications.find_one({"_id": oid})
        # Someone else's notification is not found rather than forbidden: ids reveal nothing.
        if not is_live(doc) or (user["role"] != "admin" and doc["user_id"] != user["_id"]):
            raise not_found("notification")
        return doc

    async def list_for(self, user: dict, limit: int, cursor: str | None):
        return await fetch_page(self.notifications, {"user_id": user["_id"]}, field="created_at",
                                descending=True, limit=limit, cursor=cursor, order="notifications")

    async def mark_read(self, user: dict, notification_id: str) -> dict:
        oid = parse_id(notification_id)
        if oid is not None:
            now = utcnow()
            mine = {"_id": oid, "user_id": user["_id"]}
            doc = await self.notifications.find_one_and_update(
                {**mine, "status": "delivered"}, {"$set": {"status": "read", "read_at": now}},
                return_document=ReturnDocument.AFTER)
            if doc is None:
                # Read before the deliverer got to it (seen in the list): it needs no event any
                # more, and the deliverer only takes notifications still queued.
                doc = await self.notifications.find_one_and_update(
                    {**mine, "status": "queued"},
                    {"$set": {"status": "read", "read_at": now, "delivered_at": now}},
                    return_document=ReturnDocument.AFTER)
            if doc is not None:
                return doc
        # Not the recipient's (404), or already read: reading again changes nothing.
        return await self.get_for({**user, "role": "user"}, notification_id)

    # --- background delivery -----------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        # The flag as well as the cancel: a cancel that lands just as an await completes can be
        # lost (Python 3.11's wait_for, or a driver call), and the loop must end all the same.
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                while not self._stopping and await self._deliver_batch():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("notification delivery paused: %s", exc)
            if self._stopping:
                return
            self._wake.clear()
            try:
                async with asyncio.timeout(5):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _deliver_batch(self) -> bool:
        """Delivers the oldest queued notifications; True when there may be more."""
        queued = await self.notifications_read.find(
            {"status": "queued"}, {"_id": 1, "user_id": 1}).sort([("status", 1), ("created_at", 1)]).limit(
            DELIVERY_BATCH).to_list(DELIVERY_BATCH)
        for doc in queued:
            if self._stopping:
                return False
            await self._deliver(doc["_id"], doc["user_id"])
        return len(queued) == DELIVERY_BATCH

    async def _deliver(self, oid, user_id) -> None:
        cid = ObjectId()
        doc = await self.outbox.update(
            "notifications", {"_id": oid, "status": "queued"},
            {"$set": {"status": "delivered", "delivered_at": utcnow()},
             "$push": {"_outbox": entry(f"user:{user_id}", "notification", None, cid)}},
            cid, "notification")
        if doc is not None:  # else read meanwhile, or delivered by another worker
            await self.outbox.flush("notifications", doc)
