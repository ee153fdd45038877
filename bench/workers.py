"""Scenario workers: ours with --workers 3 and a Redis of our own, as many subscribed WebSocket
connections as the target (50,000 in full mode) spread over client processes and source
addresses, then one event to all of them through Redis.

    python -m bench.workers [--quick]
"""

from . import cli, hold
from .procs import Redis
from .targets import Ours

WORKERS = 3


def measure(stack, mode) -> dict:
    redis = Redis(stack.log_dir)
    try:
        target = Ours(stack, workers=WORKERS, redis_url=redis.url)
        runs = [{target.name: cli.attempt(f"workers run {i + 1}", hold.run, target, "ws",
                                          mode.n_workers, mode)}
                for i in range(mode.runs)]
    finally:
        redis.stop()
    return {"runs": runs, "workers": WORKERS, "targets": {target.name: target.label}}


if __name__ == "__main__":
    cli.main("workers", measure)
