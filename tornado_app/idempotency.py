"""Safe retries of POSTs: one `Idempotency-Key` runs its request once and answers the same after.

One document per key in `idempotency`, `_id` = "<scope>:<key>" (scope: the user, or the client
address for anonymous requests), so the unique `_id` is what lets exactly one of several
concurrent requests claim a key. The document holds the request's fingerprint, its state
(`in_progress` until the answer is stored, then `done`), the lease of whoever runs it, the
`op_id` the run creates its resource under, the stored answer and when the key expires.

Crash safety: the request runs under the record's `op_id`, which the stores use as the `_id` of
what they create. A process that dies half-way leaves the record `in_progress`; once its lease
has run out, a retry takes the record over (one conditional update on `lease_until`, so only one
retry wins) and runs again under the same `op_id`: a create that already happened is found by
its `_id` and answered as the success it was, anything that did not happen is done now.

FerretDB has no TTL indexes: `expires_at` is indexed and `purge_expired` runs with the server's
maintenance, so the collection holds at most one day of keys.
"""

import asyncio
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from .clock import utcnow
from .errors import ApiError

KEY_HEADER = "Idempotency-Key"
KEY_TTL = timedelta(hours=24)
# How long a duplicate waits for the first request's answer before it gets 409.
WAIT_SECONDS = 2.0
POLL_SECONDS = 0.1
# Only these headers belong to the answer that is stored and replayed; the rest (Date,
# X-Request-ID, CORS) are the retry's own.
REPLAYED_HEADERS = ("Location", "ETag", "WWW-Authenticate")
# Printable ASCII; HTTP drops whitespace around a header value, so the ends are never spaces.
_PRINTABLE_KEY = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def check_key(values: list[str]) -> str:
    """The key of a request's `Idempotency-Key` header(s): one value of 1..255 printable ASCII."""
    if len(values) != 1 or not _PRINTABLE_KEY.match(values[0]):
        msg = ("send one Idempotency-Key" if len(values) > 1 else
               "must be 1 to 255 printable ASCII characters")
        raise ApiError(422, "validation_error", "the request is not valid",
                       details=[{"loc": ["header", KEY_HEADER], "msg": msg}])
    return values[0]


def user_scope(user_id) -> str:
    return f"user:{user_id}"


def address_scope(address: str) -> str:
    # Bracketed: an IPv6 address has colons of its own, and the key may too.
    return f"addr:[{address}]"


def is_final(status: int) -> bool:
    """Answers that decide the request and are replayed. A 5xx (nothing was changed, or the
    outcome is unknown) and a 429 (try later) are not: a retry has to run again."""
    return 200 <= status < 500 and status != 429


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict


@dataclass
class Claim:
    """This request runs the key: `op_id` is what it creates under, `lease_until` its lease."""
    record_id: str
    op_id: ObjectId
    lease_until: datetime


def in_progress() -> ApiError:
    return ApiError(409, "request_in_progress",
                    "a request with this Idempotency-Key is still running; retry shortly",
                    headers={"Retry-After": "1"})


def key_reused() -> ApiError:
    return ApiError(422, "idempotency_key_reused",
                    "this Idempotency-Key was already used with a different request")


