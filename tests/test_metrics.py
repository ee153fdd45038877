"""/metrics in Prometheus text format, fed by real requests and real long-lived connections, and
the JSON logs (the access logger in process, and run.py's stderr)."""

import asyncio
import gc
import json
import logging
import re
import socket
import time
import urllib.request
import uuid

import pytest
from pymongo import MongoClient
from tornado.iostream import IOStream

from tests.conftest import Api, assert_error
from tests.metrics_helpers import Scrape, promql_metric_names
from tests.realtime_helpers import WsClient, create_posts
from tests.server_process import ServerProcess, http_json
from tornado_app.runtime.embedded import free_port
from tornado_app.runtime.gcpauses import GcPauses
from tornado_app.runtime.logs import JsonFormatter
from tornado_app.runtime.metrics import (STANDARD_PREFIXES, generation_label, method_label,
                                         status_label)

OBJECT_ID = re.compile(r"[0-9a-f]{24}")
ACCESS_FIELDS = {"request_id", "method", "path", "status", "duration_ms", "user_id"}


async def scrape(api) -> Scrape:
    response = await api.http.fetch(api.base_url + "/metrics", raise_error=False)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert re.search(r"version=(0\.0\.4|1\.0\.0)", response.headers["Content-Type"])
    return Scrape(response.body.decode())


async def wait_for_value(api, name: str, expected: float, timeout: float = 5.0, **labels) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        metrics = await scrape(api)
        if metrics.value(name, **labels) == expected or time.monotonic() > deadline:
            assert metrics.value(name, **labels) == expected, (name, labels, metrics.value(name, **labels))
            return metrics
        await asyncio.sleep(0.05)


# --- /metrics ------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_metrics_is_prometheus_text_with_every_family_of_the_contract(api):
    await api.get("/health")
    metrics = await scrape(api)
    types = {name: family.type for name, family in metrics.families.items()}
    expected = {
        "tornado_app_http_requests": "counter", "tornado_app_http_request_duration_seconds": "histogram",
        "tornado_app_websocket_connections": "gauge", "tornado_app_longpoll_pending": "gauge", "tornado_app_sse_streams": "gauge",
        "tornado_app_events_published": "counter", "tornado_app_events_delivered": "counter",
        "tornado_app_slow_consumers_closed": "counter", "tornado_app_database_errors": "counter",
    }
    for name, kind in expected.items():
        assert types.get(name) == kind, (name, types.get(name))
    for family in expected:
        assert metrics.families[family].documentation, family
    assert metrics.has("tornado_app_slow_consumers_closed_total")
    assert metrics.value("tornado_app_slow_consumers_closed_total") == 0
    assert metrics.value("tornado_app_database_errors_total") == 0
    # Plain text for scrapers, with the same anti-sniffing header as everything else.
    response = await api.http.fetch(api.base_url + "/metrics")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.gen_test
async def test_every_name_is_under_the_prefix_except_the_standard_collectors(api):
    await api.get("/health")
    metrics = await scrape(api)
    ours = [name for name in metrics.families if name.startswith("tornado_app_")]
    others = [name for name in metrics.families if not name.startswith("tornado_app_")]
    assert len(ours) >= 12, ours
    assert others and all(name.startswith(STANDARD_PREFIXES) for name in others), others


@pytest.mark.gen_test
async def test_process_and_platform_collectors_show_descriptors_and_memory(api):
    metrics = await scrape(api)
    assert metrics.value("process_open_fds") > 0
    assert metrics.value("process_max_fds") >= metrics.value("process_open_fds")
    assert metrics.value("process_resident_memory_bytes") > 1 << 20
    assert metrics.has("process_cpu_seconds_total") and metrics.has("python_info")


@pytest.mark.gen_test
async def test_gc_pause_series_exist_for_every_generation_before_any_pause(api):
    metrics = await scrape(api)
    for generation in ("0", "1", "2"):
        assert metrics.value("tornado_app_gc_pause_seconds_count", generation=generation) == 0
    assert {s.labels["generation"] for s in metrics.samples
            if s.name == "tornado_app_gc_pause_seconds_count"} == {"0", "1", "2"}


@pytest.mark.gen_test
async def test_a_collector_pause_shows_in_the_next_scrape(api, server):
    pauses = GcPauses()
    pauses.attach(server.ctx.metrics.gc_pauses)
    pauses.install()
    try:
        gc.collect()
    finally:
        pauses.uninstall()
    metrics = await scrape(api)
    assert metrics.value("tornado_app_gc_pause_seconds_count", generation="2") >= 1
    assert metrics.total("tornado_app_gc_pause_seconds_count") == pauses.count
    assert metrics.total("tornado_app_gc_pause_seconds_sum") == pytest.approx(pauses.total)


