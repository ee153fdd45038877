"""Open connections keep only the rights their user still has.

A WebSocket, an SSE stream or a parked long-poll is authorized once, when it starts; afterwards
its token may be revoked (logout, a reused refresh token), its user demoted, or the token may
simply expire. Each of these connections is a *holder* here, with `user`, `family` (its token's
family) and `expires` (its token's exp). Every AUTH_RECHECK_INTERVAL seconds one process-wide
pass
- ends the rights of holders whose token has expired (no query), and
- reads the news of revoked families and changed roles (tornado_app/accounts/grant_changes.py: one
  small query, whatever the number of connections) and tells the holders concerned:
  `holder.grant_lost(code, message)` when the token is no longer good,
  `holder.grant_changed(user)` when the user's role changed.

The news comes from the database, not from this process's memory, so a logout or a role change
made through any worker reaches the connections of every worker; changes made through this
process are read at once. A worker that could not read the news for longer than it is kept
reads every revoked family and every user's role instead, once.

Nothing is kept per connection but the holder's place in one set: no timer, no task.
"""

import asyncio
import logging
import time
from datetime import timedelta

from ..accounts import grant_changes
from ..core.clock import utcnow
from ..storage.db import is_unavailable
from ..core.ids import parse_id

log = logging.getLogger(__name__)

# News is read again for this long after it was first due: a write that commits a little after
# the time it carries, or a worker whose clock is a little behind, is still heard.
OVERLAP_SECONDS = 30.0


class GrantCheck:
    def __init__(self, db, interval: float):
        self.db = db
        self.interval = interval
        self.holders: set = set()
        self.checks = 0  # passes completed, for tests and metrics
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._failing = False
        self._read_since = utcnow()  # news from here on (less the overlap) is read next
        self.news_read_at = time.monotonic()  # when news was last read

    def add(self, holder) -> None:
        self.holders.add(holder)

    def discard(self, holder) -> None:
        self.holders.discard(holder)

    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def check_soon(self, *_) -> None:
        """A revocation or role change made here: checked now rather than at the next pass."""
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.check()
                if self._failing:
                    self._failing = False
                    log.info("open connections' rights are checked again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Connections keep what they had until the database answers again (a request
                # needing authentication gets 503 meanwhile); said once, not every pass.
                if not self._failing:
                    self._failing = True
                    if is_unavailable(exc):
                        log.warning("cannot re-check open connections' rights: %s", exc)
                    else:
                        log.exception("re-checking open connections' rights failed")

    async def check(self) -> None:
        """One pass: expiry first (no query), then the news of revocations and role changes."""
        now = time.time()
        for holder in [h for h in self.holders if h.expires is not None and h.expires <= now]:
            self._lose(holder, "unauthorized", "the access token has expired")
        started, started_at = utcnow(), time.monotonic()
        missed = started_at - self.news_read_at > grant_changes.RETAIN_SECONDS - OVERLAP_SECONDS
        families, user_ids = set(), set()
        since = self._read_since - timedelta(seconds=OVERLAP_SECONDS)
        async for news in self.db.read(grant_changes.COLLECTION).find({"at": {"$gte": since}}):
            if "family" in news:
                families.add(news["family"])
            if "user_id" in news:
                user_ids.add(news["user_id"])
        if missed:
            # Some news may have been purged unread: every holder is checked afresh.
            await self._check_all()
        elif families or user_ids:
            await self._apply(families, user_ids)
        self._read_since, self.news_read_at = started, started_at
        self.checks += 1

    async def _apply(self, families: set, user_ids: set) -> None:
        users = {}
        for user_id in user_ids:
            oid = parse_id(user_id)
            users[user_id] = oid and await self.db.read("users").find_one(
                {"_id": oid}, {"password_hash": 0})
        # After the queries: a holder that authenticated again meanwhile is judged on its
        # current token.
        for holder in list(self.holders):
            user_id = str(holder.user["_id"])
            if holder.family in families:
                self._lose(holder, "unauthorized", "the access token has been revoked")
            elif user_id in users:
                self._judge(holder, users[user_id])

    async def _check_all(self) -> None:
        """Every holder against the revoked families and the users' roles, each read in one
        scan (FerretDB answers only `_id` equality from an index, and one lookup per holder
        costs far more than one pass over each collection)."""
        snapshot = [(holder, holder.family) for holder in self.holders]
        revoked = {doc["_id"] async for doc in self.db.read("token_families").find(
            {"revoked": True}, {"_id": 1})}
        roles = {doc["_id"]: doc.get("role") async for doc in self.db.read("users").find(
            {}, {"role": 1})}
        for holder, family_id in snapshot:
            if holder not in self.holders or holder.family != family_id:
                continue
            role = roles.get(holder.user["_id"])
            if family_id in revoked:
                self._lose(holder, "unauthorized", "the access token has been revoked")
            elif role is None:
                self._lose(holder, "unauthorized", "the user no longer exists")
            elif role != holder.user.get("role"):
                holder.grant_changed({**holder.user, "role": role})

    def _judge(self, holder, user: dict | None) -> None:
        if user is None:
            self._lose(holder, "unauthorized", "the user no longer exists")
        elif user.get("role") != holder.user.get("role"):
            holder.grant_changed(user)

    def _lose(self, holder, code: str, message: str) -> None:
        self.holders.discard(holder)
        holder.grant_lost(code, message)
