"""Scenario mixed: HTTP latency (wrk --latency) on ours without subscribers, then again while
it holds N idle subscribed WebSockets. The target: p99 with them at most 2x p99 without.

    python -m bench.mixed [--quick]
"""

from . import cli, hold, wrkrun
from .targets import Ours


def http_load(target, stack, mode) -> dict:
    base = f"http://127.0.0.1:{target.port}"
    return {"health": wrkrun.run(base + "/health", mode.wrk_duration),
            "post": wrkrun.run(base + target.post_path(stack.post_id), mode.wrk_duration)}


def without(target, stack, mode) -> dict:
    target.start()
    try:
        return {**http_load(target, stack, mode), "server_code": target.code}
    finally:
        target.stop()


def measure(stack, mode) -> dict:
    target = Ours(stack)
    runs = []
    for i in range(mode.runs):
        row = {"without": cli.attempt(f"mixed run {i + 1} without subscribers", without, target,
                                      stack, mode)}
        held = cli.attempt(f"mixed run {i + 1} with subscribers", hold.run, target, "ws",
                           mode.n_ours, mode,
                           during_idle=lambda t: http_load(t, stack, mode))
        row["with"] = held.pop("idle", None) if "error" not in held else held
        row["hold"] = held
        runs.append({target.name: row})
    return {"runs": runs, "targets": {target.name: target.label}}


if __name__ == "__main__":
    cli.main("mixed", measure)
