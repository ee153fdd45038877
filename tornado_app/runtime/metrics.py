"""Prometheus metrics, labelled by route name (never the raw URL), every name under one prefix.

Every label value comes from a fixed set: a label set that grows with what clients send (a
made-up method token, a status no handler sets) grows the process and every scrape for good.

With `--workers N` the values are shared between the workers (metrics_multiprocess.py), and one
scrape sums them. A shared value is a write to a memory-mapped file behind one lock: the fan-out
path measured with `python -m bench.fanout_cpu --subscribers 5000 --runs 5 --metrics MODE`
(medians, load average 0.5 on 2 cores) costs 1.58 µs per subscriber with a shared counter
incremented per delivered record, against 0.74 µs with a plain int through the same wrapper
and 0.62 µs with no metrics (5.2 against 2.0 µs at load ~11, before coalescing). So the
counters of that path stay plain ints where they are counted and are added to the exported
values in batches: on every scrape of this worker and, with several workers, every second.
Fan-out time is observed once per event (0.63 µs per subscriber shared, 0.62 µs with no
metrics at all: within the noise).
"""

from collections import deque
from http import HTTPStatus

from prometheus_client import (CollectorRegistry, Counter, Gauge, GCCollector, Histogram,
                               PlatformCollector, ProcessCollector, generate_latest)
from tornado.ioloop import PeriodicCallback

from .metrics_multiprocess import scrape_registry, shared_directory

PREFIX = "tornado_app"
# Metrics of other origins keep their standard names, which dashboards know them by.
STANDARD_PREFIXES = ("process_", "python_")
# With several workers, each adds its batched counts to the shared values this often
# (seconds): how old another worker's figures can be in a scrape.
SYNC_INTERVAL = 1.0

# The methods the API answers; any other token a client sends is counted as "other".
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
KNOWN_STATUSES = frozenset(status.value for status in HTTPStatus)
GC_GENERATIONS = ("0", "1", "2")
OTHER = "other"


def method_label(method) -> str:
    return method if method in KNOWN_METHODS else OTHER


def status_label(status) -> str:
    return str(status) if status in KNOWN_STATUSES else OTHER


def generation_label(generation) -> str:
    generation = str(generation)
    return generation if generation in GC_GENERATIONS else OTHER


BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# One event to 19,000 subscribers takes about 130 ms, shared out over turns of the loop.
FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0)
GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# Collector pauses waiting to be recorded: far more than happen between two refreshes.
GC_PENDING = 10_000


