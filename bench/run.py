"""Every scenario, or one, then BENCHMARKS.md.

    python -m bench.run all [--quick]        (make bench / make bench-quick)
    python -m bench.run ws|poll|http|workers|mixed|storm|rate|deflate|autobahn [--quick] [--runs N]
    python -m bench.run writes [--before PATH] [--quick] [--runs N]
    python -m bench.run report [--quick]     rewrite the report from the saved results
    python bench/run.py ...                  the same
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/run.py`: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from . import autobahn, cli, deflate, httpload, mixed, poll, rate, report, storm, workers, writes, ws
from .config import mode_from

SCENARIOS = {"ws": ws.measure, "poll": poll.measure, "http": httpload.measure,
             "workers": workers.measure, "mixed": mixed.measure, "writes": writes.scenario(),
             "storm": storm.measure, "rate": rate.measure,
             "deflate": deflate.measure, "autobahn": autobahn.measure}


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmarks: ours against bare Tornado and FastAPI")
    parser.add_argument("scenario", choices=[*SCENARIOS, "all", "report"])
    parser.add_argument("--quick", action="store_true", help="small N, one run (a smoke run)")
    parser.add_argument("--runs", type=int, help="runs instead of the mode's default")
    parser.add_argument("--before", type=Path,
                        help="writes: another checkout of the server, run by turns with this one")
    args = parser.parse_args()
    if args.before is not None:
        SCENARIOS["writes"] = writes.scenario(args.before)
    if args.scenario == "report":
        cli.log(f"report -> {report.write(mode_from(args.quick))}")
        return
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    for name in names:
        data = cli.run_scenario(name, SCENARIOS[name], args.quick, args.runs,
                                write_report=name == names[-1])
        if name == "writes":
            print(writes.text(data))


if __name__ == "__main__":
    main()
