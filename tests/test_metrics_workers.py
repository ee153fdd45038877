"""/metrics of `run.py --workers 2`: one scrape answers for both workers, whichever answers it."""

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from pymongo import MongoClient

from tests.conftest import Api
from tests.metrics_helpers import dashboard_queries, scrape_url
from tests.realtime_helpers import WsClient, create_posts
from tests.server_process import ServerProcess
from tests.test_workers import RedisServer
from tornado_app.runtime.metrics import STANDARD_PREFIXES

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "dashboard.json"
# Connections land on the workers as the kernel hands them out: open this many at most while
# waiting for both workers to hold some.
MAX_CONNECTIONS = 60


def _start(mongodb_uri, workdir: Path, redis_url: str) -> ServerProcess:
    # Inserts and fan-out only: nothing here updates one document from two workers, which is
    # what FerretDB cannot keep atomic across processes (the opt-in is a no-op on MongoDB).
    server = ServerProcess(mongodb_uri, f"test_mw_{uuid.uuid4().hex[:12]}", workdir,
                           args=["--workers", "2"], REDIS_URL=redis_url,
                           ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1")
    return server.start()


def _stop(server: ServerProcess) -> None:
    try:
        assert server.terminate() == 0, server.stderr()[-2000:]
    finally:
        server.kill()
        with MongoClient(server.mongodb_uri, serverSelectionTimeoutMS=3000) as client:
            client.drop_database(server.db_name)


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory):
    redis = RedisServer(tmp_path_factory.mktemp("redis"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def two_workers(mongodb_uri, tmp_path_factory, module_redis):
    server = _start(mongodb_uri, tmp_path_factory.mktemp("workers"), module_redis.url)
    yield server
    _stop(server)


@pytest.fixture
def own_two_workers(mongodb_uri, tmp_path, module_redis):
    """For a test that kills a worker."""
    server = _start(mongodb_uri, tmp_path, module_redis.url)
    yield server
    _stop(server)


def worker_pids(server: ServerProcess) -> set[int]:
    pids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == server.process.pid:
                pids.add(int(entry))
    return pids


def holders(server: ServerProcess, clients) -> dict[int, int]:
    """Which worker holds the server side of each client connection: pid → how many."""
    ours = {ws.conn.protocol.stream.socket.getsockname()[1] for ws in clients}
    by_inode = {}  # the server's sockets to our clients, by inode
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            if local == server.port and remote in ours:
                by_inode[fields[9]] = remote
    counts: dict[int, int] = {}
    for pid in worker_pids(server):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in by_inode:
                counts[pid] = counts.get(pid, 0) + 1
    return counts


async def connect_to_both_workers(server: ServerProcess) -> list[WsClient]:
    clients = []
    while len(clients) < MAX_CONNECTIONS:
        for _ in range(4):
            clients.append(await WsClient.connect(server.port))
        owners = holders(server, clients)
        if len(owners) == 2 and sum(owners.values()) == len(clients):
            return clients
    raise AssertionError(f"{len(clients)} connections all on one worker: {owners}")


async def wait_for_total(server, name: str, expected: float, timeout: float = 10.0):
    """Each worker adds its figures to the shared values every second."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = scrape_url(server.base_url)
        if metrics.total(name) == expected or time.monotonic() > deadline:
            assert metrics.total(name) == expected, (name, metrics.total(name), expected)
            return metrics
        await asyncio.sleep(0.1)


@pytest.mark.gen_test(timeout=120)
async def test_one_scrape_counts_the_websockets_open_on_both_workers(two_workers):
    clients = await connect_to_both_workers(two_workers)
    owners = holders(two_workers, clients)
    assert len(owners) == 2 and all(owners.values()), owners
    # Whichever worker answers, each scrape shows the whole server.
    for _ in range(6):
        await wait_for_total(two_workers, "tornado_app_websocket_connections", len(clients))
    for ws in clients:
        ws.close()
    await wait_for_total(two_workers, "tornado_app_websocket_connections", 0)


@pytest.mark.gen_test(timeout=120)
async def test_one_scrape_sums_the_deliveries_and_requests_of_both_workers(two_workers):
    api = Api(two_workers.base_url)
    token = await api.user_token(f"u{uuid.uuid4().hex[:8]}")
    clients = await connect_to_both_workers(two_workers)
    for ws in clients:
        await ws.subscribe(["posts"])
    before = await wait_for_total(two_workers, "tornado_app_websocket_connections", len(clients))
    delivered = before.total("tornado_app_events_delivered_total")
    published = before.total("tornado_app_events_published_total")
    health = before.value("tornado_app_http_requests_total", route="health", method="GET",
                          status="200")
    await create_posts(api, token, 2)
    for ws in clients:
        await ws.events(2)
    for _ in range(40):  # requests, too, are answered by both workers
        assert (await api.get("/health")).code == 200
    # Each worker delivered the events to the subscribers it holds.
    await wait_for_total(two_workers, "tornado_app_events_delivered_total",
                         delivered + 2 * len(clients))
    after = await wait_for_total(two_workers, "tornado_app_events_published_total", published + 2)
    assert after.value("tornado_app_http_requests_total", route="health", method="GET",
                       status="200") == health + 40
    for ws in clients:
        ws.close()
    api.close()


def test_process_figures_of_every_worker_labelled_by_pid(two_workers):
    metrics = scrape_url(two_workers.base_url)
    workers = {str(pid) for pid in worker_pids(two_workers)}
    assert len(workers) == 2
    for name in ("process_open_fds", "process_max_fds", "process_resident_memory_bytes",
                 "process_cpu_seconds_total", "process_start_time_seconds"):
        pids = {s.labels.get("pid") for s in metrics.samples if s.name == name}
        assert pids == workers, (name, pids)
    for pid in workers:
        assert metrics.value("process_open_fds", pid=pid) > 0
        assert metrics.value("process_resident_memory_bytes", pid=pid) > 1 << 20
    assert metrics.has("python_info")


def test_every_name_is_under_the_prefix_except_the_standard_collectors(two_workers):
    families = scrape_url(two_workers.base_url).families
    ours = [name for name in families if name.startswith("tornado_app_")]
    assert len(ours) >= 12, ours
    others = [name for name in families if not name.startswith("tornado_app_")]
    assert all(name.startswith(STANDARD_PREFIXES) for name in others), others


def test_every_metric_the_dashboard_queries_exists_in_a_scrape(two_workers):
    scrape_url(two_workers.base_url)  # a request counted, for the request series
    names = scrape_url(two_workers.base_url).names()
    queries = dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 12
    for expression, wanted in queries:
        assert wanted, expression  # every query names at least one metric
        assert wanted <= names, (expression, wanted - names)


@pytest.mark.gen_test(timeout=120)
async def test_a_worker_that_dies_stops_counting_and_what_it_counted_stays(own_two_workers):
    server = own_two_workers
    api = Api(server.base_url)
    clients = await connect_to_both_workers(server)
    for _ in range(20):
        assert (await api.get("/health")).code == 200
    await wait_for_total(server, "tornado_app_websocket_connections", len(clients))
    requests = scrape_url(server.base_url).total("tornado_app_http_requests_total")
    owners = holders(server, clients)
    victim = max(owners, key=owners.get)
    os.kill(victim, signal.SIGKILL)  # no chance to say goodbye: the parent tidies up
    deadline = time.monotonic() + 20
    while len(worker_pids(server) - {victim}) < 2:  # the parent starts another
        assert time.monotonic() < deadline, "the worker was not restarted"
        await asyncio.sleep(0.1)
    survivors = len(clients) - owners[victim]
    metrics = await wait_for_total(server, "tornado_app_websocket_connections", survivors)
    assert metrics.total("tornado_app_http_requests_total") >= requests
    assert str(victim) not in {s.labels.get("pid") for s in metrics.samples
                               if s.name == "process_open_fds"}
    for ws in clients:
        ws.close()
    api.close()


def test_an_operators_directory_is_emptied_of_an_earlier_runs_values(
        mongodb_uri, tmp_path, module_redis):
    shared = tmp_path / "metrics"
    shared.mkdir()
    stale = MmapedDict(str(shared / "counter_999999.db"))  # a worker of an earlier run
    stale.write_value(mmap_key("tornado_app_http_requests", "tornado_app_http_requests_total",
                               ["route", "method", "status"], ["health", "GET", "200"],
                               "HTTP requests"), 1000.0, 0.0)
    stale.close()
    (shared / "notes.txt").write_text("not ours")
    server = ServerProcess(mongodb_uri, f"test_mw_{uuid.uuid4().hex[:12]}", tmp_path,
                           args=["--workers", "2"], REDIS_URL=module_redis.url,
                           ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1",
                           PROMETHEUS_MULTIPROC_DIR=str(shared))
    try:
        server.start()
        metrics = scrape_url(server.base_url)
        assert metrics.total("tornado_app_http_requests_total") < 1000
        assert not (shared / "counter_999999.db").exists()
        assert any(shared.glob("*.db"))  # this run's workers write there
    finally:
        _stop(server)
    assert (shared / "notes.txt").read_text() == "not ours"  # only our files are removed


def test_the_directory_the_server_made_is_removed_when_it_stops(
        mongodb_uri, tmp_path, module_redis):
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = ServerProcess(mongodb_uri, f"test_mw_{uuid.uuid4().hex[:12]}", tmp_path,
                           args=["--workers", "2"], REDIS_URL=module_redis.url,
                           ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1", TMPDIR=str(temp))
    try:
        server.start()
        [made] = temp.glob("tornado_app-metrics-*")
        assert any(made.glob("gauge_livesum_*.db"))
    finally:
        _stop(server)
    assert not made.exists()


def test_one_worker_keeps_its_values_in_process_whatever_the_environment_says(
        mongodb_uri, tmp_path):
    shared = tmp_path / "metrics"
    shared.mkdir()
    server = ServerProcess(mongodb_uri, f"test_mw_{uuid.uuid4().hex[:12]}", tmp_path,
                           PROMETHEUS_MULTIPROC_DIR=str(shared))
    try:
        server.start()
        metrics = scrape_url(server.base_url)
        assert metrics.value("process_open_fds") > 0
        assert metrics.has("python_gc_objects_collected_total")  # the process's own collector
        assert not any(shared.iterdir())
    finally:
        _stop(server)