class Metrics:
    def __init__(self, ctx):
        # The directory shared with the other workers, or None: values stay in this process.
        self.shared = shared_directory()
        # One registry per app, so several apps in one process (the tests) do not collide.
        self.registry = registry = CollectorRegistry()
        self._children: dict[tuple, tuple] = {}
        self._sync: PeriodicCallback | None = None
        self.requests = self._counter("http_requests", "HTTP requests by route, method and status",
                                      ["route", "method", "status"])
        self.latency = Histogram("http_request_duration_seconds", "Request latency by route",
                                 ["route"], buckets=BUCKETS, namespace=PREFIX, registry=registry)
        self.db_errors = self._counter("database_errors", "Requests that failed on the database")
        connections = ctx.connections
        # Set from the live sets on each refresh; with several workers they add up, and a
        # worker that exits stops counting.
        self._gauges = [
            (self._gauge("websocket_connections", "Open WebSocket connections"),
             lambda: len(connections.sockets)),
            (self._gauge("longpoll_pending", "Long-polls waiting for events"),
             lambda: len(connections.polls)),
            (self._gauge("sse_streams", "Open Server-Sent Events streams"),
             lambda: len(connections.streams)),
        ]
        # Counted as plain ints where they happen (the fan-out path), added here in batches:
        # [counter, how to read the int, what was added so far].
        self._counted = [
            [self._counter("events_published", "Events stored in the log"),
             lambda: ctx.events.published, 0],
            [self._counter("events_delivered", "Event deliveries to subscribers"),
             lambda: ctx.hub.delivered, 0],
            [self._counter("event_handovers", "Hand-overs of events to subscribers, each "
                           "written in one send however many events it carries"),
             lambda: ctx.hub.handed, 0],
            [self._counter("slow_consumers_closed",
                           "Connections dropped for not reading fast enough"),
             lambda: connections.slow_consumers_closed, 0],
        ]
        cache = ctx.db.cache
        if cache is not None:
            self._counted += [
                [self._counter("read_cache_hits", "Reads by id answered from this process's "
                               "read cache (READ_CACHE)"), lambda: cache.hits, 0],
                [self._counter("read_cache_misses", "Reads by id that went to the database "
                               "with the read cache on"), lambda: cache.misses, 0]]
        # Observed once per event (about 3 µs shared), not per delivery.
        self.fanout_seconds = Histogram(
            "fanout_duration_seconds", "From an event reaching a worker's hub until every "
            "subscriber of it in that worker has been handed it", buckets=FANOUT_BUCKETS,
            namespace=PREFIX, registry=registry)
        ctx.hub.on_fanout = self.fanout_seconds.observe
        self.gc_histogram = Histogram("gc_pause_seconds", "Garbage-collector pauses by generation",
                                      ["generation"], buckets=GC_BUCKETS, namespace=PREFIX,
                                      registry=registry)
        for generation in GC_GENERATIONS:
            self.gc_histogram.labels(generation)  # shown from the start, at 0
        # Filled by gcpauses.GcPauses inside the collector's callback, which must not record
        # the pause itself: shared values sit behind one lock, which the callback could find
        # held by the very code the collection interrupted.
        self.gc_pauses: deque = deque(maxlen=GC_PENDING)
        if self.shared is None:
            # With several workers, metrics_multiprocess gives these per worker.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def _gauge(self, name: str, text: str, mode: str = "livesum") -> Gauge:
        return Gauge(name, text, multiprocess_mode=mode, namespace=PREFIX, registry=self.registry)

    def _counter(self, name: str, text: str, labels=()) -> Counter:
        return Counter(name, text, labels, namespace=PREFIX, registry=self.registry)

    def watch_fanout(self, fanout) -> None:
        """With REDIS_URL: whether events from other workers arrive through Redis."""
        # With several workers the lowest of theirs: 0 while any of them reads from the log.
        gauge = self._gauge("redis_connected", "1 while events from other workers arrive "
                            "through Redis (in every worker), 0 while Redis does not answer "
                            "and they are read from the event log", mode="livemin")
        self._gauges.append((gauge, lambda: 1 if fanout.connected else 0))

    def refresh(self) -> None:
        """Adds what was counted since the last refresh to the exported values."""
        for counted in self._counted:
            counter, read, added = counted
            now = read()
            if now > added:
                counter.inc(now - added)
                counted[2] = now
        for gauge, read in self._gauges:
            gauge.set(read())
        pauses = self.gc_pauses
        while pauses:
            generation, seconds = pauses.popleft()
            self.gc_histogram.labels(generation).observe(seconds)

    def exposition(self) -> bytes:
        """One scrape: this process's figures, or with several workers all of theirs."""
        self.refresh()
        if self.shared is None:
            return generate_latest(self.registry)
        return generate_latest(scrape_registry(self.shared))

    def start(self) -> None:
        if self.shared is not None:
            self._sync = PeriodicCallback(self.refresh, SYNC_INTERVAL * 1000)
            self._sync.start()

    def stop(self) -> None:
        if self._sync is not None:
            self._sync.stop()
            self._sync = None
        self.refresh()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        children = self._labelled(route, method, status)
        children[0].inc()
        children[1].observe(seconds)

    def _labelled(self, route: str, method: str, status: int) -> tuple:
        # The labelled children are looked up once per (route, method, status): `labels()`
        # takes a lock and builds tuples, on every request otherwise.
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            method, status = method_label(method), status_label(status)
            children = (self.requests.labels(route, method, status), self.latency.labels(route))
            # Cached under the raw values only when they are their own label: otherwise the
            # cache would grow with every made-up method just the same.
            if key[1] == method and str(key[2]) == status:
                self._children[key] = children
        return children

    def observe_many(self, route: str, method: str, status: int, durations) -> None:
        """Requests of one route and outcome answered together (parked long-polls)."""
        requests, latency = self._labelled(route, method, status)
        requests.inc(len(durations))
        for seconds in durations:
            latency.observe(seconds)
