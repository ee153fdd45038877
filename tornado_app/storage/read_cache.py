"""Documents read by id, kept in this process until anything writes to their collection.

Only where this process is the one server writing to the database (see `cache_wanted`): a write
made by this process empties the cached documents of its collection before its caller hears
of it, so a client that wrote always reads its write. A write made by another process could
not do that, which is why the cache is off wherever another server process may write.

Every write this process makes goes through one client (storage/db.py), whose command
listener (`WriteWatch`) empties the collection a command names when the command starts and
again when it ends. A read stores what it found only if no write to the collection started or
ended while it ran (the generation it read before the query is still the current one), so a
document read before a write cannot be stored after it.

What the listener cannot see is a write whose outcome the driver never learned (it timed out
and the database applied it later): a document read in between may stay cached. `MAX_AGE`
bounds that: a cached document is read again after it, whatever happened.

Measured (`python -m bench.httpload`, GET /api/v1/posts/{id} under wrk -c64, medians of 3
runs, 2026-12-06): from the cache, 5,444 requests/s, 184 µs of server CPU per request and none
in FerretDB; with READ_CACHE=off, 1,846 requests/s, 535 µs in the server and 383 µs in
FerretDB (the FastAPI peer on the same query: 2,309 requests/s, 430 + 329 µs).
"""

import asyncio
import sys
import time
from collections import OrderedDict

from pymongo import monitoring

# Seconds a cached document is served before it is read again: the bound on how stale a
# document can be after a write whose outcome the driver did not learn (above).
MAX_AGE = 1.0
# Documents kept per process, and the bytes they may hold (sys.getsizeof of their fields), the
# least recently read dropped first. A typical post is 1–2 KB; the largest the contract allows
# (content of 100,000 characters, each up to 4 bytes in memory) about 400 KB.
DEFAULT_ENTRIES = 10_000
DEFAULT_BYTES = 32 * 1024 * 1024

# Commands that change nothing. Every other command empties what it names: the collection a
# collection-level command names, else every collection (dropDatabase, an unknown command).
READ_COMMANDS = frozenset((
    "find", "getMore", "count", "distinct", "aggregate", "listIndexes", "listCollections",
    "killCursors", "explain", "hello", "isMaster", "ismaster", "ping", "buildInfo",
    "endSessions", "dbStats", "collStats", "serverStatus", "getParameter", "connectionStatus",
    "saslStart", "saslContinue", "authenticate", "getLastError"))
EVERY_COLLECTION = None


def cache_wanted(mode: str, is_ferretdb: bool, only_writer: bool) -> bool:
    """READ_CACHE: `on`, `off`, or `auto`: on against FerretDB when this is the one server
    process (no REDIS_URL, which every multi-process deployment needs). FerretDB is refused for
    several workers (its updates are read-then-write on one connection), so there this process
    makes every write. Against MongoDB other processes, on this host or behind the same load
    balancer, may write, and `auto` leaves the cache off."""
    if mode == "on":
        return True
    return mode == "auto" and bool(is_ferretdb) and only_writer


