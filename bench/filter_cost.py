"""What one database command of the write path costs on FerretDB 1.24 (SQLite) as the posts
collection grows: the commands POST /api/v1/posts sends before and after the outbox, each timed
alone (one client, one command at a time) at several collection sizes.

    python -m bench.filter_cost [--sizes 0,1000,5000] [--repeat 30]

FerretDB 1.24 serves a filter from the table's primary key only when it is exactly
`{_id: <ObjectId or string>}`; any other filter, even `{_id: X, other: ...}`, reads and decodes
every document of the collection. The "pushed down" variants show what the same command costs
with a filter of `_id` alone. A FerretDB of its own in a temporary directory, stopped at the end.
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bson import ObjectId
from pymongo import MongoClient, UpdateOne

from .procs import EmbeddedFerretDB


def post(with_outbox: bool) -> dict:
    now = datetime.now(timezone.utc)
    doc = {"_id": ObjectId(), "title": "Benchmark post", "content": "One write, and its event.",
           "tags": ["bench"], "author_id": ObjectId(), "author_username": "benchuser",
           "comment_count": 0, "version": 1, "created_at": now, "updated_at": now}
    if with_outbox:
        doc["_outbox"] = [{"cid": doc["_id"], "channel": "posts", "type": "post.created",
                           "data": {"id": str(doc["_id"]), "title": doc["title"]}}]
    return doc


def timed(fn, repeat: int) -> float:
    """Median milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure_size(posts, size: int, repeat: int) -> dict:
    have = posts.estimated_document_count()
    while have < size:
        batch = min(1000, size - have)
        posts.insert_many([post(False) for _ in range(batch)])
        have += batch
    out = {}
    out["insert post (before)"] = timed(lambda: posts.insert_one(post(False)), repeat)
    out["insert post with _outbox (after)"] = timed(lambda: posts.insert_one(post(True)), repeat)
    docs = [post(True) for _ in range(repeat)]
    posts.insert_many(docs)
    pending = iter(docs)

    def pop_after():
        doc = next(pending)
        posts.bulk_write([UpdateOne({"_id": doc["_id"], "_outbox.0.cid": doc["_id"]},
                                    {"$pop": {"_outbox": -1}})], ordered=True)
    out["pop {_id, _outbox.0.cid} (after)"] = timed(pop_after, repeat)
    docs = [post(True) for _ in range(repeat)]
    posts.insert_many(docs)
    pending = iter(docs)

    def pop_by_id():
        posts.update_one({"_id": next(pending)["_id"]}, {"$pop": {"_outbox": -1}})
    out["pop {_id} (pushed down)"] = timed(pop_by_id, repeat)
    oid = docs[0]["_id"]
    out["find_one {_id} (before's read)"] = timed(lambda: posts.find_one({"_id": oid}), repeat)
    out["find_one {_id, _gone: {$ne: true}} (after's read)"] = timed(
        lambda: posts.find_one({"_id": oid, "_gone": {"$ne": True}}), repeat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="FerretDB command cost against collection size")
    parser.add_argument("--sizes", default="0,1000,5000",
                        help="collection sizes (posts), comma-separated, ascending")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="bench-filter-"))
    ferretdb = EmbeddedFerretDB(tmp, os.environ.get("FERRETDB_BIN"))
    try:
        uri = ferretdb.start()
        with MongoClient(uri) as client:
            posts = client["filter_cost"]["posts"]
            rows = {}
            for size in sizes:
                rows[size] = measure_size(posts, size, args.repeat)
    finally:
        ferretdb.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    names = list(rows[sizes[0]])
    width = max(map(len, names))
    print(f"median ms of {args.repeat} commands, one at a time, by posts in the collection "
          f"(load average {os.getloadavg()[0]:.1f})")
    print(f"{'':{width}}  " + "".join(f"{size:>10,}" for size in sizes))
    for name in names:
        print(f"{name:{width}}  " + "".join(f"{rows[size][name]:>10.2f}" for size in sizes))


if __name__ == "__main__":
    main()
