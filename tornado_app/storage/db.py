"""The connection to MongoDB (or FerretDB) and the indexes the server relies on."""

import logging

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.errors import (ConnectionFailure, ExecutionTimeout, OperationFailure, PyMongoError,
                            WTimeoutError)

from .read_cache import ReadCache, WriteWatch, cache_wanted

log = logging.getLogger(__name__)

# Documents with events still pending (tornado_app/storage/outbox.py), for the recovery sweep.
OUTBOX_INDEX = IndexModel([("_outbox.cid", ASCENDING)], name="outbox")

INDEXES = {
    "users": [
        IndexModel([("username_key", ASCENDING)], unique=True, name="username_unique"),
        IndexModel([("email", ASCENDING)], unique=True, name="email_unique"),
        IndexModel([("created_at", ASCENDING), ("_id", ASCENDING)], name="created"),
    ],
    "token_families": [
        IndexModel([("user_id", ASCENDING)], name="user"),
        IndexModel([("expires_at", ASCENDING)], name="expires"),
    ],
    "grant_changes": [
        IndexModel([("at", ASCENDING)], name="at"),
    ],
    "login_failures": [
        IndexModel([("window_start", ASCENDING)], name="window"),
    ],
    "posts": [
        IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="newest"),
        IndexModel([("author_id", ASCENDING), ("created_at", DESCENDING)], name="author"),
        IndexModel([("tags", ASCENDING), ("created_at", DESCENDING)], name="tag"),
        OUTBOX_INDEX,
    ],
    "comments": [
        IndexModel([("post_id", ASCENDING), ("created_at", ASCENDING), ("_id", ASCENDING)],
                   name="post"),
        OUTBOX_INDEX,
    ],
    "products": [
        IndexModel([("sku", ASCENDING)], unique=True, name="sku_unique"),
        IndexModel([("created_at", DESCENDING), ("_id", DESCENDING)], name="newest"),
        IndexModel([("price_cents", ASCENDING), ("_id", ASCENDING)], name="price"),
        IndexModel([("name", ASCENDING), ("_id", ASCENDING)], name="name"),
        IndexModel([("category", ASCENDING)], name="category"),
        OUTBOX_INDEX,
    ],
    "events": [
        # _id is the event's seq: its unique index is what keeps seq unique across workers.
        IndexModel([("channel", ASCENDING), ("_id", ASCENDING)], name="channel"),
        IndexModel([("created_at", ASCENDING)], name="created"),
        # One event per change: the outbox may offer a change twice (tornado_app/storage/outbox.py).
        IndexModel([("cid", ASCENDING)], unique=True, name="change_unique"),
    ],
    "idempotency": [
        # _id is "<scope>:<key>": its unique index lets one request of several claim a key.
        IndexModel([("expires_at", ASCENDING)], name="expires"),
    ],
    "notifications": [
        IndexModel([("user_id", ASCENDING), ("created_at", DESCENDING), ("_id", DESCENDING)],
                   name="recipient"),
        # Delivery takes the oldest queued ones, a batch at a time.
        IndexModel([("status", ASCENDING), ("created_at", ASCENDING)], name="queued"),
        OUTBOX_INDEX,
    ],
}

# As many as MongoDB gets: a request that waits in the pool queue costs more CPU than one more
# connection (measured: 8 connections for 16 concurrent readers, 209 µs of client CPU per
# find_one; 32 or more, 150-170 µs).
FERRETDB_READ_POOL = 100

# Errors that mean "the database cannot be reached right now", answered with 503.
UNAVAILABLE = (ConnectionFailure, ExecutionTimeout, WTimeoutError)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE) or (isinstance(exc, PyMongoError) and exc.timeout)


# MongoDB's OutOfDiskSpace; FerretDB passes SQLite's errors on as InternalError with their text:
# SQLITE_FULL (the disk is full) and SQLITE_IOERR (a write the file system refused).
_OUT_OF_DISK_SPACE = 14031
_STORAGE_MESSAGES = ("database or disk is full", "disk i/o error", "no space left on device",
                     "disk quota exceeded", "file too large")


def is_out_of_storage(exc: BaseException) -> bool:
    """Whether the database failed because it could not write to its storage (answered 507)."""
    if not isinstance(exc, OperationFailure):
        return False
    if exc.code == _OUT_OF_DISK_SPACE:
        return True
    details = exc.details if isinstance(exc.details, dict) else {}
    message = str(details.get("errmsg") or exc).lower()
    return any(text in message for text in _STORAGE_MESSAGES)


