"""Scenario ws: N idle WebSocket connections (ours: authenticated and subscribed to `posts`),
then one event to all of them. Ours holds 19,000 in full mode, each peer 15,000.

    python -m bench.ws [--quick]
"""

from . import cli, hold
from .targets import Ours, peers


def measure(stack, mode) -> dict:
    targets = [Ours(stack)] + peers(stack)
    runs = []
    for i in range(mode.runs):
        # Targets alternate within a run, so drift over time hits every target alike.
        runs.append({t.name: cli.attempt(f"ws run {i + 1} {t.name}", hold.run, t, "ws",
                                         mode.n_ours if t.is_ours else mode.n_peer, mode)
                     for t in targets})
    return {"runs": runs, "targets": {t.name: t.label for t in targets}}


if __name__ == "__main__":
    cli.main("ws", measure)
