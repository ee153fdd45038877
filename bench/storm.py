"""Scenario storm: N subscribers drop at once and reconnect at once with `since` (a deploy, a
network blip): the time until the last has resumed, with the listen-queue overflows counted.

    open N WebSockets (at most 96 handshakes in flight), subscribe each to `posts`
    one event, so every connection knows its last seq
    every connection is dropped; MISSED events are published meanwhile
    every connection reconnects at once, sends subscribe with since=its last seq, and has
    resumed once its `subscribed` ack and the MISSED events have arrived
    -> seconds from the first reconnect to the last resumed; TcpExtListenOverflows over it

    python -m bench.storm [--quick] [--runs N]

STORM_N=3000 runs fewer subscribers; STORM_PY_SPY=/path/to/py-spy samples the server during the
reconnect (py-spy's raw collapsed stacks, one file per run in the log directory; the path is in
the run's `py_spy_profile`).
"""

import http.client
import os
import re
import subprocess
import time

from . import api, cli, netstat, procs
from .loadclient import Fleet
from .storm_client import storm_worker_main
from .targets import Ours

N_FULL, N_QUICK = 15000, 500
MISSED = 3
RESUME_TIMEOUT = 60.0
# Handshakes in flight per client process on the reconnect: all of them (every client at once).
STORM_IN_FLIGHT = 20000


def quantile(values: list, q: float):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def metric(port: int, name: str) -> float:
    """One unlabelled value of our server's /metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    return float(re.search(rf"^{name} ([\d.e+]+)$", text, re.M).group(1))


def open_websockets(port: int) -> float:
    return metric(port, "tornado_app_websocket_connections")


def start_sampler(target, out: dict):
    """py-spy on the server for the reconnect, when STORM_PY_SPY names its binary."""
    py_spy = os.environ.get("STORM_PY_SPY")
    if not py_spy:
        return None
    profile = target.stack.log_dir / f"pyspy-storm-{target.name}-{target.runs_started}.txt"
    out["py_spy_profile"] = str(profile)
    sampler = subprocess.Popen(
        [py_spy, "record", "--nonblocking", "--format", "raw", "--rate", "200", "--output",
         str(profile), "--pid", str(target.proc.pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attached before the first reconnect
    return sampler


def stop_sampler(sampler) -> None:
    if sampler is None:
        return
    sampler.send_signal(2)  # SIGINT: py-spy writes what it has sampled and exits
    _, err = sampler.communicate(timeout=60)
    if sampler.returncode not in (0, -2):
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")


def run(target, n: int, mode) -> dict:
    out = {"target": target.name, "n": n, "missed": MISSED, "loadavg_start": os.getloadavg()[0],
           "loadavg": os.getloadavg(),
           "tcp_settings": netstat.settings()}
    target.start()
    out["server_code"] = target.code
    try:
        with Fleet("ws", n, "127.0.0.1", target.port, target.ws_path, token=target.token,
                   per_process=mode.per_process, worker=storm_worker_main,
                   extra={"subscribes": True}) as fleet:
            out["opened"] = sum(r["opened"] for r in fleet.command("open", timeout=900))
            out["subscribed"] = sum(r["acked"] for r in fleet.command("acked", 120.0))
            status, _, _ = api.create_post(target.port, target.token, "storm: before the drop")
            if status != 201:
                raise RuntimeError(f"creating the first event answered {status}")
            deadline = time.monotonic() + 60
            while True:
                seqs = fleet.command("seqs")
                if sum(r["unknown"] for r in seqs) == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            out["seq_before"] = max((r["max"] for r in seqs if r["max"] is not None), default=None)
            out["dropped"] = sum(r["dropped"] for r in fleet.command("drop"))
            for index in range(MISSED):
                status, _, _ = api.create_post(target.port, target.token, f"storm: missed {index}")
                if status != 201:
                    raise RuntimeError(f"creating a missed event answered {status}")
            # The server has seen every connection go before they all come back.
            deadline = time.monotonic() + 60
            while open_websockets(target.port) and time.monotonic() < deadline:
                time.sleep(0.2)
            out["open_before_reconnect"] = open_websockets(target.port)
            out["settle_seconds"] = procs.settle(target.pids(), timeout=60)
            sampler = start_sampler(target, out)
            before, cpu = netstat.tcp_ext(), sum(procs.cpu_seconds(p) for p in target.pids())
            replies = fleet.command("reconnect", MISSED, STORM_IN_FLIGHT, RESUME_TIMEOUT,
                                    timeout=RESUME_TIMEOUT + 120)
            out["server_cpu_s"] = sum(procs.cpu_seconds(p) for p in target.pids()) - cpu
            stop_sampler(sampler)
            out["tcp"] = netstat.delta(before, netstat.tcp_ext())
            start = min(r["start"] for r in replies)
            resumed = [t - start for r in replies for t in r["resumed"]]
            out.update(reconnected=sum(r["reconnected"] for r in replies),
                       resumed=len(resumed),
                       connected_s=max(r["connected"] for r in replies) - start,
                       last_resumed_s=max(resumed, default=None),
                       p50_resumed_s=quantile(resumed, 0.5),
                       p99_resumed_s=quantile(resumed, 0.99),
                       listen_overflows=out["tcp"].get("ListenOverflows"))
            out["loadavg_end"] = os.getloadavg()[0]
            out["client_errors"] = fleet.errors
    finally:
        target.stop()
    return out


def measure(stack, mode) -> dict:
    n = int(os.environ.get("STORM_N") or (N_FULL if mode.name == "full" else N_QUICK))
    targets = [Ours(stack)]
    # STORM_BEFORE=PATH: another checkout of the server (e.g. before this change), run by turns
    # with this one.
    before = os.environ.get("STORM_BEFORE")
    if before:
        targets.insert(0, Ours(stack, root=before, name="before"))
    runs = [{t.name: cli.attempt(f"storm run {i + 1} {t.name}", run, t, n, mode)
             for t in targets} for i in range(mode.runs)]
    return {"runs": runs, "targets": {t.name: t.label for t in targets},
            "tcp_settings": netstat.settings(), "missed": MISSED, "before": before}


if __name__ == "__main__":
    cli.main("storm", measure)
