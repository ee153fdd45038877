"""Prometheus metrics of one process, labelled by route name (never the raw URL).

Every label value comes from a fixed set: a label set that grows with what clients send (a
made-up method token, a status no handler sets) grows the process and every scrape for good.
"""

from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

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


class _Counted:
    """Counters the server keeps anyway (plain ints on hot paths), read at scrape time."""

    def __init__(self, ctx):
        self.ctx = ctx

    def collect(self):
        ctx = self.ctx
        values = [
            ("events_published", "Events stored in the log by this process",
             ctx.events.published),
            ("events_delivered", "Event deliveries to subscribers in this process",
             ctx.hub.delivered),
            ("slow_consumers_closed", "Connections dropped for not reading fast enough",
             ctx.connections.slow_consumers_closed),
        ]
        for name, text, value in values:
            family = CounterMetricFamily(name, text)
            family.add_metric([], value)
            yield family


class Metrics:
    def __init__(self, ctx):
        # One registry per app, so several apps in one process (the tests) do not collide.
        self.registry = registry = CollectorRegistry()
        self._children: dict[tuple, tuple] = {}
        self.requests = Counter("http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("http_request_duration_seconds", "Request latency by route",
                                 ["route"], buckets=BUCKETS, registry=registry)
        self.db_errors = Counter("database_errors", "Requests that failed on the database",
                                 registry=registry)
        connections = ctx.connections
        Gauge("websocket_connections", "Open WebSocket connections",
              registry=registry).set_function(lambda: len(connections.sockets))
        Gauge("longpoll_pending", "Long-polls waiting for events",
              registry=registry).set_function(lambda: len(connections.polls))
        Gauge("sse_streams", "Open Server-Sent Events streams",
              registry=registry).set_function(lambda: len(connections.streams))
        registry.register(_Counted(ctx))
        self.gc_pauses = Histogram("gc_pause_seconds", "Garbage-collector pauses by generation",
                                   ["generation"], registry=registry,
                                   buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))

    def watch_fanout(self, fanout) -> None:
        """With REDIS_URL: whether events from other workers arrive through Redis."""
        Gauge("redis_connected", "1 while events from other workers arrive through Redis, 0 "
              "while Redis does not answer and they are read from the event log",
              registry=self.registry).set_function(lambda: 1 if fanout.connected else 0)

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
