"""Scenario delivery: ours alone, N idle authenticated subscribers in one worker, then one
event, five times on a fresh server each: the figures of the realtime issue (most connections
held, memory per idle connection, time for one event to reach all of them, median of 5).

    python -m bench.delivery [--quick] [--runs N]

Results go to bench/results/<mode>/delivery.json and a summary to stdout; BENCHMARKS.md is
not rewritten (its peer comparisons come from `ws`).
"""

import argparse
import statistics

from . import cli, hold
from .targets import Ours

RUNS = 5


def measure(stack, mode) -> dict:
    target = Ours(stack)
    runs = [{"ours": cli.attempt(f"delivery run {i + 1}", hold.run, target, "ws", mode.n_ours,
                                 mode)} for i in range(mode.runs)]
    return {"runs": runs, "targets": {"ours": target.label}}


def summary(data: dict) -> str:
    results = [run["ours"] for run in data.get("runs", []) if "error" not in run["ours"]]
    lines = []
    for key, label in (("subscribed", "subscribers held"), ("bytes_per_conn", "bytes per connection"),
                       ("last_ms", "event -> last subscriber (ms)"),
                       ("spread_ms", "first -> last subscriber (ms)")):
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            lines.append(f"{label}: median {statistics.median(values):,.1f} "
                         f"(min {min(values):,.1f}, max {max(values):,.1f}, runs {len(values)})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="ours alone: idle subscribers, one event")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    data = cli.run_scenario("delivery", measure, args.quick, args.runs, write_report=False)
    print(summary(data))


if __name__ == "__main__":
    main()
