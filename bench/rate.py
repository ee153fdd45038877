"""Scenario rate: events at a fixed rate to N idle subscribers for a while: how late each event
reaches each subscriber (p50, p99, max) and the server's CPU per delivered event; ours against
both peers at the same N and rate.

    open N WebSockets (ours: subscribed to `posts`), settle
    for DURATION seconds, RATE events a second, each published on time whatever the answers
    (ours: POST /api/v1/posts; peers: POST /broadcast), its title the time it was sent
    one connection in SAMPLE_EVERY notes, per event it receives, now - that time (1 ms buckets);
    every connection counts its events
    wait until every subscriber has every event, or nothing arrived for DRAIN_QUIET seconds
    -> latency quantiles over every (event, subscriber); server CPU seconds over the run
       divided by the events delivered; events not delivered

    python -m bench.rate [--quick] [--runs N]
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

from . import api, cli, procs
from .loadclient import Fleet
from .storm import metric
from .storm_client import BUCKETS, storm_worker_main
from .targets import Ours, peers

# Sizes: (subscribers, events per second, seconds). The full size is issue #14's.
FULL = (15000, 20, 30)
QUICK = (500, 20, 5)
DRAIN_QUIET = 10.0   # seconds with no event received: the rest is not coming
DRAIN_MAX = 90.0     # at most this long after the last event was published
PUBLISH_TIMEOUT = 30.0
# One connection in this many times each event it receives (all of them count their events).
SAMPLE_EVERY = 10


def sizes(mode) -> tuple[int, int, int]:
    n, rate, seconds = FULL if mode.name == "full" else QUICK
    # RATE_N / RATE_EVENTS / RATE_SECONDS: a smaller run on a machine that cannot do the full one.
    return (int(os.environ.get("RATE_N", n)), int(os.environ.get("RATE_EVENTS", rate)),
            int(os.environ.get("RATE_SECONDS", seconds)))


def publish(target, title: str) -> tuple:
    """(status, seconds until the answer)."""
    if target.is_ours:
        status, _, seconds = api.create_post(target.port, target.token, title)
    else:
        status, _, seconds = api.request(target.port, "POST", "/broadcast", {"title": title},
                                         timeout=PUBLISH_TIMEOUT)
    return status, seconds


def quantiles(histogram: list) -> dict:
    total = sum(histogram)
    out = {"count": total}
    if not total:
        return out
    marks = {"p50_ms": 0.5, "p90_ms": 0.9, "p99_ms": 0.99}
    seen = 0
    for ms, count in enumerate(histogram):
        if not count:
            continue
        seen += count
        for name, q in list(marks.items()):
            if seen >= q * total:
                out[name] = ms + 1  # the bucket's upper edge
                del marks[name]
        out["max_ms"] = ms + 1 if ms < BUCKETS - 1 else None
    return out


def run(target, n: int, rate: int, seconds: int, mode) -> dict:
    out = {"target": target.name, "n": n, "rate": rate, "seconds": seconds,
           "loadavg_start": os.getloadavg()[0], "loadavg": os.getloadavg()}
    target.start()
    out["server_code"] = target.code
    try:
        with Fleet("ws", n, "127.0.0.1", target.port, target.ws_path,
                   token=target.token if target.is_ours else None, per_process=mode.per_process,
                   worker=storm_worker_main,
                   extra={"subscribes": target.is_ours, "sample_every": SAMPLE_EVERY}) as fleet:
            out["opened"] = sum(r["opened"] for r in fleet.command("open", timeout=900))
            if target.is_ours:
                out["subscribed"] = sum(r["acked"] for r in fleet.command("acked", 120.0))
            pids = target.pids()
            out["settle_seconds"] = procs.settle(pids, timeout=120)
            armed = fleet.command("timing", True)
            held = sum(r["open"] for r in armed)
            out["held"] = held
            cpu = sum(procs.cpu_seconds(p) for p in pids)
            system = sum(procs.cpu_split(p)[1] for p in pids)
            cpu_since = time.time()
            if target.is_ours:
                handed = [metric(target.port, "tornado_app_events_delivered_total"),
                          metric(target.port, "tornado_app_event_handovers_total")]
            start = time.time()
            statuses: list = []
            # A server that cannot keep up answers ever later; requests it has not been sent
            # by the end of the drain are dropped (counted as not published).
            pool = ThreadPoolExecutor(max_workers=32)
            futures = []
            for index in range(rate * seconds):
                due = start + index / rate
                pause = due - time.time()
                if pause > 0:
                    time.sleep(pause)
                futures.append(pool.submit(publish, target, f"t{time.time():.6f}"))
            published = time.time()
            for future in futures:
                try:
                    statuses.append(future.result(max(0.0, published + DRAIN_MAX - time.time())))
                except Exception as exc:  # counted, never fatal to the run
                    statuses.append(type(exc).__name__)
            pool.shutdown(wait=False, cancel_futures=True)
            out["publish_seconds"] = published - start
            out["published"] = sum(not f.cancelled() for f in futures)
            answered = [s for s in statuses if isinstance(s, tuple)]
            out["publish_failures"] = len(statuses) - sum(s[0] in (200, 201) for s in answered)
            # The publishing request's own time: ours stores the event before it goes out.
            times = sorted(s[1] for s in answered)
            out["publish_p50_ms"] = times[len(times) // 2] * 1000 if times else None
            out["publish_max_ms"] = times[-1] * 1000 if times else None
            expected = held * out["published"]
            last_count, last_change = -1, time.time()
            while time.time() - published < DRAIN_MAX:
                count = sum(r["timed"] for r in fleet.command("timed"))
                if count >= expected:
                    break
                if count != last_count:
                    last_count, last_change = count, time.time()
                elif time.time() - last_change > DRAIN_QUIET:
                    break
                time.sleep(0.5)
            replies = fleet.command("timing", False)
            out["server_cpu_s"] = sum(procs.cpu_seconds(p) for p in pids) - cpu
            # The kernel's share: where a fan-out's time goes once the Python around each send
            # is small (the distance to a latency target that is the machine's, not the code's).
            out["server_system_s"] = sum(procs.cpu_split(p)[1] for p in pids) - system
            out["cpu_window_s"] = time.time() - cpu_since
            if target.is_ours:  # how many events each write carried, on average
                events = metric(target.port, "tornado_app_events_delivered_total") - handed[0]
                writes = metric(target.port, "tornado_app_event_handovers_total") - handed[1]
                out["events_per_write"] = events / writes if writes else None
            # The clients share the machine: if they fall behind, every latency grows with them.
            out["client_cpu_s"] = sum(r["cpu"] for r in replies) - sum(r["cpu"] for r in armed)
            histogram = [sum(column) for column in zip(*(r["histogram"] for r in replies))]
            latency = quantiles(histogram)
            out.update(latency)
            out["timed_sample"] = latency.pop("count")
            delivered = sum(r["timed"] for r in replies)
            out["delivered"] = delivered
            out["expected"] = expected
            out["undelivered"] = expected - delivered
            latest = max(r["latest"] for r in replies)
            out["last_after_publishing_s"] = latest - published if latest else None
            out["cpu_us_per_delivered"] = (out["server_cpu_s"] * 1e6 / delivered
                                           if delivered else None)
            out["still_open"] = sum(r["open"] for r in replies)
            out["loadavg_end"] = os.getloadavg()[0]
            out["client_errors"] = fleet.errors
    finally:
        target.stop()
    return out


def measure(stack, mode) -> dict:
    n, rate, seconds = sizes(mode)
    targets = [Ours(stack)] + peers(stack)
    only = os.environ.get("RATE_TARGETS")  # e.g. "ours": a partial run while developing
    if only:
        targets = [t for t in targets if t.name in only.split(",")]
    runs = []
    for i in range(mode.runs):
        runs.append({t.name: cli.attempt(f"rate run {i + 1} {t.name}", run, t, n, rate, seconds,
                                         mode) for t in targets})
    return {"runs": runs, "targets": {t.name: t.label for t in targets},
            "sizes": {"n": n, "rate": rate, "seconds": seconds}}


if __name__ == "__main__":
    cli.main("rate", measure)