class ReadCache:
    def __init__(self, max_entries: int = DEFAULT_ENTRIES, max_bytes: int = DEFAULT_BYTES,
                 max_age: float = MAX_AGE, clock=time.monotonic):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.clock = clock
        # collection -> {id: (document, read at, bytes)}, least recently read first.
        self._entries: dict[str, OrderedDict] = {}
        # collection -> how many times a write to it has started or ended; `_every` counts
        # the writes that may change any collection.
        self._generations: dict[str, int] = {}
        self._every = 0
        # (collection, id) -> (generation, future): the read under way, which readers that miss
        # meanwhile share.
        self._flights: dict[tuple, tuple] = {}
        self._count = 0
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def generation(self, collection: str) -> int:
        """Taken before a query: `put` stores its result only if it is still the same."""
        return self._generations.get(collection, 0) + self._every

    async def read(self, collection: str, key, fetch):
        """The document, from the cache or else from `await fetch()`, which is then stored.

        Readers that miss together share one fetch: when an entry expires under load, one
        query goes to the database, not one per request in flight (measured with wrk -c64:
        p99 latency 295 ms when each made its own, the read pool opening connections for them;
        see `python -m bench.httpload`). A reader joins a fetch only if no write to the
        collection has started or ended since it began: one whose own write just ended must
        not get what was read before it."""
        doc = self.get(collection, key)
        if doc is not None:
            return doc
        generation = self.generation(collection)
        flight = self._flights.get((collection, key))
        if flight is not None and flight[0] == generation:
            try:
                return await asyncio.shield(flight[1])
            except asyncio.CancelledError:
                if not flight[1].cancelled():
                    raise  # this reader was cancelled
                return await fetch()  # the one fetching was: read on our own
        future = asyncio.get_running_loop().create_future()
        flight = self._flights[(collection, key)] = (generation, future)
        try:
            doc = await fetch()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waited
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            if self._flights.get((collection, key)) is flight:
                del self._flights[(collection, key)]
        future.set_result(doc)
        if doc is not None:
            self.put(collection, key, doc, generation)
        return doc

    def get(self, collection: str, key):
        """The cached document, or None (counted as a miss; `read` then fetches it)."""
        entries = self._entries.get(collection)
        found = entries.get(key) if entries else None
        if found is not None:
            if self.clock() - found[1] < self.max_age:
                entries.move_to_end(key)
                self.hits += 1
                return found[0]
            self._forget(entries, key)
        self.misses += 1
        return None

    def put(self, collection: str, key, doc: dict, generation: int) -> None:
        if generation != self.generation(collection):
            return  # written to while it was read: what was read may be older than the write
        size = document_bytes(doc)
        if size > self.max_bytes:
            return
        entries = self._entries.get(collection)
        if entries is None:
            entries = self._entries[collection] = OrderedDict()
        if key in entries:
            self._forget(entries, key)
        entries[key] = (doc, self.clock(), size)
        self._count += 1
        self.bytes += size
        while self._count > self.max_entries or self.bytes > self.max_bytes:
            # The least recently read of this collection, or of the largest other one.
            victims = entries if len(entries) > 1 else max(self._entries.values(), key=len)
            self._forget(victims, next(iter(victims)))

    def written(self, collection: str | None) -> None:
        """A write to `collection` (None: to any) starts or ends: forget what it may change."""
        if collection is None:
            self._every += 1
            self._entries.clear()
            self._count = self.bytes = 0
            return
        self._generations[collection] = self._generations.get(collection, 0) + 1
        dropped = self._entries.pop(collection, None)
        if dropped:
            self._count -= len(dropped)
            self.bytes -= sum(size for _, _, size in dropped.values())

    def _forget(self, entries: OrderedDict, key) -> None:
        _, _, size = entries.pop(key)
        self._count -= 1
        self.bytes -= size

    def __len__(self) -> int:
        return self._count


def document_bytes(doc: dict) -> int:
    """About what a decoded document holds in memory: its fields, a level of nesting deep."""
    total = sys.getsizeof(doc)
    for name, value in doc.items():
        total += sys.getsizeof(name) + sys.getsizeof(value)
        if isinstance(value, (list, tuple)):
            total += sum(sys.getsizeof(item) for item in value)
        elif isinstance(value, dict):
            total += document_bytes(value)
    return total


class WriteWatch(monitoring.CommandListener):
    """The write client's command listener: every command that may change a collection empties
    its cached documents when it is sent and again when it has ended, however it ended.

    A listener makes the driver build an event per command of this client: POST
    /api/v1/posts measured 0.997x the requests/s without it (pairs 0.96, 0.95, 1.00; server
    CPU per 201 1,347 against 1,305 µs, within the runs' 5-6% spread; `python -m bench.writes
    --before <checkout without it> --runs 3`)."""

    def __init__(self, cache: ReadCache):
        self.cache = cache
        self._named: dict[int, str | None] = {}  # request id -> the collection written to

    def started(self, event) -> None:
        name = event.command_name
        if name in READ_COMMANDS:
            return
        target = event.command.get(name)
        collection = target if isinstance(target, str) else EVERY_COLLECTION
        self._named[event.request_id] = collection
        self.cache.written(collection)

    def succeeded(self, event) -> None:
        self._ended(event)

    def failed(self, event) -> None:
        self._ended(event)

    def _ended(self, event) -> None:
        if event.command_name in READ_COMMANDS:
            return
        self.cache.written(self._named.pop(event.request_id, EVERY_COLLECTION))
