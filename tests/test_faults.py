"""Faults under load: the database stops in the middle of a burst of writes, and SIGTERM arrives
while requests are in flight. Every answer is clean and nothing acknowledged is lost."""

import asyncio
import json
import time
import uuid

import jsonschema
import pytest
from bson import ObjectId
from pymongo import MongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.simple_httpclient import HTTPStreamClosedError

from tests.conftest import JWT_SECRET, Api, assert_error
from tests.server_process import ServerProcess, http_json
from tornado_app.runtime.server import Server
from tornado_app.runtime.settings import load_settings

DB_TIMEOUT = 1.0


CONCURRENCY = 10


async def _timed_post(api: Api, token: str, title: str, request_timeout: float = 30):
    """(title, response or the client's exception, seconds)."""
    request = HTTPRequest(api.base_url + "/api/v1/posts", method="POST", request_timeout=request_timeout,
                          body=json.dumps({"title": title, "content": "under load"}),
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    started = time.monotonic()
    try:
        response = await api.http.fetch(request, raise_error=False)
    except Exception as exc:  # a client-side timeout: the server did not answer in time
        return title, exc, time.monotonic() - started
    response.json = json.loads(response.body) if response.body else None
    return title, response, time.monotonic() - started


def _writes(api: Api, token: str, titles, gate: asyncio.Semaphore, request_timeout: float = 30):
    """Concurrent POSTs, at most as many in flight as the gate lets through."""
    async def one(title):
        async with gate:
            return await _timed_post(api, token, title, request_timeout)
    return [asyncio.ensure_future(one(title)) for title in titles]


def _check_answer(response, title: str, acknowledged: dict, refused: set | None = None) -> None:
    """201 with the post, or 503 in the error shape with Retry-After, or no answer at all (the
    connection closed: the write was sent as the database died, and whether it was stored
    cannot be known until it is back; a 503 would claim that nothing changed)."""
    if isinstance(response, HTTPStreamClosedError):
        return
    assert not isinstance(response, Exception), (title, response)
    assert response.code in (201, 503), (response.code, response.body[:300])
    if refused is not None and response.code == 503:
        refused.add(title)
    if response.code == 201:
        assert response.json["title"] == title
        acknowledged[response.json["id"]] = title
    else:
        assert_error(response, 503, "service_unavailable")
        assert int(response.headers["Retry-After"]) > 0


class TestDatabaseStopsMidLoad:
    @pytest.fixture
    def outage_db_timeout(self):
        return DB_TIMEOUT

    @pytest.mark.gen_test(timeout=90)
    async def test_writes_get_201_or_503_and_nothing_acknowledged_is_lost(
            self, outage_server, own_ferretdb):
        loop = asyncio.get_running_loop()
        api = Api(f"http://127.0.0.1:{outage_server.port}")
        api.http = AsyncHTTPClient(force_instance=True, max_clients=100)
        token = await api.user_token("writer")
        acknowledged: dict[str, str] = {}
        gate = asyncio.Semaphore(CONCURRENCY)

        # A burst of concurrent writes; the database process dies (SIGKILL, as in a crash or an
        # OOM kill) while they are being served.
        burst = _writes(api, token, [f"burst {i}" for i in range(60)], gate)
        while sum(task.done() for task in burst) < 15:
            await asyncio.sleep(0.002)
        own_ferretdb.process.kill()
        await loop.run_in_executor(None, own_ferretdb.process.wait)
        assert sum(not task.done() for task in burst) > 0, "the burst was over before the outage"
        # More writes while it is down.
        during = _writes(api, token, [f"during {i}" for i in range(20)], gate)
        answers = await asyncio.gather(*burst, *during)

        ready = await api.get("/health/ready")
        assert ready.code == 503
        assert (await api.get("/health")).code == 200
        outage_answer = await api.post("/api/v1/posts", {"title": "x", "content": "y"}, token=token)
        assert_error(outage_answer, 503, "service_unavailable")

        refused: set[str] = set()
        for title, response, seconds in answers:
            _check_answer(response, title, acknowledged, refused)
            # At most CONCURRENCY writes wait on one another (see the burst test below).
            assert seconds < CONCURRENCY * (DB_TIMEOUT + 0.5) + 3, (title, seconds)
        codes = [getattr(response, "code", None) for _, response, _ in answers]
        assert codes.count(201) >= 15 and codes.count(503) >= 20, codes

        # The database returns; the same server recovers by itself.
        await loop.run_in_executor(None, own_ferretdb.start)
        deadline = time.monotonic() + 30
        while (await api.get("/health/ready")).code != 200:
            assert time.monotonic() < deadline, "readiness did not come back"
            await asyncio.sleep(0.25)
        after = await asyncio.gather(*_writes(api, token, [f"after {i}" for i in range(20)], gate))
        for title, response, _ in after:
            assert response.code == 201, (title, response.code, response.body)
            acknowledged[response.json["id"]] = title

        # Every write acknowledged with 201, before, during or after the outage, is there.
        for post_id, title in acknowledged.items():
            response = await api.get(f"/api/v1/posts/{post_id}")
            assert response.code == 200, (post_id, title, response.code)
            assert response.json["title"] == title
        listed = set()
        cursor = None
        while True:
            page = await api.get("/api/v1/posts?limit=100" + (f"&cursor={cursor}" if cursor else ""))
            assert page.code == 200
            listed |= {p["id"] for p in page.json["items"]}
            cursor = page.json["next_cursor"]
            if cursor is None:
                break
        assert set(acknowledged) <= listed
        # A 503 means nothing was changed.
        titles = {doc["title"] async for doc in outage_server.ctx.db["posts"].find({}, {"title": 1})
                  if "title" in doc}
        assert not refused & titles, sorted(refused & titles)
        api.close()

    @pytest.mark.gen_test(timeout=90)
    async def test_a_big_burst_waiting_to_write_its_events_is_answered_within_seconds(
            self, outage_server, own_ferretdb):
        api = Api(f"http://127.0.0.1:{outage_server.port}")
        api.http = AsyncHTTPClient(force_instance=True, max_clients=150)
        token = await api.user_token("writer")
        # Whether writes are lined up at the event log when the database dies is a matter of
        # timing; holding its lock (as a slow event write would) while the burst arrives lines
        # them up every time, so the outcome does not depend on luck.
        lock = outage_server.ctx.events._lock
        await lock.acquire()
        try:
            burst = _writes(api, token, [f"burst {i}" for i in range(150)], asyncio.Semaphore(150),
                            request_timeout=15)
            deadline = time.monotonic() + 10
            while len(getattr(lock, "_waiters", None) or ()) < 20:
                assert time.monotonic() < deadline, "no writes queued at the event log"
                await asyncio.sleep(0.001)
            own_ferretdb.process.kill()
            await asyncio.get_running_loop().run_in_executor(None, own_ferretdb.process.wait)
        finally:
            lock.release()
        answers = await asyncio.gather(*burst)
        api.close()
        slow = [(title, getattr(response, "code", repr(response)[:60]), round(seconds, 1))
                for title, response, seconds in answers
                if (isinstance(response, Exception)
                    and not isinstance(response, HTTPStreamClosedError))
                or seconds > 4 * DB_TIMEOUT + 3]
        assert slow == [], f"{len(slow)} writes answered late or never: {slow[:5]}"
        for title, response, _ in answers:
            _check_answer(response, title, {})

    @pytest.mark.gen_test(timeout=60)
    async def test_readiness_503_matches_its_documented_schema(self, outage_server, own_ferretdb):
        api = Api(f"http://127.0.0.1:{outage_server.port}")
        document = (await api.get("/openapi.json")).json
        await asyncio.get_running_loop().run_in_executor(None, own_ferretdb.stop)
        ready = await api.get("/health/ready")
        assert ready.code == 503
        assert int(ready.headers["Retry-After"]) > 0
        schema = document["paths"]["/health/ready"]["get"]["responses"]["503"]["content"][
            "application/json"]["schema"]
        api.close()
        jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(
            ready.json)


class TestSigtermUnderLoad:
    @pytest.fixture
    def process(self, mongodb_uri, tmp_path):
        db_name = f"test_sigterm_{uuid.uuid4().hex[:12]}"
        server = ServerProcess(mongodb_uri, db_name, tmp_path, SHUTDOWN_TIMEOUT="5")
        yield server
        server.kill()
        with MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000) as client:
            client.drop_database(db_name)

    @pytest.mark.gen_test(timeout=90)
    async def test_in_flight_writes_finish_and_every_acknowledged_one_is_stored(
            self, process, mongodb_uri):
        process.start()
        base = process.base_url
        status, _, _ = http_json("POST", base + "/api/v1/auth/register",
                                 {"username": "writer", "email": "writer@example.com",
                                  "password": "password123"})
        assert status == 201
        token = process.login("writer", "password123")
        client = AsyncHTTPClient(force_instance=True, max_clients=100)

        async def write(index):
            request = HTTPRequest(base + "/api/v1/posts", method="POST",
                                  headers={"Authorization": f"Bearer {token}",
                                           "Content-Type": "application/json"},
                                  body=json.dumps({"title": f"load {index}", "content": "c"}),
                                  request_timeout=20)
            try:
                return index, await client.fetch(request, raise_error=False)
            except (OSError, StreamClosedError) as exc:  # refused or reset: connection level
                return index, exc

        tasks = [asyncio.ensure_future(write(i)) for i in range(50)]
        while not any(task.done() for task in tasks):  # the first answers are back: the rest
            await asyncio.sleep(0.002)                 # are in flight
        started = time.monotonic()
        process.process.send_signal(15)  # SIGTERM
        await asyncio.sleep(0.3)
        with pytest.raises((OSError, StreamClosedError)):  # no longer accepting
            await client.fetch(HTTPRequest(base + "/health", request_timeout=5), raise_error=False)
        results = await asyncio.gather(*tasks)
        exit_code = await asyncio.get_running_loop().run_in_executor(None, process.process.wait, 15)
        elapsed = time.monotonic() - started
        client.close()

        assert exit_code == 0, process.stderr()[-3000:]
        assert elapsed < 5 + 1, f"exit took {elapsed:.1f} s with SHUTDOWN_TIMEOUT=5"
        acknowledged = {}
        for index, response in results:
            # Completed, or refused at connection level once the listener closed; never a 5xx.
            if isinstance(response, Exception):
                continue
            assert response.code == 201, (index, response.code, response.body)
            if response.code == 201:
                body = json.loads(response.body)
                assert body["title"] == f"load {index}"
                acknowledged[body["id"]] = body["title"]
        assert len(acknowledged) >= 1
        errors = [e for e in process.log_records() if e.get("level") in ("ERROR", "CRITICAL")]
        assert errors == [], errors[:3]

        with MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000) as db_client:
            posts = db_client[process.db_name]["posts"]
            for post_id, title in acknowledged.items():
                stored = posts.find_one({"_id": ObjectId(post_id)})
                assert stored is not None and stored["title"] == title, post_id

        # And a new server on the same database serves them.
        again = ServerProcess(mongodb_uri, process.db_name, process.workdir / "again")
        try:
            again.start()
            for post_id, title in acknowledged.items():
                status, _, body = http_json("GET", f"{again.base_url}/api/v1/posts/{post_id}")
                assert (status, body["title"]) == (200, title)
            assert again.terminate() == 0
        finally:
            again.kill()


