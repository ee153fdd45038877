"""Scenario http: wrk -t2 -c64 against ours' /health vs the peers' hello, and ours'
GET /api/v1/posts/{id} vs the peers' same query on the same FerretDB.

    python -m bench.httpload [--quick]
"""

from . import api, cli, wrkrun
from .targets import Ours, peers


def url(target, path: str) -> str:
    return f"http://127.0.0.1:{target.port}{path}"


def one(target, stack, mode) -> dict:
    target.start()
    try:
        post_path = target.post_path(stack.post_id)
        status, _, _ = api.request(target.port, "GET", post_path)
        if status != 200:
            raise RuntimeError(f"GET {post_path} answered {status} before the load")
        return {"hello": wrkrun.run(url(target, target.hello_path), mode.wrk_duration),
                "post": wrkrun.run(url(target, post_path), mode.wrk_duration),
                "server_code": target.code}
    finally:
        target.stop()


def measure(stack, mode) -> dict:
    targets = [Ours(stack)] + peers(stack)
    runs = []
    for i in range(mode.runs):
        runs.append({t.name: cli.attempt(f"http run {i + 1} {t.name}", one, t, stack, mode)
                     for t in targets})
    return {"runs": runs, "targets": {t.name: t.label for t in targets}}


if __name__ == "__main__":
    cli.main("http", measure)
