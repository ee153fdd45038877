"""Scenario autobahn: every permessage-deflate case of the Autobahn TestSuite (12.* and 13.*,
216 cases, 1,000 messages of up to 128 KB each) against our frame layer, driven by `kosoku`.

Too slow for `make test` on this machine (about 12 minutes for the 216 cases, four at a time,
under other load), so `make test` runs the cases up to 8 KB and this runs them all, with the
verdicts and the time in BENCHMARKS.md.

    python -m bench.autobahn [--quick]   (--quick: the cases up to 8 KB, as `make test`)
"""

import asyncio
import os
import sys
import time
from collections import Counter

from kosoku import FailureError, run_fuzzingclient

from . import cli
from .procs import Proc, free_port

CONFORMING = {"OK", "NON-STRICT", "INFORMATIONAL"}
CONCURRENCY = 4
# 12.x.1 to 12.x.6 (and 13.*): 16 bytes to 8 KB, unfragmented, every negotiation variant.
SMALL = [f"{group}.{sub}.{n}" for group, subs in ((12, 5), (13, 7))
         for sub in range(1, subs + 1) for n in range(1, 7)]


class NoStack:
    """This scenario needs no database."""

    def __init__(self, mode, scenario: str):
        self.log_dir = mode.results_dir / "logs" / scenario

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _run(log_dir, cases: list[str]) -> dict:
    port = free_port()
    echo = Proc("autobahn-echo", [sys.executable, "-m", "bench.autobahn_echo", "--port",
                                  str(port)], log_dir)
    try:
        time.sleep(1.0)
        loadavg = os.getloadavg()[0]
        start = time.time()
        try:
            results = asyncio.run(run_fuzzingclient(f"ws://127.0.0.1:{port}/", cases,
                                                    concurrency=CONCURRENCY))
        except FailureError as failure:
            results = failure.results
        seconds = time.time() - start
    finally:
        echo.stop()
    behaviors = Counter(r.behavior.value for r in results)
    closes = Counter(r.behavior_close.value for r in results)
    failed = [f"{r.case_id}: {r.behavior.value} / close {r.behavior_close.value}: {r.result}"
              for r in results
              if r.behavior.value not in CONFORMING or r.behavior_close.value not in CONFORMING]
    return {"cases": len(results), "behaviors": dict(behaviors), "closes": dict(closes),
            "failed": failed[:20], "passed": len(results) - len(failed), "seconds": seconds,
            "loadavg_start": loadavg, "concurrency": CONCURRENCY}


def measure(stack, mode) -> dict:
    cases = SMALL if mode.name == "quick" else ["12.*", "13.*"]
    return {"runs": [{"ours": cli.attempt("autobahn 12.* 13.*", _run, stack.log_dir, cases)}]}


measure.stack_class = NoStack


def section(data) -> list[str]:
    run = (data.get("runs") or [{}])[0].get("ours") or {}
    if "cases" not in run:
        return ["## Autobahn TestSuite: permessage-deflate (12.*, 13.*)", "",
                f"Failed to run: {run.get('error', data.get('error', 'no result'))}", ""]
    lines = ["## Autobahn TestSuite: permessage-deflate (12.*, 13.*)", "",
             "Every compression case, driven by `kosoku` against an echo server on our frame "
             "layer (`bench/autobahn_echo.py`: realtime/websocket.py and realtime/deflate.py, "
             f"{run['concurrency']} cases at a time). `make test` runs the cases up to 8 KB.", "",
             f"Command: `{data['command']}`", "",
             "| figure | value |", "| --- | --- |",
             f"| machine load average (1 min) when the run started | {run['loadavg_start']:.1f} |",
             f"| cases run | {run['cases']} |",
             f"| **cases that conform (OK, NON-STRICT, INFORMATIONAL)** | {run['passed']} |",
             "| verdicts | " + ", ".join(f"{k} {v}" for k, v in sorted(run["behaviors"].items()))
             + " |",
             f"| seconds for all of them | {run['seconds']:.0f} |", ""]
    if run["failed"]:
        lines += ["Cases that did not conform:", "", *[f"- {f}" for f in run["failed"]], ""]
    return lines


if __name__ == "__main__":
    cli.main("autobahn", measure)
