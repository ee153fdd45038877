"""Safe retries of POSTs: one `Idempotency-Key` runs its request once and answers the same after.

A key is a claim document in `idempotency`, `_id` = "<scope>:<key>" (scope: the user, or the
client address for anonymous requests): its unique `_id` is what lets exactly one of several
concurrent requests claim the key. The claim holds the request's fingerprint, the `op_id` the
request creates its resource under (a fresh ObjectId), the lease of its runner and when the key
expires. What happens later is recorded by documents of their own, each inserted once under an
`_id` made of the claim's and its op_id (so a leftover of an expired key never speaks for a new
claim of the same key):

- `…\nanswer`: the stored final answer (status, body, replayed headers);
- `…\ntake<g>`: the g-th takeover, with its lease; inserting it is taking the key over;
- `…\nfree<g>`: generation g gave up its lease without an answer (a 5xx).

Only inserts and finds by exact `_id`: FerretDB 1.24 serves those from the primary key, while
every update or delete, even by `_id`, scans the collection (measured: 72 ms per update_one by
`_id` among 20,000 documents, against 0.7 ms for a find and 1.3 ms for an insert), and this
collection holds a day of keyed POSTs.

Crash safety: the request runs under the claim's `op_id`, which the stores use as the `_id` of
what they create (and as the change id of a stock change). A process that dies half-way leaves
a claim without an answer; once its lease has run out, a retry takes it over and runs again
under the same `op_id`: what the first run did is found by that id and answered as the success
it was, what it did not do is done now.

FerretDB has no TTL indexes: `expires_at` is indexed and `purge_expired` runs with the server's
maintenance (a key counts until then), so the collection holds about one day of keys.
"""

import asyncio
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from ..core.clock import utcnow
from ..core.errors import ApiError

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
    """This request runs the key: `op_id` is what it creates under, until `lease_until`;
    `generation` counts the takeovers before it (0: the first run)."""
    record_id: str
    op_id: ObjectId
    lease_until: datetime
    generation: int
    expires_at: datetime

    def part(self, name: str) -> str:
        return part_id(self.record_id, self.op_id, name)


def part_id(record_id: str, op_id: ObjectId, name: str) -> str:
    # A newline is in no key (printable ASCII) and no scope, so no part is any key's claim.
    return f"{record_id}\n{op_id}\n{name}"


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
        # Finds go through the read pool: waiting duplicates poll, and on FerretDB every write
        # shares one connection. (FerretDB acknowledges an insert once it is committed.)
        self.reads = db.read("idempotency")
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
        while True:
            now = utcnow()
            claim = Claim(record_id, ObjectId(), now + self.lease, 0, now + KEY_TTL)
            try:
                await self.records.insert_one({
                    "_id": record_id, "fingerprint": fingerprint, "op_id": claim.op_id,
                    "lease_until": claim.lease_until, "created_at": now,
                    "expires_at": claim.expires_at})
                return claim
            except DuplicateKeyError:
                pass
            record = await self.reads.find_one({"_id": record_id})
            if record is None:
                continue  # purged in between: claim it afresh
            if record["fingerprint"] != fingerprint:
                raise key_reused()
            answer = await self.reads.find_one(
                {"_id": part_id(record_id, record["op_id"], "answer")})
            if answer is not None:
                return Answer(answer["status"], bytes(answer["body"]), dict(answer["headers"]))
            generation, lease_until = await self._lease(record)
            if lease_until <= now:
                taken = await self._take_over(record, generation + 1, now)
                if taken is not None:
                    return taken
                # Another retry took it over first: its run is waited for as any other.
            elif time.monotonic() >= deadline:
                raise in_progress()
            else:
                await self._wait(record_id, deadline)

    async def _lease(self, record: dict) -> tuple[int, datetime]:
        """The generation running the key now, and until when (the past once it gave up)."""
        generation, lease_until = 0, record["lease_until"]
        while True:
            take = await self.reads.find_one(
                {"_id": part_id(record["_id"], record["op_id"], f"take{generation + 1}")})
            if take is None:
                break
            generation, lease_until = generation + 1, take["lease_until"]
        if await self.reads.find_one(
                {"_id": part_id(record["_id"], record["op_id"], f"free{generation}")}):
            lease_until = _EPOCH
        return generation, lease_until

    async def _take_over(self, record: dict, generation: int, now: datetime) -> Claim | None:
        """The runner's lease ran out (its process died) or was given up: run again, under the
        same op_id. Of several retries, the one that inserts this generation's takeover wins."""
        claim = Claim(record["_id"], record["op_id"], now + self.lease, generation,
                      record["expires_at"])
        try:
            await self.records.insert_one({"_id": claim.part(f"take{generation}"),
                                           "lease_until": claim.lease_until,
                                           "expires_at": claim.expires_at})
            return claim
        except DuplicateKeyError:
            return None

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

    # Should a runner outlive its lease and a retry take over, both run under the same op_id,
    # so both answers tell of the same change: the first one stored is the answer.

    async def finish(self, claim: Claim, answer: Answer) -> None:
        """Stores a final answer for replay."""
        await self._insert_part(claim, "answer", {
            "status": answer.status, "body": answer.body, "headers": answer.headers})

    async def release(self, claim: Claim) -> None:
        """No final answer (5xx): the next retry runs again at once. It runs under the same
        op_id, so should the change have happened after all, it finds it, not repeats it."""
        await self._insert_part(claim, f"free{claim.generation}", {})

    async def _insert_part(self, claim: Claim, name: str, fields: dict) -> None:
        try:
            await self.records.insert_one({"_id": claim.part(name), **fields,
                                           "expires_at": claim.expires_at})
        except DuplicateKeyError:
            pass  # stored already by another runner of the same op_id
        finally:
            self._wake(claim.record_id)

    def _wake(self, record_id: str) -> None:
        entry = self._waiting.pop(record_id, None)
        if entry is not None:
            entry[0].set()

    async def purge_expired(self, now: datetime | None = None) -> int:
        done = await self.records.delete_many({"expires_at": {"$lt": now or utcnow()}})
        return done.deleted_count
