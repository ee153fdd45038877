"""Shared fixtures: one real FerretDB per test session, a fresh database and server per test.

pytest-tornado gives each test its own IOLoop, and an AsyncMongoClient is bound to the loop it
first ran on, so the database process is shared and every client and app is made per test.
"""

import json
import os
import uuid

import pytest
from pymongo import MongoClient
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tornado_app.runtime import eventloop
from tornado_app.runtime.embedded import EmbeddedFerretDB
from tornado_app.runtime.server import Server
from tornado_app.runtime.settings import load_settings

# A developer's .env must not change what the suite runs against (nor the servers it starts as
# subprocesses, which inherit this).
os.environ["ENV_FILE"] = ""

# pytest-tornado's IOLoop per test is made by the same policy as the server's (run.py).
EVENT_LOOP = eventloop.install()

JWT_SECRET = "test-secret-" + "x" * 40


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory):
    """TEST_MONGODB_URI runs the suite against a real MongoDB; by default, our own FerretDB."""
    uri = os.environ.get("TEST_MONGODB_URI")
    if uri:
        yield uri
        return
    with EmbeddedFerretDB(tmp_path_factory.mktemp("ferretdb")) as ferretdb:
        yield ferretdb.uri


@pytest.fixture
def db_name():
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def settings_overrides():
    """Tests override settings by redefining this fixture or updating the dict."""
    return {}


@pytest.fixture
def settings(mongodb_uri, db_name, tmp_path, settings_overrides):
    values = dict(app_env="test", host="127.0.0.1", port=0, mongodb_uri=mongodb_uri,
                  mongodb_db=db_name, data_dir=tmp_path, jwt_secret=JWT_SECRET,
                  bcrypt_rounds=4, log_level="WARNING", db_timeout=3)
    values.update(settings_overrides)
    return load_settings(**values)


@pytest.fixture
def server(io_loop, settings, mongodb_uri, db_name):
    srv = Server(settings, mongodb_uri, JWT_SECRET, is_ferretdb=None)
    io_loop.run_sync(srv.start)
    yield srv
    io_loop.run_sync(srv.stop)
    with MongoClient(mongodb_uri, serverSelectionTimeoutMS=3000) as sync_client:
        sync_client.drop_database(db_name)


@pytest.fixture
def outage_db_timeout():
    """DB_TIMEOUT of the `outage_server`; a test class redefines it to change it."""
    return 2.0


@pytest.fixture
def own_ferretdb(tmp_path):
    """A FerretDB of the test's own, which the test may stop and start again."""
    ferretdb = EmbeddedFerretDB(tmp_path / "db")
    ferretdb.start()
    yield ferretdb
    ferretdb.stop()


@pytest.fixture
def outage_server(io_loop, own_ferretdb, tmp_path, outage_db_timeout):
    """A server on `own_ferretdb`, for tests where the database goes away."""
    settings = load_settings(app_env="test", port=0, mongodb_uri=own_ferretdb.uri,
                             data_dir=tmp_path, jwt_secret=JWT_SECRET, bcrypt_rounds=4,
                             db_timeout=outage_db_timeout)
    srv = Server(settings, own_ferretdb.uri, JWT_SECRET, is_ferretdb=True)
    io_loop.run_sync(srv.start)
    yield srv
    io_loop.run_sync(srv.stop)


class Api:
    """A small HTTP client for the server under test: real sockets, JSON in and out."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.http = AsyncHTTPClient(force_instance=True)

    async def request(self, method: str, path: str, json_body=None, token: str | None = None,
                      headers: dict | None = None, body: bytes | str | None = None,
                      content_type: str | None = None):
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            body = json.dumps(json_body)
            all_headers.setdefault("Content-Type", "application/json")
        if content_type:
            all_headers["Content-Type"] = content_type
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""
        request = HTTPRequest(self.base_url + path, method=method, headers=all_headers,
                              body=body, allow_nonstandard_methods=True, request_timeout=30)
        response = await self.http.fetch(request, raise_error=False)
        response.json = json.loads(response.body) if response.body else None
        return response

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.request("POST", path, json_body=json_body, **kw)

    def put(self, path, json_body=None, **kw):
        return self.request("PUT", path, json_body=json_body, **kw)

    def patch(self, path, json_body=None, **kw):
        return self.request("PATCH", path, json_body=json_body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    async def register(self, username: str, password: str = "password123", email=None):
        response = await self.post("/api/v1/auth/register", {
            "username": username, "email": email or f"{username}@example.com",
            "password": password})
        assert response.code == 201, response.body
        return response.json

    async def login(self, username: str, password: str = "password123") -> dict:
        response = await self.post("/api/v1/auth/login",
                                   {"username": username, "password": password})
        assert response.code == 200, response.body
        return response.json

    async def user_token(self, username: str = "alice") -> str:
        await self.register(username)
        return (await self.login(username))["access_token"]

    async def admin_token(self, server, username: str = "admin") -> str:
        await self.register(username)
        await server.ctx.db["users"].update_one({"username_key": username.lower()},
                                                {"$set": {"role": "admin"}})
        return (await self.login(username))["access_token"]

    def close(self):
        self.http.close()


@pytest.fixture
def api(server):
    client = Api(f"http://127.0.0.1:{server.port}")
    yield client
    client.close()


def assert_error(response, status: int, code: str):
    assert response.code == status, (response.code, response.body)
    assert set(response.json) == {"error"}, response.json
    assert response.json["error"]["code"] == code, response.json
    assert isinstance(response.json["error"]["message"], str)
