"""Scenario poll: N pending long-polls (ours: /api/v1/poll?channels=posts&timeout=60), then one
event that answers all of them. Ours holds 19,000 in full mode, each peer 15,000.

    python -m bench.poll [--quick]
"""

from . import cli, hold
from .targets import Ours, peers


def measure(stack, mode) -> dict:
    targets = [Ours(stack)] + peers(stack)
    runs = []
    for i in range(mode.runs):
        runs.append({t.name: cli.attempt(f"poll run {i + 1} {t.name}", hold.run, t, "poll",
                                         mode.n_ours if t.is_ours else mode.n_peer, mode)
                     for t in targets})
    return {"runs": runs, "targets": {t.name: t.label for t in targets}}


if __name__ == "__main__":
    cli.main("poll", measure)