@pytest.mark.gen_test
async def test_fanout_time_is_observed_once_per_event_with_subscribers(api, server):
    token = await api.user_token()
    before = (await scrape(api)).value("tornado_app_fanout_duration_seconds_count")
    watchers = [await WsClient.connect(server.port) for _ in range(3)]
    for ws in watchers:
        await ws.subscribe(["posts"])
    await create_posts(api, token, 2)
    for ws in watchers:
        await ws.events(2)
    after = await scrape(api)
    assert after.value("tornado_app_fanout_duration_seconds_count") == before + 2
    assert 0 < after.value("tornado_app_fanout_duration_seconds_sum") < 5
    for ws in watchers:
        ws.close()


def test_promql_names_are_what_remains_without_functions_labels_and_keywords():
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{job=~"$job",x="}"}'
        '[$__rate_interval])))') == {"a_bucket"}
    assert promql_metric_names("max(open / max_fds) > bool 1e3 offset 5m or on(job) b") == {
        "open", "max_fds", "b"}


@pytest.mark.gen_test
async def test_requests_are_counted_by_route_name_method_and_status_never_by_raw_url(api):
    token = await api.user_token()
    post_ids = []
    for index in range(3):
        post_ids.append((await api.post("/api/v1/posts", {"title": f"t{index}", "content": "c"},
                                        token=token)).json["id"])
    for post_id in post_ids:
        assert (await api.get(f"/api/v1/posts/{post_id}")).code == 200
    assert (await api.get(f"/api/v1/posts/{post_ids[0]}")).code == 200
    assert (await api.get("/api/v1/posts/" + "0" * 24)).code == 404
    assert (await api.get("/api/v1/posts/not-an-id")).code == 404
    assert (await api.patch(f"/api/v1/posts/{post_ids[0]}", {"title": "x"})).code == 401
    assert (await api.get("/no/such/route/" + "a" * 24)).code == 404

    metrics = await scrape(api)
    requests = "tornado_app_http_requests_total"
    assert metrics.value(requests, route="posts.item", method="GET", status="200") == 4
    assert metrics.value(requests, route="posts.item", method="GET", status="404") == 2
    assert metrics.value(requests, route="posts.item", method="PATCH", status="401") == 1
    assert metrics.value(requests, route="posts.list", method="POST", status="201") == 3
    assert metrics.value(requests, route="auth.login", method="POST", status="200") == 1
    assert metrics.value(requests, route="not_found", method="GET", status="404") == 1
    # Labels are route names: no id, no raw path, no unbounded cardinality.
    assert not OBJECT_ID.search(metrics.text), OBJECT_ID.search(metrics.text).group()
    assert "not-an-id" not in metrics.text and "/api/v1" not in metrics.text
    routes = {s.labels["route"] for s in metrics.samples if s.name == requests}
    assert all(re.fullmatch(r"[a-z_.]+", route) for route in routes), routes

    # The latency histogram, by route.
    count = metrics.value("tornado_app_http_request_duration_seconds_count", route="posts.item")
    assert count == 7
    assert metrics.value("tornado_app_http_request_duration_seconds_bucket", route="posts.item", le="+Inf") == count
    assert 0 < metrics.value("tornado_app_http_request_duration_seconds_sum", route="posts.item") < 7 * 5
    buckets = [s for s in metrics.samples
               if s.name == "tornado_app_http_request_duration_seconds_bucket" and s.labels["route"] == "posts.item"]
    assert len(buckets) >= 10
    values = [s.value for s in sorted(buckets, key=lambda s: float(s.labels["le"]))]
    assert values == sorted(values)


@pytest.mark.gen_test
async def test_made_up_methods_are_counted_under_one_label_value(api):
    # Tornado answers any method token (405 on a known route); each one a label
    # value of its own would grow the process and every scrape without bound.
    for index in range(40):
        assert (await api.request(f"MADEUP{index}", "/api/v1/posts")).code == 405
        assert (await api.request(f"BREW{index}", "/no/such/route")).code in (404, 405)
    metrics = await scrape(api)
    requests = "tornado_app_http_requests_total"
    methods = {s.labels["method"] for s in metrics.samples if s.name == requests}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}, methods
    assert metrics.value(requests, route="posts.list", method="other", status="405") == 40
    assert sum(s.value for s in metrics.samples if s.name == requests
               and s.labels["route"] == "not_found" and s.labels["method"] == "other") == 40
    assert "MADEUP" not in metrics.text and "BREW" not in metrics.text


