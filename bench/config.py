"""Sizes of the quick (smoke) and full modes, and where results go."""

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Mode:
    name: str
    runs: int
    n_ours: int          # connections held by our server (one worker)
    n_peer: int          # connections held by each peer
    n_workers: int       # connections for the 3-workers + Redis scenario
    wrk_duration: str
    idle_seconds: float  # how long the idle phase is probed for stalls
    per_process: int     # connections per client process (each process is capped at 20000 fds)
    n_deflate: int       # subscribers per target in the compression scenario (bench.deflate)

    @property
    def results_dir(self) -> Path:
        return RESULTS / self.name


QUICK = Mode("quick", runs=1, n_ours=500, n_peer=500, n_workers=1500, wrk_duration="3s",
             idle_seconds=1.0, per_process=5000, n_deflate=300)
FULL = Mode("full", runs=3, n_ours=19000, n_peer=15000, n_workers=50000, wrk_duration="10s",
            idle_seconds=5.0, per_process=5000, n_deflate=5000)


def mode_from(quick: bool) -> Mode:
    return QUICK if quick else FULL
