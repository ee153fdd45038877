"""Scenario writes: POST /api/v1/posts requests/s (only the 201s) and p50/p99 latency of one code
tree, or of two trees ("before" and "after" a change) run by turns.

    python -m bench.writes --before /path/to/other/checkout [--runs 3] [--quick]
    python -m bench.run writes [--before PATH] [--runs N] [--quick]

"after" is this checkout; "before" (optional) is any other checkout of the server. Runs are
interleaved (before, after, before, after, ...): the machine is shared, and its load drifts over
minutes, so each pair is measured under much the same load, and the spread is reported.

Every run is fresh: a FerretDB of its own in a temporary directory (so both trees write into an
empty database), the tree's `run.py` started with the tree as its working directory (so the
tree's own `tornado_app` and `handlers` are imported, which is checked first), a user registered
and logged in, then `wrk -t2 -c32 -d10s -s post.lua`: every request a POST with the same JSON
body and the bearer token. The Lua script counts the answers by status; only 201s count.

What a run also records, to show where the time goes: the CPU time of the server and of
FerretDB per 201, and the database commands per 201 (FerretDB's own counters from
`serverStatus`, read before and after the load).

With --seed-posts N, the database holds N posts (written directly, no pending events) before
the load: what a write costs can depend on how many documents its collection holds.

With --trace-db, every server runs under bench/dbtrace.py, which times each database command
the server sends, keyed by command, collection and filter shape, and marks the filters FerretDB
cannot serve from its primary key. Tracing slows the server: its figures are for finding where
the time goes, not for comparing with untraced runs.

With --py-spy BIN (py-spy is not a dependency: install it anywhere, e.g. a venv of its own),
the server is sampled during the load, and its stacks (py-spy's "raw", collapsed format) are saved
as bench/results/<mode>/logs/<scenario>/pyspy-<tree>-<run>.txt.

Results go to bench/results/<mode>/writes.json, a summary to stdout.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient

from . import api, cli, procs, wrkrun
from .config import ROOT
from .procs import EmbeddedFerretDB
from .targets import DB_NAME, Ours

THREADS = 2
CONNECTIONS = 32
# Every answer counts, however slow: wrk's default 2 s would drop the slowest from the latency
# figures (and count them as socket errors).
WRK_TIMEOUT = "60s"
BODY = {"title": "Benchmark post", "content": "One write, and its event.", "tags": ["bench"]}

LUA = """-- POST /api/v1/posts with a bearer token; every thread counts the answers by status.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = [==[{body}]==]

local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {{}}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("status %d: %d\\n", status, n))
    end
  end
