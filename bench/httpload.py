"""Scenario http: wrk -t2 -c64 against ours' /health vs the peers' hello, and ours'
GET /api/v1/posts/{id} vs the peers' same query on the same FerretDB.

    python -m bench.httpload [--quick]
"""

from . import api, cli, procs, wrkrun
from .report import UNCACHED
from .targets import Ours, peers


def url(target, path: str) -> str:
    return f"http://127.0.0.1:{target.port}{path}"


def load(target, stack, path: str, duration: str) -> dict:
    """wrk on one URL, with the CPU time the server and FerretDB spent per answered request:
    where the time goes when one server is slower than another on the same query."""
    server = [target.proc.pid] + target.proc.children()
    database = stack.ferretdb.process.pid

    def cpu():
        split = [procs.cpu_split(pid) for pid in server]
        return (sum(u + s for u, s in split), sum(s for _, s in split),
                procs.cpu_seconds(database))

    server_before, system_before, db_before = cpu()
    result = wrkrun.run(url(target, path), duration)
    server_after, system_after, db_after = cpu()
    if result.get("requests"):
        result["server_cpu_us"] = (server_after - server_before) / result["requests"] * 1e6
        # The kernel's part (the sockets' reads and writes): what is left is the Python.
        result["server_system_us"] = (system_after - system_before) / result["requests"] * 1e6
        result["db_cpu_us"] = (db_after - db_before) / result["requests"] * 1e6
    return result


def one(target, stack, mode) -> dict:
    target.start()
    try:
        post_path = target.post_path(stack.post_id)
        status, _, _ = api.request(target.port, "GET", post_path)
        if status != 200:
            raise RuntimeError(f"GET {post_path} answered {status} before the load")
        return {"hello": load(target, stack, target.hello_path, mode.wrk_duration),
                "post": load(target, stack, post_path, mode.wrk_duration),
                "server_code": target.code}
    finally:
        target.stop()


def measure(stack, mode) -> dict:
    # Ours also with its read cache off: every GET of the post goes to FerretDB, as the peers'
    # do. By default (READ_CACHE=auto: on against FerretDB) it is served from memory.
    targets = [Ours(stack), Ours(stack, name=UNCACHED, settings={"READ_CACHE": "off"})] \
        + peers(stack)
    runs = []
    for i in range(mode.runs):
        runs.append({t.name: cli.attempt(f"http run {i + 1} {t.name}", one, t, stack, mode)
                     for t in targets})
    return {"runs": runs, "targets": {t.name: t.label for t in targets}}


if __name__ == "__main__":
    cli.main("http", measure)
