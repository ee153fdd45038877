"""Open connections keep only the rights their user still has.

A WebSocket, an SSE stream or a parked long-poll is authorized once, when it starts; afterwards
its token may be revoked (logout, a reused refresh token), its user demoted or deleted, or the
token may simply expire. Each of these connections is a *holder* here, with `user`, `family`
(its token's family) and `expires` (its token's exp). Every AUTH_RECHECK_INTERVAL seconds one
process-wide pass reads, in a few batched queries, the current state of every family and user
that holders use, and tells each holder what changed:

- `holder.grant_lost(code, message)`: the token is no longer good (revoked, expired, user gone);
- `holder.grant_changed(user)`: the user is still authenticated but their document (role)
  changed.

The holder then drops whatever it may no longer read. The state comes from the database, not
from this process's memory, so a logout or a role change made through any worker reaches the
connections of every worker. Changes made through this process are checked at once.

Nothing is kept per connection but the holder's place in one set: no timer, no task.
"""

import asyncio
import logging
import time

from ..db import is_unavailable

log = logging.getLogger(__name__)

# Ids per query: a few hundred keeps each `$in` cheap for the database and the reply small.
QUERY_BATCH = 500


class GrantCheck:
    def __init__(self, db, interval: float):
        self.db = db
        self.interval = interval
        self.holders: set = set()
        self.checks = 0  # passes completed, for tests and metrics
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._failing = False

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
        """One pass over every holder: expiry first (no query), then revocation and role."""
        now = time.time()
        for holder in [h for h in self.holders if h.expires is not None and h.expires <= now]:
            self._lose(holder, "unauthorized", "the access token has expired")
        # Who used which family and user when the queries went out: a holder that
        # re-authenticates meanwhile is judged next time, on its new token.
        snapshot = [(holder, holder.family, holder.user["_id"]) for holder in self.holders]
        if snapshot:
            families = await self._fetch("token_families", {family for _, family, _ in snapshot},
                                         {"revoked": 1, "user_id": 1})
            users = await self._fetch("users", {user_id for _, _, user_id in snapshot},
                                      {"password_hash": 0})
            for holder, family_id, user_id in snapshot:
                if holder not in self.holders or holder.family != family_id:
                    continue
                family = families.get(family_id)
                user = users.get(user_id)
                if family is None or family.get("revoked") or \
                        family.get("user_id") != str(user_id):
                    self._lose(holder, "unauthorized", "the access token has been revoked")
                elif user is None:
                    self._lose(holder, "unauthorized", "the user no longer exists")
                elif user.get("role") != holder.user.get("role"):
                    holder.grant_changed(user)
        self.checks += 1

    def _lose(self, holder, code: str, message: str) -> None:
        self.holders.discard(holder)
        holder.grant_lost(code, message)

    async def _fetch(self, collection: str, ids: set, projection: dict) -> dict:
        found = {}
        ids = list(ids)
        reader = self.db.read(collection)
        for start in range(0, len(ids), QUERY_BATCH):
            async for doc in reader.find({"_id": {"$in": ids[start:start + QUERY_BATCH]}},
                                         projection):
                found[doc["_id"]] = doc
        return found
