"""Notifications: accepted with 202, delivered in the background on the same IOLoop.

Delivery publishes on `user:{id}` first and marks the notification delivered second, so a
crash in between delivers it twice rather than never: an accepted notification is never lost.
Whatever is still queued when the server stops is delivered after the next start.
"""

import asyncio
import logging
from datetime import timedelta

from pymongo import ReturnDocument

from .clock import iso, utcnow
from .errors import not_found, validation_error
from .ids import parse_id
from .pagination import fetch_page

log = logging.getLogger(__name__)

CLAIM_SECONDS = 30


def notification_public(doc: dict) -> dict:
    return {"id": str(doc["_id"]), "user_id": str(doc["user_id"]), "title": doc["title"],
            "body": doc["body"], "status": doc["status"], "created_at": iso(doc["created_at"]),
            "delivered_at": iso(doc.get("delivered_at")), "read_at": iso(doc.get("read_at"))}


class NotificationService:
    def __init__(self, db, events, users):
        self.notifications = db["notifications"]
        self.events = events
        self.users = users
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def create(self, user_id: str, title: str, body: str) -> dict:
        user = await self.users.get(user_id)
        if user is None:
            raise validation_error(["body", "user_id"], "no such user")
        doc = {"user_id": user["_id"], "title": title, "body": body, "status": "queued",
               "created_at": utcnow(), "delivered_at": None, "read_at": None,
               "claimed_until": None}
        await self.notifications.insert_one(doc)
        self._wake.set()
        return doc

    async def get_for(self, user: dict, notification_id: str) -> dict:
        oid = parse_id(notification_id)
        doc = oid and await self.notifications.find_one({"_id": oid})
        # Someone else's notification is not found rather than forbidden: ids reveal nothing.
        if not doc or (user["role"] != "admin" and doc["user_id"] != user["_id"]):
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
                while not self._stopping and await self._deliver_next():
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

    async def _deliver_next(self) -> bool:
        now = utcnow()
        # Claimed for a while, so two workers do not both deliver it; a claim that was not
        # completed (the worker died) runs out and another picks it up.
        doc = await self.notifications.find_one_and_update(
            {"status": "queued",
             "$or": [{"claimed_until": None}, {"claimed_until": {"$lt": now}}]},
            {"$set": {"claimed_until": now + timedelta(seconds=CLAIM_SECONDS)}},
            sort=[("created_at", 1)], return_document=ReturnDocument.AFTER)
        if doc is None:
            return False
        await self._deliver(doc)
        return True

    async def _deliver(self, doc: dict) -> None:
        delivered = {**doc, "status": "delivered", "delivered_at": utcnow()}
        await self.events.publish(f"user:{doc['user_id']}", "notification",
                                  notification_public(delivered))
        await self.notifications.update_one(
            {"_id": doc["_id"], "status": "queued"},
            {"$set": {"status": "delivered", "delivered_at": delivered["delivered_at"]}})
