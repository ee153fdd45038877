"""What every scenario command shares: its arguments, its FerretDB, saving its results and
rewriting the report."""

import argparse
import json
import sys
import time
import traceback

from . import report
from .config import mode_from
from .targets import Stack


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def attempt(what: str, fn, *args, **kwargs) -> dict:
    """Runs one measurement; a failure is recorded in the results, not fatal to the suite."""
    log(f"{what} ...")
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        log(f"{what} FAILED: {exc!r}")
        return {"error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:]}
    log(f"{what}: {brief(result)}")
    return result


def brief(result: dict) -> str:
    keys = ("opened", "subscribed", "opens_per_s", "bytes_per_conn", "got", "expected", "last_ms",
            "rps", "p99_ms")
    parts = []
    for key in keys:
        value = result.get(key) if isinstance(result, dict) else None
        if value is not None:
            parts.append(f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts) or "done"


def command_line(scenario: str, quick: bool, runs: int | None, extra: str = "") -> str:
    return (f"python -m bench.run {scenario}" + (" --quick" if quick else "")
            + (f" --runs {runs}" if runs else "") + (f" {extra}" if extra else ""))


def run_scenario(scenario: str, measure, quick: bool, runs: int | None = None,
                 write_report: bool = True) -> dict:
    mode = mode_from(quick)
    if runs:
        mode = type(mode)(**{**mode.__dict__, "runs": runs})
    mode.results_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    log(f"scenario {scenario} ({mode.name}, {mode.runs} run(s))")
    # A scenario may bring its own stack (`writes` starts a FerretDB per run instead), and
    # arguments of its own for the command line recorded with its results.
    stack_class = getattr(measure, "stack_class", Stack)
    try:
        with stack_class(mode, scenario) as stack:
            data = measure(stack, mode)
    except Exception as exc:
        data = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        log(f"scenario {scenario} FAILED: {exc!r}")
    data.update(scenario=scenario, mode=mode.name, runs_requested=mode.runs,
                command=getattr(measure, "command", None)
                or command_line(scenario, quick, runs, getattr(measure, "extra_args", "")),
                started=started,
                seconds=time.time() - started)
    path = mode.results_dir / f"{scenario}.json"
    path.write_text(json.dumps(data, indent=1, default=str))
    log(f"scenario {scenario} done in {data['seconds']:.0f} s -> {path}")
    if write_report:
        log(f"report -> {report.write(mode)}")
    return data


def main(scenario: str, measure) -> None:
    parser = argparse.ArgumentParser(description=f"benchmark scenario {scenario}")
    parser.add_argument("--quick", action="store_true", help="small N, one run")
    parser.add_argument("--runs", type=int, help="runs instead of the mode's default")
    args = parser.parse_args()
    run_scenario(scenario, measure, args.quick, args.runs)
