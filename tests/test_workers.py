"""Several workers: fan-out through Redis, Redis outages, and `run.py --workers N` end to end."""

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
from pymongo import MongoClient

from tests.conftest import JWT_SECRET, Api
from tests.realtime_helpers import WsClient, create_posts
from tornado_app.runtime.embedded import die_with_parent, free_port
from tornado_app.runtime.server import Server

ROOT = Path(__file__).resolve().parent.parent


class RedisServer:
    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (make test installs it)"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent)  # no redis-server left behind by a killed test run
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                import socket
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def pause(self) -> None:
        """SIGSTOP: Redis keeps its connections open and answers nothing (a hung server)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.resume()  # a stopped process would not act on SIGTERM
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker_pair(io_loop, settings, mongodb_uri, db_name, redis_server):
    """Two servers on one database, as two workers would be, joined by Redis."""
    worker_settings = settings.model_copy(update={"redis_url": redis_server.url})
    servers = [Server(worker_settings, mongodb_uri, JWT_SECRET) for _ in range(2)]
    for srv in servers:
        io_loop.run_sync(srv.start)
    yield servers
    for srv in servers:
        io_loop.run_sync(srv.stop)
    with MongoClient(mongodb_uri) as client:
        client.drop_database(db_name)


async def _wait_connected(servers, connected=True, timeout=10.0):
    deadline = time.monotonic() + timeout
    while any(srv.fanout.connected != connected for srv in servers):
        assert time.monotonic() < deadline, "Redis listeners did not reach the state in time"
        await asyncio.sleep(0.05)


@pytest.mark.gen_test(timeout=60)
async def test_event_written_on_one_worker_reaches_a_subscriber_on_the_other(worker_pair):
    first, second = worker_pair
    await _wait_connected(worker_pair)
    writer = Api(f"http://127.0.0.1:{second.port}")
    token = await writer.user_token("alice")
    ws = await WsClient.connect(first.port)
    await ws.subscribe(["posts"])
    await create_posts(writer, token, 20)
    events = await ws.events(20)
    assert [e["data"]["title"] for e in events] == [f"post {i}" for i in range(20)]
    assert [e["seq"] for e in events] == list(range(1, 21))
    ws.close()
    writer.close()


@pytest.mark.gen_test(timeout=60)
async def test_writes_on_both_workers_arrive_in_seq_order_without_gaps(worker_pair):
    first, second = worker_pair
    await _wait_connected(worker_pair)
    apis = [Api(f"http://127.0.0.1:{srv.port}") for srv in worker_pair]
    token = await apis[0].user_token("alice")
    watchers = [await WsClient.connect(srv.port) for srv in worker_pair]
    for ws in watchers:
        await ws.subscribe(["posts"])
    await asyncio.gather(create_posts(apis[0], token, 40, "a"), create_posts(apis[1], token, 40, "b"))
    for ws in watchers:
        events = await ws.events(80)
        assert [e["seq"] for e in events] == list(range(1, 81))
        ws.close()
    for api in apis:
        api.close()


@pytest.mark.gen_test(timeout=60)
async def test_events_keep_flowing_while_redis_is_down_and_after_it_returns(worker_pair,
                                                                            redis_server):
    first, second = worker_pair
    await _wait_connected(worker_pair)
    writer = Api(f"http://127.0.0.1:{second.port}")
    token = await writer.user_token("alice")
    ws = await WsClient.connect(first.port)
    await ws.subscribe(["posts"])

    redis_server.stop()
    await _wait_connected(worker_pair, connected=False)
    await create_posts(writer, token, 5, "during")
    during = await ws.events(5)
    assert [e["data"]["title"] for e in during] == [f"during {i}" for i in range(5)]

    redis_server.start()
    await _wait_connected(worker_pair)
    await create_posts(writer, token, 5, "after")
    after = await ws.events(5)
    assert [e["data"]["title"] for e in after] == [f"after {i}" for i in range(5)]
    assert [e["seq"] for e in during + after] == list(range(1, 11))
    ws.close()
    writer.close()


async def _redis_gauge(api) -> float:
    text = (await api.http.fetch(api.base_url + "/metrics")).body.decode()
    [value] = re.findall(r"^tornado_app_redis_connected (\S+)$", text, re.M)
    return float(value)


@pytest.mark.gen_test(timeout=90)
async def test_a_hung_redis_is_noticed_and_events_come_from_the_log_until_it_answers(
        worker_pair, redis_server, caplog):
    caplog.set_level(logging.INFO, logger="tornado_app.realtime.fanout")
    first, second = worker_pair
    await _wait_connected(worker_pair)
    apis = [Api(f"http://127.0.0.1:{srv.port}") for srv in worker_pair]
    token = await apis[1].user_token("alice")
    ws = await WsClient.connect(first.port)
    await ws.subscribe(["posts"])
    assert await _redis_gauge(apis[0]) == 1
    caplog.clear()

    redis_server.pause()
    try:
        # Redis still holds every connection open; it just never answers.
        await create_posts(apis[1], token, 3, "hung")
        during = await ws.events(3, timeout=20)
        assert [e["data"]["title"] for e in during] == [f"hung {i}" for i in range(3)]
        await _wait_connected(worker_pair, connected=False)
        assert await _redis_gauge(apis[0]) == 0
        ready = await apis[0].get("/health/ready")
        assert ready.code == 200
        assert ready.json["redis"].startswith("unreachable")
        await asyncio.sleep(5)  # reconnect attempts go on, and are not logged again
        lost = [r for r in caplog.records if r.levelno == logging.WARNING
                and r.name == "tornado_app.realtime.fanout" and "Redis" in r.getMessage()
                and "publish" not in r.getMessage()]
        assert len(lost) == 2, [r.getMessage() for r in lost]  # once per worker
    finally:
        redis_server.resume()

    await _wait_connected(worker_pair)
    assert await _redis_gauge(apis[0]) == 1
    assert (await apis[0].get("/health/ready")).json["redis"] == "ok"
    back = [r for r in caplog.records if r.getMessage() == "listening for events on Redis"]
    assert len(back) == 2
    await create_posts(apis[1], token, 3, "after")
    after = await ws.events(3)
    assert [e["seq"] for e in during + after] == list(range(during[0]["seq"], during[0]["seq"] + 6))
    ws.close()
    for api in apis:
        api.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_message_on_the_channel_that_is_not_an_event_is_ignored(
        worker_pair, redis_server, caplog):
    caplog.set_level(logging.INFO, logger="tornado_app.realtime.fanout")
    first, second = worker_pair
    await _wait_connected(worker_pair)
    with redis.Redis.from_url(redis_server.url) as client:
        for junk in (b"hello", b"[1]", b'{"seq": "x"}'):
            client.publish("tornado_app:events", junk)
    writer = Api(f"http://127.0.0.1:{second.port}")
    token = await writer.user_token("alice")
    ws = await WsClient.connect(first.port)
    await ws.subscribe(["posts"])
    await create_posts(writer, token, 2)
    assert [e["data"]["title"] for e in await ws.events(2)] == ["post 0", "post 1"]
    messages = [r.getMessage() for r in caplog.records]
    assert not any("lost Redis" in m for m in messages), messages  # the connection stayed
    assert sum("not an event" in m for m in messages) == 6  # three, heard by each worker
    ws.close()
    writer.close()


def _env(mongodb_uri, db_name, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("APP_ENV",)}
    env.update(MONGODB_URI=mongodb_uri, MONGODB_DB=db_name, JWT_SECRET=JWT_SECRET,
               BCRYPT_ROUNDS="4", LOG_LEVEL="WARNING", **extra)
    return env


def _wait_ready(port, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "server exited at start"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("server not ready")


@pytest.fixture
def drop_db(mongodb_uri, db_name):
    yield
    with MongoClient(mongodb_uri) as client:
        client.drop_database(db_name)


@pytest.mark.gen_test(timeout=90)
async def test_run_py_with_two_workers_delivers_to_subscribers_on_every_worker(
        mongodb_uri, db_name, redis_server, drop_db):
    port = free_port()
    # Inserts and fan-out only: nothing here updates one document from two workers, which is
    # what FerretDB cannot keep atomic across processes (the opt-in is a no-op on MongoDB).
    process = subprocess.Popen([sys.executable, "run.py", "--workers", "2"], cwd=ROOT,
                               env=_env(mongodb_uri, db_name, PORT=str(port),
                                        REDIS_URL=redis_server.url,
                                        ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1"))
    try:
        _wait_ready(port, process)
        api = Api(f"http://127.0.0.1:{port}")
        token = await api.user_token("alice")
        # Connections spread over both workers; every one must see every event.
        watchers = [await WsClient.connect(port) for _ in range(8)]
        for ws in watchers:
            await ws.subscribe(["posts"])
        await asyncio.sleep(0.5)  # both workers' Redis listeners are up
        await create_posts(api, token, 10)
        for ws in watchers:
            events = await ws.events(10)
            assert [e["data"]["title"] for e in events] == [f"post {i}" for i in range(10)]
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        closes = [await ws.recv(timeout=10) for ws in watchers]
        assert closes == [None] * 8
        assert {ws.conn.close_code for ws in watchers} == {1001}
        assert process.wait(15) == 0
        assert time.monotonic() - started < 10
        api.close()
    finally:
        if process.poll() is None:
            process.kill()


def _is_ferretdb(uri: str) -> bool:
    with MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        return "ferretdbVersion" in client.admin.command("buildInfo")


def test_run_py_refuses_several_workers_on_ferretdb(mongodb_uri, db_name, redis_server, drop_db):
    if not _is_ferretdb(mongodb_uri):
        pytest.skip("the refusal is for FerretDB; this run is on MongoDB")
    done = subprocess.run([sys.executable, "run.py", "--workers", "2"], cwd=ROOT,
                          env=_env(mongodb_uri, db_name, PORT=str(free_port()),
                                   REDIS_URL=redis_server.url),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "--workers 2 on FerretDB is refused" in done.stderr
    assert "ALLOW_UNSAFE_MULTIWORKER_FERRETDB=1" in done.stderr


@pytest.mark.gen_test(timeout=90)
async def test_sigterm_with_open_connections_exits_cleanly_within_the_timeout(
        mongodb_uri, db_name, drop_db):
    port = free_port()
    process = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT,
                               env=_env(mongodb_uri, db_name, PORT=str(port),
                                        SHUTDOWN_TIMEOUT="5"))
    try:
        _wait_ready(port, process)
        api = Api(f"http://127.0.0.1:{port}")
        ws = await WsClient.connect(port)
        await ws.subscribe(["posts"])
        poll = asyncio.ensure_future(api.get("/api/v1/poll?channels=posts&timeout=60"))
        sse_chunks = []
        from tornado.httpclient import HTTPRequest
        sse = asyncio.ensure_future(api.http.fetch(HTTPRequest(
            f"http://127.0.0.1:{port}/api/v1/stream?channels=posts",
            streaming_callback=sse_chunks.append, request_timeout=60), raise_error=False))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert await ws.recv(timeout=10) is None
        assert ws.conn.close_code == 1001
        answered = await asyncio.wait_for(poll, 10)
        assert answered.code == 200
        assert json.loads(answered.body)["events"] == []
        ended = await asyncio.wait_for(sse, 10)
        assert ended.code == 200 and b"connected" in b"".join(sse_chunks)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5 + 1
        api.close()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.gen_test(timeout=90)
async def test_run_py_with_two_workers_logout_reaches_websockets_on_every_worker(
        mongodb_uri, db_name, redis_server, drop_db):
    port = free_port()
    process = subprocess.Popen([sys.executable, "run.py", "--workers", "2"], cwd=ROOT,
                               env=_env(mongodb_uri, db_name, PORT=str(port),
                                        REDIS_URL=redis_server.url, AUTH_RECHECK_INTERVAL="0.5",
                                        # Logins, a logout and fan-out: nothing that updates
                                        # one document from both workers at once.
                                        ALLOW_UNSAFE_MULTIWORKER_FERRETDB="1"))
    try:
        _wait_ready(port, process)
        api = Api(f"http://127.0.0.1:{port}")
        await api.register("alice")
        tokens = await api.login("alice")
        alice = (await api.get("/api/v1/users/me", token=tokens["access_token"])).json["id"]
        # Connections spread over both workers; the logout is served by one of them.
        watchers = [await WsClient.connect(port, token=tokens["access_token"]) for _ in range(8)]
        for ws in watchers:
            await ws.subscribe([f"user:{alice}", "posts"])
        response = await api.post("/api/v1/auth/logout", token=tokens["access_token"])
        assert response.code == 204
        for ws in watchers:
            frame = await ws.recv_until("error", timeout=10)
            assert (frame["code"], frame["channels"]) == ("unauthorized", [f"user:{alice}"])
            ws.close()
        api.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        if process.poll() is None:
            process.kill()