class IdempotencyStore:
    def __init__(self, db, secret: str, lease: float = 30.0):
        self.records = db["idempotency"]
        # Longer than any request takes (each database call is bounded by DB_TIMEOUT): the
        # lease is not renewed while the request runs.
        self.lease = timedelta(seconds=lease)
        # Keyed, so a stored fingerprint of a login body is no offline-guessable password hash.
        self._secret = secret.encode()
        # Waiters of this process by record: [event, how many wait], woken as soon as the
        # answer they wait for is stored (or released) by a runner in this process.
        self._waiting: dict[str, list] = {}

    def fingerprint(self, method: str, uri: str, body: bytes) -> str:
        mac = hmac.new(self._secret, digestmod=hashlib.sha256)
        mac.update(method.encode() + b"\n" + uri.encode("utf-8", "surrogateescape") + b"\n")
        mac.update(body)
        return mac.hexdigest()

    async def begin(self, scope: str, key: str, fingerprint: str) -> Claim | Answer:
        """Claims the key for this request, or gives the first request's stored answer.

        Raises 422 idempotency_key_reused for another request under the key, and 409
        request_in_progress when its first request is still running after WAIT_SECONDS.
        """
        record_id = f"{scope}:{key}"
        deadline = time.monotonic() + WAIT_SECONDS
        record = None
        while True:
            now = utcnow()
            if record is None:
                claim = Claim(record_id, ObjectId(), now + self.lease)
                try:
                    await self.records.insert_one({
                        "_id": record_id, "fingerprint": fingerprint, "state": "in_progress",
                        "op_id": claim.op_id, "lease_until": claim.lease_until,
                        "response": None, "created_at": now, "expires_at": now + KEY_TTL})
                    return claim
                except DuplicateKeyError:
                    record = await self.records.find_one({"_id": record_id})
                    if record is None:
                        continue  # purged in between: claim it afresh
            # (A record past expires_at counts until the purge removes it, within a minute.)
            if record["fingerprint"] != fingerprint:
                raise key_reused()
            if record["state"] == "done":
                response = record["response"]
                return Answer(response["status"], bytes(response["body"]),
                              dict(response["headers"]))
            if record["lease_until"] <= now:
                taken = await self._take_over(record, now)
                if taken is not None:
                    return taken
            elif time.monotonic() >= deadline:
                raise in_progress()
            else:
                await self._wait(record_id, deadline)
            # Not yet answered, or another retry took it over first: look again.
            record = await self.records.find_one({"_id": record_id})

    async def _take_over(self, record: dict, now: datetime) -> Claim | None:
        """The runner's lease ran out (its process died): run again, under the same op_id.

        Of several retries exactly one takes it: each counts a takeover in one atomic update,
        and only the one that finds the count as it read it wins. (The filter is the `_id`
        alone: FerretDB serves only that from an index; any further condition is a scan.)
        """
        lease = now + self.lease
        before = await self.records.find_one_and_update(
            {"_id": record["_id"]}, {"$set": {"lease_until": lease}, "$inc": {"takeovers": 1}},
            return_document=ReturnDocument.BEFORE)
        won = before is not None and before["state"] == "in_progress" and (
            before["op_id"], before.get("takeovers", 0)) == (
            record["op_id"], record.get("takeovers", 0))
        return Claim(record["_id"], record["op_id"], lease) if won else None

    async def _wait(self, record_id: str, deadline: float) -> None:
        entry = self._waiting.get(record_id)
        if entry is None:
            entry = self._waiting[record_id] = [asyncio.Event(), 0]
        entry[1] += 1
        timeout = min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))
        try:
            # Woken at once by a runner in this process; another worker's is seen by polling.
            await asyncio.wait_for(entry[0].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            entry[1] -= 1
            # The last waiter removes it: a runner in another process never will.
            if entry[1] == 0 and self._waiting.get(record_id) is entry:
                del self._waiting[record_id]

    # finish and release are unconditional (by `_id` alone, see _take_over): should a runner
    # outlive its lease and a retry take over, both run under the same op_id, so both answers
    # tell of the same change, and either may be the one stored.

    async def finish(self, claim: Claim, answer: Answer) -> None:
        """Stores a final answer for replay."""
        try:
            await self.records.update_one(
                {"_id": claim.record_id},
                {"$set": {"state": "done", "response": {
                    "status": answer.status, "body": answer.body, "headers": answer.headers}}})
        finally:
            self._wake(claim.record_id)

    async def release(self, claim: Claim) -> None:
        """No final answer (5xx): the next retry runs again at once. The record keeps its
        op_id, so should the change have happened after all, the retry finds it, not repeats it."""
        try:
            await self.records.update_one({"_id": claim.record_id},
                                          {"$set": {"lease_until": _EPOCH}})
        finally:
            self._wake(claim.record_id)

    def _wake(self, record_id: str) -> None:
        entry = self._waiting.pop(record_id, None)
        if entry is not None:
            entry[0].set()

    async def purge_expired(self, now: datetime | None = None) -> int:
        done = await self.records.delete_many({"expires_at": {"$lt": now or utcnow()}})
        return done.deleted_count
