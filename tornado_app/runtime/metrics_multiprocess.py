"""Metrics of `--workers N`: one scrape of /metrics answers for the whole server.

Each worker writes its values to memory-mapped files in one directory (prometheus_client's
multiprocess mode); whichever worker answers a scrape reads every file and sums them. The parent
prepares the directory before it forks: emptied, since a counter file left by an earlier run
would be added to this run's totals. It tells prometheus_client when a worker exits, so that
worker's gauges stop counting (its counters keep counting: what it served was served), and
removes the directory it created when the server stops.

One worker keeps its values in the process (no files), whatever the environment says.
"""

import glob
import os
import re
import shutil
import tempfile

from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector, values
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"
# The file of a worker's live gauges, which mark_process_dead removes when the worker exits:
# every worker has one from its start (the connection gauges are `livesum`).
_LIVE_FILE = re.compile(r"gauge_livesum_(\d+)\.db$")


def shared_directory() -> str | None:
    """The directory this process's values are written to, when they are shared."""
    if getattr(values.ValueClass, "_multiprocess", False):
        return os.environ.get(ENV)
    return None


def in_process() -> None:
    """One worker: values stay in the process. prometheus_client reads PROMETHEUS_MULTIPROC_DIR
    when it is imported; with a single process the files would only be stale totals to add."""
    os.environ.pop(ENV, None)
    values.ValueClass = values.MutexValue


class SharedMetrics:
    """The parent's side: the directory its workers share, from before the first fork to the
    end."""

    def __init__(self, path: str, owned: bool):
        self.path = path
        self.owned = owned

    @classmethod
    def prepare(cls) -> "SharedMetrics":
        path = os.environ.get(ENV)
        if path:
            # The operator's directory: only our files go, never the directory itself.
            os.makedirs(path, exist_ok=True)
            for name in glob.glob(os.path.join(path, "*.db")):
                os.remove(name)
            shared = cls(path, owned=False)
        else:
            shared = cls(tempfile.mkdtemp(prefix="tornado_app-metrics-"), owned=True)
        os.environ[ENV] = shared.path
        # Chosen here rather than by the environment at import: prometheus_client is imported
        # long before we know how many workers there are. Workers inherit it through fork().
        values.ValueClass = values.MultiProcessValue()
        return shared

    def worker_exited(self, pid: int) -> None:
        mark_process_dead(pid, self.path)

    def close(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)
        in_process()


def live_workers(path: str) -> list[int]:
    pids = []
    for name in os.listdir(path):
        match = _LIVE_FILE.match(name)
        if match:
            pids.append(int(match.group(1)))
    return sorted(pids)


class WorkerProcesses(Collector):
    """The standard process_* figures of every live worker, labelled by `pid`.

    Labelled, not summed: the file-descriptor limit is per process, so one worker near its
    limit must show (a sum over workers would hide it), and a sum of resident memory counts
    the pages the workers share since fork() once per worker. Dashboards sum what adds up.
    Read from /proc/<pid> of each worker by whichever worker answers the scrape.
    """

    def __init__(self, path: str):
        self.path = path

    def collect(self):
        families: dict[str, Metric] = {}
        for pid in live_workers(self.path):
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation,
                                                            family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)},
                                      sample.value)
        return list(families.values())


def scrape_registry(path: str) -> CollectorRegistry:
    """Everything one scrape shows with several workers: the sum of their files, each worker's
    process figures, and the platform (the same Python in every worker).

    The garbage collector's own python_gc_* figures are left out: they describe only the worker
    that happens to answer. Our gc_pause_seconds histogram covers every worker."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    registry.register(WorkerProcesses(path))
    PlatformCollector(registry=registry)
    return registry
