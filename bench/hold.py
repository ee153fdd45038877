"""One measured run: hold N connections on a fresh server, then broadcast one event to them.

    start the server, start the latency probe, settle, RSS before
    open N connections (WebSocket handshakes, or long-poll requests) -> per second
    ours over WebSocket: subscribe every connection to `posts`, wait for every ack
    settle, RSS after -> bytes per connection; the idle phase
    trigger one event (ours: create a post; peers: POST /broadcast), wait until every
    connection has it -> time until the first and the last has it
    stop the clients, the probe and the server
"""

import os
import time

from . import gcstats, procs
from .loadclient import Fleet
from .probe import Probe, window

DELIVERY_TIMEOUT = 60.0


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


def run(target, kind: str, n: int, mode, during_idle=None) -> dict:
    """`during_idle(target)`, if given, runs in the idle phase instead of the plain wait and its
    result is kept under "idle"."""
    # The 1-minute load average says whether anything else was using the machine meanwhile.
    out = {"target": target.name, "kind": kind, "n": n, "loadavg_start": os.getloadavg()[0]}
    target.start()
    out["server_code"] = target.code
    # One worker: /metrics then describes the process that holds every connection.
    gc_seen = target.is_ours and getattr(target, "workers", 1) == 1
    probe = Probe(target.port, target.hello_path)
    samples = None
    try:
        path = target.ws_path if kind == "ws" else target.poll_path
        with Fleet(kind, n, "127.0.0.1", target.port, path,
                   token=target.token if kind == "ws" else None,
                   per_process=mode.per_process,
                   deflate=getattr(target, "offer_deflate", False),
                   extra={"marker": getattr(target, "event_marker", None)}) as fleet:
            pids = target.pids()
            procs.settle(pids)
            gc_scrapes = [gcstats.scrape(target.port)] if gc_seen else []
            out["rss_before_kb"] = target.rss_kb()
            open_start = time.time()
            server_cpu = sum(procs.cpu_seconds(pid) for pid in pids)
            opened = fleet.open()
            # CPU seconds of both sides while opening: they share the machine's 2 cores.
            out.update(opened=opened["opened"], open_seconds=opened["seconds"],
                       opens_per_s=opened["per_second"], client_cpu_open_s=opened["cpu"],
                       server_cpu_open_s=sum(procs.cpu_seconds(pid) for pid in pids) - server_cpu)
            if kind == "ws" and target.is_ours:
                subscribed = fleet.subscribe()
                out.update(subscribed=subscribed["acked"], subscribe_seconds=subscribed["seconds"],
                           subscribes_per_s=subscribed["per_second"])
            open_end = time.time()
            if gc_seen:
                gc_scrapes.append(gcstats.scrape(target.port))
            out["settle_seconds"] = procs.settle(pids, timeout=120)
            out["rss_after_kb"] = target.rss_kb()
            out["fds"] = {str(pid): procs.open_fds(pid) for pid in pids}
            held = out["subscribed"] if "subscribed" in out else out["opened"]
            out["bytes_per_conn"] = ((out["rss_after_kb"] - out["rss_before_kb"]) * 1024 / held
                                     if held else None)

            idle_start = time.time()
            if during_idle is not None:
                out["idle"] = during_idle(target)
            else:
                time.sleep(mode.idle_seconds)
            idle_end = time.time()
            if gc_seen:
                gc_scrapes.append(gcstats.scrape(target.port))

            out["expected"] = fleet.arm()
            if kind == "poll" and time.time() - open_start > 55:
                out["note"] = "the polls were sent more than 55 s before the event (timeout=60)"
            t0 = time.time()
            out["trigger"] = target.trigger()
            got = fleet.collect(DELIVERY_TIMEOUT)
            t_end = time.time()
            out.update(got=got["got"], event_wire_bytes=got["wire_bytes"],
                       got_compressed=got["compressed"],
                       first_ms=ms(got["first"] - t0) if got["first"] else None,
                       last_ms=ms(got["last"] - t0) if got["last"] else None,
                       spread_ms=ms(got["last"] - got["first"]) if got["first"] else None)
            if gc_seen:
                gc_scrapes.append(gcstats.scrape(target.port))
                out["gc"] = {phase: gcstats.between(gc_scrapes[i], gc_scrapes[i + 1])
                             for i, phase in enumerate(("open", "idle", "broadcast"))}
            if kind == "ws":
                out["still_open"] = fleet.open_count()
            out["loadavg_end"] = os.getloadavg()[0]
            out["client_errors"] = fleet.errors
    finally:
        samples = probe.stop()
        target.stop()
    s = samples["samples"]
    out["probe"] = {"path": target.hello_path, "failures": samples["failures"],
                    "open": window(s, open_start, open_end),
                    "idle": window(s, idle_start, idle_end),
                    "broadcast": window(s, t0, got["last"] or t_end)}
    return out
