"""Garbage collection for a process that holds tens of thousands of long-lived objects.

Full collections walk every tracked object, and a server with 19,000 open connections has
millions of them. So: what exists after start-up is frozen out of the collector's reach, young
collections run less often (most request garbage has no cycles and is freed by refcounting),
and every pause is timed, so /metrics shows what the collector costs.
"""

import gc
import time

from .metrics import generation_label

YOUNG_THRESHOLD = 20_000


class GcPauses:
    def __init__(self):
        self.longest = 0.0
        self.count = 0
        self.total = 0.0
        self._pending = None
        self._started = 0.0

    def attach(self, pending) -> None:
        """Each pause goes to `pending` (a deque, Metrics.gc_pauses) as (generation, seconds):
        metrics are recorded outside this callback, which runs wherever a collection starts."""
        self._pending = pending

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        self.count += 1
        self.total += pause
        self.longest = max(self.longest, pause)
        if self._pending is not None:
            self._pending.append((generation_label(info.get("generation")), pause))

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


def tune_for_long_lived_objects() -> None:
    """Called once the server is up: freezes start-up objects and spaces out young collections."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


class FreezeOnGrowth:
    """Freezes long-lived connection objects as they accumulate, and lets the collector see
    them again once many have gone.

    Frozen objects are skipped by every collection, so a full pass no longer walks every open
    connection. The price: cyclic garbage among frozen objects waits for the next unfreeze,
    which happens when the connections have shrunk to half of what was frozen, so memory held
    that way stays bounded by the connections already paid for.
    """

    def __init__(self, grow_by: int = 1000):
        self.grow_by = grow_by
        self.frozen_at = 0

    def tick(self, open_connections: int) -> None:
        if open_connections >= self.frozen_at + self.grow_by:
            gc.freeze()
            self.frozen_at = open_connections
        elif self.frozen_at and open_connections < self.frozen_at // 2:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self.frozen_at = open_connections
