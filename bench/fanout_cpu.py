"""The Python share of one event's fan-out: the real hub, sessions and subscriptions, with
sockets whose `send` is a C builtin that does nothing. What the `ws` scenario measures on top of
this is the kernel's work for one `send` per subscriber.

    python -m bench.fanout_cpu [--subscribers N] [--runs N] [--metrics MODE]

--metrics: what the metrics cost on this path. `process` and `shared` time each event's fan-out
into the histogram the server uses (in-process values for one worker, memory-mapped files for
`--workers N`); `shared-per-delivery` also adds one shared counter increment per delivery, and
`int-per-delivery` a plain int increment through the same wrapper (what the server avoids, and
its baseline).
"""

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, Histogram, values

from tornado_app.realtime.hub import Hub
from tornado_app.realtime.session import EventSession


class NullSocket:
    """Takes every byte at once and goes nowhere."""
    __slots__ = ()
    send = staticmethod(len)

    def fileno(self) -> int:
        return -1


METRICS = ("none", "process", "shared", "shared-per-delivery", "int-per-delivery")


def instrument(hub, mode: str) -> None:
    if mode == "none":
        return
    from tornado_app.runtime.metrics import FANOUT_BUCKETS
    registry = CollectorRegistry()
    hub.on_fanout = Histogram("fanout", "f", buckets=FANOUT_BUCKETS, registry=registry).observe
    if mode == "int-per-delivery":
        counted = [0]

        def count() -> None:
            counted[0] += 1
    elif mode == "shared-per-delivery":
        count = Counter("delivered", "d", registry=registry).inc
    else:
        return
    for channel, subscribers in hub.channels.items():
        hub.channels[channel] = {Counted(subscriber, count) for subscriber in subscribers}


class Counted:
    """A subscriber whose every delivery is counted first."""
    __slots__ = ("subscriber", "count")

    def __init__(self, subscriber, count):
        self.subscriber = subscriber
        self.count = count

    def deliver(self, records) -> None:
        # The hub hands over every record ready for a subscriber at once (coalescing): count
        # each delivered record, as a per-delivery metric would.
        for _ in records:
            self.count()
        self.subscriber.deliver(records)


async def measure(subscribers: int, runs: int, metrics: str = "none", deflate=None,
                  data: dict | None = None) -> list[float]:
    """`deflate`: the sessions' permessage-deflate parameters (None: plain); `data`: the
    event's data (default: a short post)."""
    hub = Hub(event_log=None)
    hub.started = True
    settings = SimpleNamespace(ws_max_message_bytes=65536, ws_max_pending_bytes=1 << 20,
                               ws_max_messages_per_second=50.0)
    ctx = SimpleNamespace(settings=settings, hub=hub,
                          connections=SimpleNamespace(sockets=set(), shutting_down=False))
    sessions = [EventSession(NullSocket(), ctx, None, None, deflate) for _ in range(subscribers)]
    for session in sessions:
        session.subscription.add_live(["posts"])
    instrument(hub, metrics)
    timings = []
    for _ in range(runs):
        event = {"seq": hub.last_seq + 1, "channel": "posts", "type": "post.created",
                 "data": data or {"id": "6560f0c2a1b2c3d4e5f60718", "title": "t" * 40},
                 "created_at": "2026-11-22T00:00:00Z"}
        start = time.perf_counter()
        hub.on_event(event)
        while hub._turns:  # the shares of later turns
            await asyncio.sleep(0)
        timings.append(time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=19000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--metrics", choices=METRICS, default="none")
    args = parser.parse_args()
    shared = args.metrics.startswith("shared")
    if shared:  # as SharedMetrics.prepare does for --workers N
        directory = tempfile.mkdtemp(prefix="fanout-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        values.ValueClass = values.MultiProcessValue()
    try:
        timings = asyncio.run(measure(args.subscribers, args.runs, args.metrics))
    finally:
        if shared:
            shutil.rmtree(directory)
    ms = statistics.median(timings) * 1000
    print(f"{args.subscribers:,} subscribers, Python only, metrics {args.metrics}: median "
          f"{ms:.1f} ms ({ms * 1000 / args.subscribers:.2f} µs per subscriber) over "
          f"{args.runs} runs")


if __name__ == "__main__":
    main()