end
"""


def lua_script(token: str, body: dict = BODY) -> str:
    return LUA.format(token=token, body=json.dumps(body))


class Scratch:
    """The scenario's stack: only where logs go. Each run starts its own FerretDB (`one`)."""

    def __init__(self, mode, scenario: str):
        self.log_dir = mode.results_dir / "logs" / scenario

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class RunStack:
    """One run's FerretDB in a temporary directory, the `stack` that `Ours` needs."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-writes-"))
        self.ferretdb = EmbeddedFerretDB(self.tmp, os.environ.get("FERRETDB_BIN"))
        self.uri = None

    def __enter__(self):
        try:
            self.uri = self.ferretdb.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        self.ferretdb.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def tree_env(tree: Path) -> dict:
    # The tree first on sys.path (the script's directory is anyway; PYTHONPATH makes sure), and
    # never "safe path" mode, which would drop it and import the installed (editable) package.
    return {"PYTHONPATH": str(tree), "PYTHONSAFEPATH": ""}


def imported_from(tree: Path) -> dict:
    """Where the server's interpreter, started as the run starts it, imports our packages from;
    raises unless both come from `tree`."""
    code = "import json, tornado_app, handlers; print(json.dumps([tornado_app.__file__, " \
           "handlers.__file__]))"
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True,
                         env={**os.environ, **tree_env(tree)}, timeout=60)
    if out.returncode:
        raise RuntimeError(f"cannot import the server from {tree}: {out.stderr[-1000:]}")
    files = json.loads(out.stdout)
    for file in files:
        if not Path(file).resolve().is_relative_to(tree):
            raise RuntimeError(f"{tree}: the server would import {file}, not the tree's own")
    return {"tornado_app": files[0], "handlers": files[1]}


class TreeServer(Ours):
    """Our server from a given code tree, against the run's FerretDB; with `trace`, run.py under
    bench/dbtrace.py, its database commands timed."""

    def __init__(self, stack, root: Path, name: str, trace: Path | None = None):
        super().__init__(stack, root=root, name=name)
        self.trace = trace
        self.readings = 0

    def command(self) -> list[str]:
        if self.trace is None:
            return super().command()
        return [sys.executable, str(ROOT / "bench" / "dbtrace.py"), str(self.trace), "run.py",
                "--workers", str(self.workers)]

    def env(self) -> dict:
        return {**super().env(), **tree_env(self.root)}

    def trace_reading(self, timeout: float = 10.0) -> dict:
        """The traced commands so far (dbtrace writes them on SIGUSR1)."""
        self.readings += 1
        path = Path(f"{self.trace}.{self.readings}")
        os.kill(self.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no trace reading from the server:\n{self.proc.tail()}")
            time.sleep(0.05)
        return json.loads(path.read_text())["totals"]


def trace_per_201(before: dict, after: dict, created: int) -> dict:
    """Per traced command key: how many per 201, their mean time and their time per 201 (ms),
    most time first."""
    rows = {}
    for key, row in after.items():
        first = before.get(key, {"count": 0, "failed": 0, "seconds": 0.0})
        count = row["count"] - first["count"]
        if count <= 0:
            continue
        seconds = row["seconds"] - first["seconds"]
        rows[key] = {"per_201": round(count / created, 3),
                     "failed_per_201": round((row["failed"] - first["failed"]) / created, 3),
                     "mean_ms": round(seconds / count * 1000, 3),
                     "ms_per_201": round(seconds / created * 1000, 3),
                     "pushdown": row["pushdown"]}
    return dict(sorted(rows.items(), key=lambda item: -item[1]["ms_per_201"]))


def statuses(out: str) -> dict:
    counts: dict = {}
    for status, n in re.findall(r"^status (\d+): (\d+)$", out, re.M):
        counts[status] = counts.get(status, 0) + int(n)
    return counts


def db_commands(uri: str) -> dict:
    """FerretDB's count of each command it has been sent (every round trip to the database),
    and of those that failed (`NAME failed`)."""
    with MongoClient(uri, serverSelectionTimeoutMS=10000) as client:
        metrics = client.admin.command("serverStatus").get("metrics", {}).get("commands", {})
    counts = {name: value.get("total", 0) for name, value in metrics.items()}
    counts.update({f"{name} failed": value["failed"] for name, value in metrics.items()
                   if value.get("failed")})
    return counts


def collection_sizes(uri: str) -> dict:
    with MongoClient(uri, serverSelectionTimeoutMS=10000) as client:
        db = client[DB_NAME]
        return {name: db[name].estimated_document_count()
                for name in sorted(db.list_collection_names())}


def seed_posts(uri: str, count: int) -> None:
    """`count` posts by one author, shaped as both trees store them (none has pending events)."""
    from datetime import datetime, timezone

    from bson import ObjectId
    now = datetime.now(timezone.utc)
    author = ObjectId()
    with MongoClient(uri, serverSelectionTimeoutMS=10000) as client:
        posts = client[DB_NAME]["posts"]
        for start in range(0, count, 1000):
            posts.insert_many([{**BODY, "author_id": author, "author_username": "seeded",
                                "comment_count": 0, "version": 1, "created_at": now,
                                "updated_at": now} for _ in range(min(1000, count - start))])


def one(label: str, tree: Path, scratch, mode, threads: int, connections: int,
        trace: bool = False, seed: int = 0, py_spy: str | None = None) -> dict:
    """One run of one tree: fresh FerretDB, fresh server, the load, everything stopped."""
    imported = imported_from(tree)
    with RunStack(scratch.log_dir) as stack:
        server = TreeServer(stack, root=tree, name=f"writes-{label}",
                            trace=stack.tmp / "dbtrace.json" if trace else None)
        server.start()
        try:
            if seed:
                seed_posts(stack.uri, seed)
            status, doc, _ = api.create_post(server.port, server.token, "Check post")
            if status != 201:
                raise RuntimeError(f"a first POST /api/v1/posts answered {status}: {doc}")
            script = stack.tmp / "post.lua"
            script.write_text(lua_script(server.token))
            pids = server.pids()
            database = stack.ferretdb.process.pid

            def cpu():
                return (sum(procs.cpu_seconds(pid) for pid in pids),
                        procs.cpu_seconds(database))

            traced_before = server.trace_reading() if trace else None
            commands_before = db_commands(stack.uri)
            server_before, db_before = cpu()
            sampler = None
            if py_spy:
                profile = scratch.log_dir / f"pyspy-{label}-{server.runs_started}-{os.getpid()}.txt"
                sampler = subprocess.Popen(
                    [py_spy, "record", "--nonblocking", "--format", "raw", "--output",
                     str(profile), "--pid", str(server.proc.pid),
                     "--duration", str(int(wrkrun._ms(mode.wrk_duration) / 1000))],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result = wrkrun.run(f"http://127.0.0.1:{server.port}/api/v1/posts",
                                mode.wrk_duration, threads, connections, str(script),
                                WRK_TIMEOUT)
            server_after, db_after = cpu()
            commands_after = db_commands(stack.uri)
            traced_after = server.trace_reading() if trace else None
            if sampler is not None:
                _, err = sampler.communicate(timeout=60)
                if sampler.returncode:
                    raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
        finally:
            server.stop()
        counts = statuses(result.pop("out", ""))
        created = counts.get("201", 0)
        if py_spy:
            result["py_spy_profile"] = str(profile)
        result.update(tree=str(tree), tree_code=server.code, imported=imported,
                      statuses=counts, created=created,
                      non_201=sum(n for s, n in counts.items() if s != "201"),
                      collections=collection_sizes(stack.uri))
        if result.get("seconds"):
            result["created_per_s"] = created / result["seconds"]
        if created:
            result["server_cpu_us"] = (server_after - server_before) / created * 1e6
            result["db_cpu_us"] = (db_after - db_before) / created * 1e6
            # Minus the one serverStatus that took the first reading.
            deltas = {name: total - commands_before.get(name, 0) - (name == "serverStatus")
                      for name, total in commands_after.items()}
            result["db_commands_per_201"] = {name: round(n / created, 3)
                                             for name, n in sorted(deltas.items()) if n}
            if trace:
                result["traced_per_201"] = trace_per_201(traced_before, traced_after, created)
        if not counts:
            result["error"] = "the Lua script reported no answers"
        return result


def measure(stack, mode, before: Path | None = None, threads: int = THREADS,
            connections: int = CONNECTIONS, trace: bool = False, seed: int = 0,
            py_spy: str | None = None) -> dict:
    trees = ([("before", Path(before).resolve())] if before else []) + [("after", ROOT)]
    runs = []
    for i in range(mode.runs):
        runs.append({label: cli.attempt(f"writes run {i + 1} {label} ({tree})", one, label, tree,
                                        stack, mode, threads, connections, trace, seed, py_spy)
                     for label, tree in trees})
    data = {"runs": runs, "targets": {label: str(tree) for label, tree in trees},
            "interpreter": sys.executable, "traced": trace, "seed_posts": seed,
            "load": f"wrk -t{threads} -c{connections} -d{mode.wrk_duration} -s post.lua "
                    "(POST /api/v1/posts, bearer token)"
                    + (f", {seed:,} posts in the database first" if seed else "")}
    data["summary"] = summarize(data)
    return data


def scenario(before: Path | None = None, threads: int = THREADS, connections: int = CONNECTIONS,
             trace: bool = False, seed: int = 0, py_spy: str | None = None):
    """`measure` as bench.cli runs it: no shared stack, and the arguments in its command line."""
    def measure_writes(stack, mode):
        return measure(stack, mode, before, threads, connections, trace, seed, py_spy)
    measure_writes.stack_class = Scratch
    measure_writes.extra_args = " ".join(
        ([f"--before {before}"] if before else []) + (["--trace-db"] if trace else [])
        + ([f"--seed-posts {seed}"] if seed else []) + ([f"--py-spy {py_spy}"] if py_spy else [])
        + ([f"--threads {threads}"] if threads != THREADS else [])
        + ([f"--connections {connections}"] if connections != CONNECTIONS else []))
    return measure_writes


# --- the summary --------------------------------------------------------------------------------

def spread(values: list) -> dict | None:
    if not values:
        return None
    median = statistics.median(values)
    return {"median": median, "min": min(values), "max": max(values), "runs": values,
            "spread_pct": (max(values) - min(values)) / median * 100 if median else None}


def summarize(data: dict) -> dict:
    out = {}
    for label in data["targets"]:
        results = [run.get(label) or {} for run in data["runs"]]
        ok = [r for r in results if "error" not in r]
        out[label] = {key: spread([r[key] for r in ok if r.get(key) is not None])
                      for key in ("created_per_s", "p50_ms", "p99_ms", "server_cpu_us",
                                  "db_cpu_us", "loadavg_start")}
        out[label]["non_201"] = sum(r.get("non_201", 0) for r in ok)
        out[label]["failed_runs"] = len(results) - len(ok)
        commands = [r["db_commands_per_201"] for r in ok if r.get("db_commands_per_201")]
        if commands:
            names = sorted({name for c in commands for name in c})
            out[label]["db_commands_per_201"] = {
                name: statistics.median(c.get(name, 0) for c in commands) for name in names}
    if "before" in out and "after" in out:
        b, a = out["before"]["created_per_s"], out["after"]["created_per_s"]
        if a and b:
            out["ratio_of_medians"] = a["median"] / b["median"]
        pairs = [(run.get("after") or {}).get("created_per_s", 0)
                 / run["before"]["created_per_s"]
                 for run in data["runs"]
                 if (run.get("before") or {}).get("created_per_s")
                 and (run.get("after") or {}).get("created_per_s")]
        out["ratio_per_pair"] = pairs
    return out


def text(data: dict) -> str:
    summary = data.get("summary") or {}
    if "error" in data:
        return f"writes FAILED: {data['error']}"
    lines = [f"$ {data.get('command')}",
             f"POST /api/v1/posts, {data['load']}, {len(data['runs'])} run(s) per tree"
             + (", interleaved before/after" if "before" in summary else ""),
             f"{'':8} {'201/s median (min-max, spread)':34} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'server us/201':>14} {'db us/201':>10} {'non-201':>8} {'loadavg':>12}"]
    for label in data["targets"]:
        s = summary.get(label) or {}
        rate = s.get("created_per_s")

        def med(key, digits=1):
            value = s.get(key)
            return f"{value['median']:.{digits}f}" if value else "-"
        rate_text = (f"{rate['median']:.1f} ({rate['min']:.1f}-{rate['max']:.1f}, "
                     f"{rate['spread_pct']:.0f}%)") if rate else "-"
        load = s.get("loadavg_start")
        load_text = f"{load['min']:.1f}-{load['max']:.1f}" if load else "-"
        lines.append(f"{label:8} {rate_text:34} {med('p50_ms'):>8} {med('p99_ms'):>8} "
                     f"{med('server_cpu_us', 0):>14} {med('db_cpu_us', 0):>10} "
                     f"{s.get('non_201', 0):>8} {load_text:>12}")
        errors = [(run.get(label) or {}).get("socket_errors") for run in data["runs"]]
        if any(errors):
            lines.append(f"{'':8} wrk socket errors: " + "; ".join(e or "none" for e in errors))
        if s.get("failed_runs"):
            lines.append(f"{'':8} {s['failed_runs']} run(s) failed: see the results JSON")
        if s.get("db_commands_per_201"):
            lines.append(f"{'':8} database commands per 201: " + ", ".join(
                f"{name} {n:.2f}" for name, n in s["db_commands_per_201"].items()))
    if data.get("traced"):
        lines += ["", "Traced (the listener slows the server; these runs are not the benchmark):"]
        for label in data["targets"]:
            for i, run in enumerate(data["runs"], 1):
                rows = (run.get(label) or {}).get("traced_per_201")
                if not rows:
                    continue
                lines.append(f"{label} run {i}: database time per 201 by command "
                             "(count per 201, mean ms, ms per 201; * = scans the collection)")
                for key, row in rows.items():
                    lines.append(f"  {row['per_201']:7.3f} x {row['mean_ms']:8.3f} ms = "
                                 f"{row['ms_per_201']:8.3f} ms  {'' if row['pushdown'] else '*'}"
                                 f"{key}" + (f"  ({row['failed_per_201']} failed per 201)"
                                             if row["failed_per_201"] else ""))
    if "ratio_of_medians" in summary:
        lines.append(f"after/before (medians of 201/s): {summary['ratio_of_medians']:.3f}; "
                     "pair by pair: " + ", ".join(f"{r:.3f}" for r in summary["ratio_per_pair"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="POST /api/v1/posts requests/s, this tree "
                                     "('after') against another ('before'), interleaved")
    parser.add_argument("--before", type=Path, help="another checkout of the server")
    parser.add_argument("--runs", type=int, help="runs per tree (default: the mode's, 3 full)")
    parser.add_argument("--quick", action="store_true", help="one run of 3 s (a smoke run)")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--seed-posts", type=int, default=0, metavar="N",
                        help="N posts in the database before the load")
    parser.add_argument("--py-spy", metavar="BIN", help="sample the server with this py-spy")
    parser.add_argument("--trace-db", action="store_true",
                        help="time every database command (slows the server: for profiling)")
    args = parser.parse_args()
    if args.before is not None and not (args.before / "run.py").is_file():
        parser.error(f"{args.before} has no run.py")
    # Profiling runs (traced, or on a seeded database) keep the benchmark's own results.
    name = "writes" + ("-traced" if args.trace_db else "") + ("-pyspy" if args.py_spy else "") + \
        (f"-seed{args.seed_posts}" if args.seed_posts else "")
    measure_writes = scenario(args.before, args.threads, args.connections, args.trace_db,
                              args.seed_posts, args.py_spy)
    measure_writes.command = " ".join(["python -m bench.writes", *sys.argv[1:]])
    data = cli.run_scenario(name, measure_writes, args.quick, args.runs, write_report=False)
    print(text(data))


if __name__ == "__main__":
    main()
