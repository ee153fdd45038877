"""Medians with min and max over runs, and per-run ratios ours/peer."""

import statistics


def summary(values) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "runs": values}


def ratios(ours, peer) -> list:
    """ours/peer run by run (run i of ours against run i of the peer, measured back to back)."""
    return [o / p if o is not None and p else None for o, p in zip(ours, peer)]