def test_every_label_value_comes_from_a_fixed_set():
    assert method_label("GET") == "GET" and method_label("get") == "other"
    assert method_label("PROPFIND") == "other"
    assert status_label(201) == "201" and status_label(599) == "other"
    assert status_label(299) == "other"
    assert generation_label(2) == "2" and generation_label(None) == "other"


@pytest.mark.gen_test
async def test_websocket_connections_gauge_follows_real_clients(api, server):
    await wait_for_value(api, "tornado_app_websocket_connections", 0)
    first = await WsClient.connect(server.port)
    await wait_for_value(api, "tornado_app_websocket_connections", 1)
    second = await WsClient.connect(server.port)
    await second.subscribe(["posts"])
    await wait_for_value(api, "tornado_app_websocket_connections", 2)
    first.close()
    await wait_for_value(api, "tornado_app_websocket_connections", 1)
    second.close()
    await wait_for_value(api, "tornado_app_websocket_connections", 0)


@pytest.mark.gen_test
async def test_longpoll_pending_while_a_poll_is_held(api):
    token = await api.user_token()
    await wait_for_value(api, "tornado_app_longpoll_pending", 0)
    held = asyncio.ensure_future(api.get("/api/v1/poll?channels=posts&timeout=20"))
    await wait_for_value(api, "tornado_app_longpoll_pending", 1)
    await create_posts(api, token, 1)
    answered = await asyncio.wait_for(held, 5)
    assert answered.code == 200 and len(answered.json["events"]) == 1
    await wait_for_value(api, "tornado_app_longpoll_pending", 0)


@pytest.mark.gen_test
async def test_sse_streams_gauge_follows_an_open_stream(api, server):
    await wait_for_value(api, "tornado_app_sse_streams", 0)
    stream = IOStream(socket.socket())
    await stream.connect(("127.0.0.1", server.port))
    await stream.write(b"GET /api/v1/stream?channels=posts HTTP/1.1\r\nHost: x\r\n"
                       b"Accept: text/event-stream\r\n\r\n")
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    await wait_for_value(api, "tornado_app_sse_streams", 1)
    stream.close()
    await wait_for_value(api, "tornado_app_sse_streams", 0)


@pytest.mark.gen_test
async def test_events_published_and_delivered_count_with_a_subscriber(api, server):
    token = await api.user_token()
    before = await scrape(api)
    published = before.value("tornado_app_events_published_total")
    delivered = before.value("tornado_app_events_delivered_total")
    watchers = [await WsClient.connect(server.port) for _ in range(2)]
    for ws in watchers:
        await ws.subscribe(["posts"])
    await create_posts(api, token, 3)
    for ws in watchers:
        await ws.events(3)
    after = await scrape(api)
    assert after.value("tornado_app_events_published_total") == published + 3
    assert after.value("tornado_app_events_delivered_total") == delivered + 6  # 3 events to 2 subscribers
    # An event nobody subscribed to is published but delivered to no one.
    admin = await api.admin_token(server)
    await api.post("/api/v1/products", {"sku": "M-1", "name": "n", "category": "c", "price_cents": 1},
                   token=admin)
    last = await scrape(api)
    assert last.value("tornado_app_events_published_total") == published + 4
    assert last.value("tornado_app_events_delivered_total") == delivered + 6
    for ws in watchers:
        ws.close()


class TestDatabaseErrors:
    """A server on its own FerretDB, which the test stops."""

    @pytest.fixture
    def outage_db_timeout(self):
        return 1

    @pytest.mark.gen_test(timeout=60)
    async def test_database_errors_count_while_the_database_is_down(
            self, outage_server, own_ferretdb, caplog):
        caplog.set_level(logging.WARNING, logger="tornado_app.request")
        api = Api(f"http://127.0.0.1:{outage_server.port}")
        assert (await api.get("/api/v1/posts")).code == 200
        assert (await scrape(api)).value("tornado_app_database_errors_total") == 0

        own_ferretdb.stop()
        for index in range(3):
            response = await api.get("/api/v1/posts", headers={"X-Request-ID": f"outage-{index}"})
            assert_error(response, 503, "service_unavailable")
        metrics = await scrape(api)  # /metrics itself needs no database
        assert metrics.value("tornado_app_database_errors_total") == 3
        assert metrics.value("tornado_app_http_requests_total", route="posts.list", method="GET", status="503") == 3
        # The warning written while serving each request carries that request's id.
        warned = [r for r in caplog.records if "database unavailable" in r.getMessage()]
        assert [getattr(r, "request_id", None) for r in warned] == [f"outage-{i}" for i in range(3)]

        own_ferretdb.start()
        deadline = time.monotonic() + 20
        while (await api.get("/api/v1/posts")).code != 200:
            assert time.monotonic() < deadline, "no recovery"
            await asyncio.sleep(0.3)
        assert (await scrape(api)).value("tornado_app_database_errors_total") >= 3
        api.close()