class TestDatabaseDownAtStart:
    """A server that could not ask the database what it is (down at start) must not guess the
    kind whose guarantees it cannot keep: FerretDB's updates are atomic only through one write
    connection."""

    @pytest.fixture
    def late_server(self, io_loop, own_ferretdb, tmp_path):
        own_ferretdb.stop()
        settings = load_settings(app_env="test", port=0, mongodb_uri=own_ferretdb.uri,
                                 data_dir=tmp_path, jwt_secret=JWT_SECRET, bcrypt_rounds=4,
                                 db_timeout=DB_TIMEOUT)
        srv = Server(settings, own_ferretdb.uri, JWT_SECRET, is_ferretdb=None)
        io_loop.run_sync(srv.start)
        own_ferretdb.start()  # the same port: the server's clients find it there
        yield srv
        io_loop.run_sync(srv.stop)

    @pytest.mark.gen_test(timeout=90)
    async def test_concurrent_decrements_never_oversell_after_the_database_came_up(
            self, late_server):
        api = Api(f"http://127.0.0.1:{late_server.port}")
        deadline = time.monotonic() + 30
        while (await api.get("/health/ready")).code != 200:
            assert time.monotonic() < deadline, "never ready"
            await asyncio.sleep(0.2)
        admin = await api.admin_token(late_server)
        created = await api.post("/api/v1/products", {"sku": "SKU-1", "name": "n", "category": "c",
                                                      "price_cents": 100, "stock": 50},
                                 token=admin)
        assert created.code == 201, created.body
        http = AsyncHTTPClient(force_instance=True, max_clients=150)
        request = HTTPRequest(f"{api.base_url}/api/v1/products/{created.json['id']}/stock",
                              method="POST", body=json.dumps({"delta": -1}), request_timeout=60,
                              headers={"Authorization": f"Bearer {admin}",
                                       "Content-Type": "application/json"})
        try:
            responses = await asyncio.gather(
                *(http.fetch(request, raise_error=False) for _ in range(150)))
        finally:
            http.close()
        codes = [response.code for response in responses]
        assert codes.count(200) == 50, codes
        assert codes.count(409) == 100, codes
        api.close()
