"""Runs a server's run.py with every database command it sends timed (pymongo's command
monitoring), and writes the totals to a JSON file when the server exits.

    cd TREE && python /path/to/bench/dbtrace.py OUT.json run.py [run.py's arguments]

SIGUSR1 writes the totals so far to OUT.json.1, OUT.json.2, ... (a reading before and after a
load: their difference is the load's).

Nothing in the server changes: the listener is registered before run.py is imported, and the
code tree is the working directory (first on sys.path, as when run.py is started directly).
Each command is keyed by name, collection and the shape of its filter; `pushdown` says whether
FerretDB 1.24 (SQLite) can serve the filter from its primary key: only a filter that is exactly
`{_id: <ObjectId or string>}` is; any other filter reads and decodes every document of the
collection.
"""

import atexit
import json
import os
import runpy
import signal
import sys
import time

from bson import ObjectId
from pymongo import monitoring

FILTERS = {"find": lambda c: c.get("filter"), "findAndModify": lambda c: c.get("query"),
           "update": lambda c: (c.get("updates") or [{}])[0].get("q"),
           "delete": lambda c: (c.get("deletes") or [{}])[0].get("q"),
           "count": lambda c: c.get("query"), "aggregate": lambda c: None}


def shape(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {shape(v) if k.startswith('$') else _kind(v)}"
                               for k, v in value.items()) + "}"
    return _kind(value)


def _kind(value) -> str:
    if isinstance(value, dict):
        return shape(value)
    return type(value).__name__


def pushdown(filter_) -> bool:
    return (isinstance(filter_, dict) and list(filter_) == ["_id"]
            and isinstance(filter_["_id"], (ObjectId, str)))


class Timer(monitoring.CommandListener):
    # No lock: the listener runs on the event loop's thread, and a snapshot from the signal
    # handler (same thread, between two bytecodes) is at most one command off.
    def __init__(self):
        self.pending = {}
        self.totals = {}

    def started(self, event):
        name = event.command_name
        collection = event.command.get(name) if isinstance(event.command.get(name), str) else ""
        filter_ = FILTERS[name](event.command) if name in FILTERS else None
        if name == "update" and len(event.command.get("updates") or ()) > 1:
            name = f"update x{len(event.command['updates'])}"
        key = f"{name} {collection} {shape(filter_) if filter_ is not None else ''}".strip()
        self.pending[(event.connection_id, event.request_id)] = (
            key, filter_ is None or pushdown(filter_))

    def _done(self, event, failed: bool):
        key, pushed = self.pending.pop((event.connection_id, event.request_id), ("?", True))
        row = self.totals.setdefault(key, {"count": 0, "failed": 0, "seconds": 0.0,
                                           "pushdown": pushed})
        row["count"] += 1
        row["failed"] += failed
        row["seconds"] += event.duration_micros / 1e6

    def succeeded(self, event):
        self._done(event, False)

    def failed(self, event):
        self._done(event, True)


def main() -> None:
    out_path, script, *args = sys.argv[1:]
    timer = Timer()
    monitoring.register(timer)

    snapshots = iter(range(1, 1 << 30))

    def write(path):
        data = json.dumps({"totals": timer.totals, "written": time.time()}, indent=1)
        with open(path + ".tmp", "w") as f:
            f.write(data)
        os.replace(path + ".tmp", path)  # a reader never sees half a file

    atexit.register(write, out_path)
    signal.signal(signal.SIGUSR1, lambda *_: write(f"{out_path}.{next(snapshots)}"))
    # As `python run.py` would have it: the tree first, not this file's directory (bench/,
    # whose modules would shadow the server's own).
    sys.path[0] = os.getcwd()
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
