"""The Python share of one event's fan-out: the real hub, sessions and subscriptions, with
sockets whose `send` is a C builtin that does nothing. What the `ws` scenario measures on top of
this is the kernel's work for one `send` per subscriber.

    python -m bench.fanout_cpu [--subscribers N] [--runs N]
"""

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace

from tornado_app.realtime.hub import Hub
from tornado_app.realtime.session import EventSession


class NullSocket:
    """Takes every byte at once and goes nowhere."""
    __slots__ = ()
    send = staticmethod(len)

    def fileno(self) -> int:
        return -1


async def measure(subscribers: int, runs: int, deflate=None, data: dict | None = None) -> list[float]:
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
    timings = []
    for _ in range(runs):
        event = {"seq": hub.last_seq + 1, "channel": "posts", "type": "post.created",
                 "data": data or {"id": "6560f0c2a1b2c3d4e5f60718", "title": "t" * 40},
                 "created_at": "2026-11-22T00:00:00Z"}
        start = time.perf_counter()
        hub.on_event(event)
        while hub._outbox:  # the shares of later turns
            await asyncio.sleep(0)
        timings.append(time.perf_counter() - start)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=19000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    timings = asyncio.run(measure(args.subscribers, args.runs))
    ms = statistics.median(timings) * 1000
    print(f"{args.subscribers:,} subscribers, Python only: median {ms:.1f} ms "
          f"({ms * 1000 / args.subscribers:.2f} µs per subscriber) over {args.runs} runs")


if __name__ == "__main__":
    main()
