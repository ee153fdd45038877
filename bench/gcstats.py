"""Garbage-collection pauses inside our server, read from its /metrics (`tornado_app_gc_pause_seconds`,
timed by a gc.callbacks hook): the probe sees any stall of the event loop, this tells which of
them were the collector. The peers have no such hook."""

import http.client
import re

_BUCKET = re.compile(r'^tornado_app_gc_pause_seconds_bucket\{generation="(\d*)",le="([^"]+)"\} ([\d.e+]+)$',
                     re.M)


def scrape(port: int) -> dict[str, float]:
    """Cumulative pause counts by bucket bound (seconds, as text), over all generations."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counts: dict[str, float] = {}
    for _, bound, value in _BUCKET.findall(text):
        counts[bound] = counts.get(bound, 0.0) + float(value)
    return counts


def between(before: dict, after: dict) -> dict:
    """Pauses between two scrapes: how many, how many over 50 ms, and the longest one's bucket."""
    bounds = sorted((b for b in after if b != "+Inf"), key=float) + ["+Inf"]
    counts = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in bounds}
    total = counts["+Inf"]
    longest = next((b for b in bounds if counts[b] >= total), "+Inf") if total else None
    return {"pauses": int(total), "over_50ms": int(total - counts.get("0.05", 0.0)),
            "longest_at_most_s": None if longest in (None, "+Inf") else float(longest)}