class Database:
    """One AsyncMongoClient per process and IOLoop, with the pool sized for the server behind it."""

    def __init__(self, client: AsyncMongoClient, name: str, is_ferretdb: bool,
                 reader: AsyncMongoClient | None = None, cache: ReadCache | None = None):
        self.client = client
        # Documents read by id, when this process is the one server writing (read_cache.py).
        self.cache = cache
        self.db = client[name]
        self.reader = reader
        self.read_db = (reader or client)[name]
        self.is_ferretdb = is_ferretdb
        self.indexes_ready = False

    @classmethod
    async def connect(cls, uri: str, name: str, timeout: float, is_ferretdb: bool | None = None,
                      read_cache: str = "off", only_writer: bool = False):
        """Connects; probes whether the server is FerretDB when the caller does not know.
        `read_cache` is the READ_CACHE setting; `only_writer`: no other server process can
        write to this database (see read_cache.cache_wanted)."""
        if is_ferretdb is None:
            probe = _client(uri, timeout, pool_size=1)
            try:
                info = await probe.admin.command("buildInfo")
                is_ferretdb = "ferretdbVersion" in info
            except PyMongoError as exc:
                # Unknown: written to as FerretDB (one write connection), which is correct on
                # either; assuming MongoDB would let concurrent updates on FerretDB both succeed.
                log.warning("could not probe the database at start (%s); writes go through one "
                            "connection, as for FerretDB (restart once it answers for MongoDB's "
                            "full write concurrency)", exc)
                is_ferretdb = True
            finally:
                await probe.close()
        # FerretDB applies an update as read-then-write: two connections updating one document
        # can lose an update, so against it every write goes through a single connection.
        # Plain reads cannot lose anything and FerretDB acknowledges a write only once it is
        # committed, so they get a pool of their own: reads do not queue behind each other.
        cache = ReadCache() if cache_wanted(read_cache, is_ferretdb, only_writer) else None
        # Every write of this process goes through `client`: its listener keeps the cache true.
        client = _client(uri, timeout, pool_size=1 if is_ferretdb else 100,
                         listeners=[WriteWatch(cache)] if cache is not None else [])
        reader = _client(uri, timeout, pool_size=FERRETDB_READ_POOL) if is_ferretdb else None
        return cls(client, name, is_ferretdb, reader, cache)

    def __getitem__(self, name: str):
        """A collection for writes (and reads that feed a write)."""
        return self.db[name]

    def read(self, name: str):
        """A collection for plain reads: pooled even against FerretDB."""
        return self.read_db[name]

    async def find_by_id(self, name: str, oid):
        """A plain read of one document by _id, from the read cache when it is on."""
        if self.cache is None:
            return await self.read_db[name].find_one({"_id": oid})
        # The collection object is made only on a miss (PyMongo builds a new one per lookup).
        return await self.cache.read(name, oid, lambda: self.read_db[name].find_one({"_id": oid}))

    async def ensure_indexes(self) -> None:
        for collection, models in INDEXES.items():
            existing = {index["name"] async for index in await self.db[collection].list_indexes()}
            for model in models:
                # One index per command: FerretDB 1.24 panics on a createIndexes naming several
                # indexes that all exist already.
                if model.document["name"] not in existing:
                    if model.document["name"] == "change_unique":
                        await self._give_old_events_a_change_id()
                    await self.db[collection].create_indexes([model])
        self.indexes_ready = True

    async def _give_old_events_a_change_id(self) -> None:
        """Events stored before changes had ids get one each, so the unique index can exist."""
        events = self.db["events"]
        async for doc in events.find({"cid": {"$exists": False}}, {"_id": 1}):
            await events.update_one({"_id": doc["_id"]}, {"$set": {"cid": f"seq:{doc['_id']}"}})

    async def ping(self, via_reads: bool = False) -> bool:
        """`via_reads`: through the read pool, not queued behind writes on FerretDB's one
        write connection."""
        try:
            await (self.read_db if via_reads else self.db).command("ping")
            return True
        except PyMongoError:
            return False

    async def close(self) -> None:
        await self.client.close()
        if self.reader is not None:
            await self.reader.close()


def _client(uri: str, timeout: float, pool_size: int, listeners=()) -> AsyncMongoClient:
    ms = int(timeout * 1000)
    return AsyncMongoClient(
        uri, tz_aware=True, maxPoolSize=pool_size, timeoutMS=ms,
        serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, appname="tornado-app",
        event_listeners=list(listeners))