# --- logs ----------------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_access_log_records_carry_the_fields_and_the_response_request_id(api, caplog):
    caplog.set_level(logging.INFO, logger="tornado_app.access")
    user = await api.register("alice")
    token = (await api.login("alice"))["access_token"]
    caplog.clear()
    anonymous = await api.get("/api/v1/posts", headers={"X-Request-ID": "client-chosen.id-1"})
    authenticated = await api.get("/api/v1/users/me", token=token)
    failed = await api.get("/api/v1/posts/" + "0" * 24, headers={"X-Request-ID": "bad id with spaces"})

    records = {r.request_id: r for r in caplog.records if r.name == "tornado_app.access"}
    assert anonymous.headers["X-Request-ID"] == "client-chosen.id-1"
    for response, user_id in ((anonymous, None), (authenticated, user["id"]), (failed, None)):
        rid = response.headers["X-Request-ID"]
        assert rid in records, (rid, list(records))
        record = records[rid]
        line = JsonFormatter().format(record)
        assert "\n" not in line
        entry = json.loads(line)
        assert ACCESS_FIELDS <= set(entry), entry
        assert entry["request_id"] == rid
        assert entry["method"] == "GET"
        assert entry["path"] == response.request.url.split(str(api.base_url))[1].split("?")[0]
        assert entry["status"] == response.code
        assert isinstance(entry["duration_ms"], (int, float)) and entry["duration_ms"] >= 0
        assert entry["user_id"] == user_id
        assert entry["level"] == "INFO" and entry["time"].endswith("Z")
    assert failed.headers["X-Request-ID"] != "bad id with spaces"
    assert records[failed.headers["X-Request-ID"]].status == 404


def test_run_py_writes_one_json_object_per_line_with_the_request_fields(mongodb_uri, tmp_path):
    db_name = f"test_logs_{uuid.uuid4().hex[:12]}"
    server = ServerProcess(mongodb_uri, db_name, tmp_path, LOG_LEVEL="INFO")
    try:
        server.start()
        base = server.base_url
        status, _, user = http_json("POST", base + "/api/v1/auth/register",
                                    {"username": "alice", "email": "alice@example.com",
                                     "password": "password123"})
        assert status == 201
        token = server.login("alice", "password123")
        request = urllib.request.Request(base + "/api/v1/users/me", headers={
            "Authorization": f"Bearer {token}", "X-Request-ID": "me-request-1"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["X-Request-ID"] == "me-request-1"
        status, headers, _ = http_json("GET", base + "/api/v1/posts/" + "f" * 24)
        assert status == 404
        not_found_id = headers["X-Request-ID"]
        assert server.terminate() == 0
    finally:
        server.kill()
        with MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000) as client:
            client.drop_database(db_name)

    lines = [line for line in server.stderr().splitlines() if line.strip()]
    assert lines
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert isinstance(entry, dict)
        assert {"time", "level", "logger", "message"} <= set(entry)
        entries.append(entry)
    access = {e["request_id"]: e for e in entries if e["logger"] == "tornado_app.access"}
    me = access["me-request-1"]
    assert ACCESS_FIELDS <= set(me)
    assert (me["method"], me["path"], me["status"]) == ("GET", "/api/v1/users/me", 200)
    assert me["user_id"] == user["id"]
    assert me["duration_ms"] >= 0
    missing = access[not_found_id]
    assert (missing["status"], missing["user_id"]) == (404, None)


def test_every_log_line_written_while_serving_a_request_carries_its_id(mongodb_uri, tmp_path):
    db_name = f"test_logs_{uuid.uuid4().hex[:12]}"
    # Redis on a port where nothing listens: each write's publish warns while serving it.
    server = ServerProcess(mongodb_uri, db_name, tmp_path, LOG_LEVEL="INFO",
                           REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    try:
        server.start()
        http_json("POST", server.base_url + "/api/v1/auth/register",
                  {"username": "alice", "email": "alice@example.com", "password": "password123"})
        token = server.login("alice", "password123")
        request = urllib.request.Request(
            server.base_url + "/api/v1/posts", method="POST",
            data=json.dumps({"title": "t", "content": "c"}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "X-Request-ID": "write-1"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201
        deadline = time.monotonic() + 10
        while "could not publish" not in server.stderr():
            assert time.monotonic() < deadline, server.stderr()[-3000:]
            time.sleep(0.1)
        server.terminate()
    finally:
        server.kill()
        with MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000) as client:
            client.drop_database(db_name)
    warned = [e for e in server.log_records() if "could not publish" in e["message"]]
    assert warned and all(e.get("request_id") == "write-1" for e in warned), warned
