"""The contract's general rules: content types, body limits, JSON parsing, errors, outages."""

import asyncio
import socket
import time

import pytest
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream
from tornado.testing import bind_unused_port

from handlers.base import BaseHandler
from tests.conftest import Api, assert_error
from tornado_app.core.errors import ApiError

REGISTER = "/api/v1/auth/register"


@pytest.mark.gen_test
async def test_wrong_content_type_is_415(api):
    response = await api.post(REGISTER, body='{"username": "alice"}', content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_missing_content_type_is_415(api):
    response = await api.post(REGISTER, body='{"username": "alice"}')
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_json_content_type_with_charset_is_accepted(api):
    response = await api.post(REGISTER, body='{"username": "alice", "email": "a@example.com", '
                              '"password": "password123"}',
                              content_type="application/json; charset=utf-8")
    assert response.code == 201


@pytest.mark.gen_test
@pytest.mark.parametrize("body", [
    b"", b"{", b"[1, 2]", b'"text"', b"null", b"\xff\xfe{}", b'{"a": NaN}',
    b'{"a": 1, "a": 2}', b'{"a":' * 100 + b"1" + b"}" * 100,
])
async def test_body_that_is_not_a_json_object_is_400(api, body):
    response = await api.post(REGISTER, body=body, content_type="application/json")
    assert_error(response, 400, "invalid_json")


@pytest.mark.gen_test
async def test_body_over_the_limit_is_413(api):
    response = await api.post(REGISTER, body=b"x" * (1024 * 1024 + 1),
                              content_type="application/json")
    assert_error(response, 413, "payload_too_large")


@pytest.mark.gen_test
async def test_oversize_body_is_refused_before_it_is_sent(server):
    """A Content-Length over the limit is answered from the headers alone."""
    stream = IOStream(socket.socket())
    await stream.connect(("127.0.0.1", server.port))
    await stream.write(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\nContent-Length: 2000000000\r\n\r\n")
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413")
    stream.close()


@pytest.mark.gen_test
async def test_chunked_body_over_the_limit_is_413_as_it_streams(server):
    stream = IOStream(socket.socket())
    await stream.connect(("127.0.0.1", server.port))
    await stream.write(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
                       b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    for _ in range(20):  # 1.25 MiB, never finished
        await stream.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413")
    stream.close()


@pytest.mark.gen_test
async def test_error_bodies_never_show_internals(api):
    response = await api.get("/api/v1/posts/" + "f" * 24)
    assert_error(response, 404, "not_found")
    assert "Traceback" not in response.body.decode()


@pytest.mark.gen_test
async def test_query_validation_errors_list_the_field(api):
    response = await api.get("/api/v1/posts?limit=0")
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"][0]["loc"] == ["query", "limit"]


class TestDatabaseOutage:
    """The database goes away: 503 within seconds, readiness fails, and all recovers by itself."""

    @pytest.fixture
    def outage_db_timeout(self):
        return 2

    @pytest.mark.gen_test(timeout=60)
    async def test_outage_is_503_and_recovery_needs_no_restart(self, outage_server, own_ferretdb):
        api = Api(f"http://127.0.0.1:{outage_server.port}")
        await api.register("alice")

        own_ferretdb.stop()
        started = time.monotonic()
        response = await api.get("/api/v1/posts")
        assert_error(response, 503, "service_unavailable")
        assert response.headers["Retry-After"]
        assert time.monotonic() - started < 5
        ready = await api.get("/health/ready")
        assert ready.code == 503
        assert (await api.get("/health")).code == 200

        own_ferretdb.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            response = await api.get("/api/v1/posts")
            if response.code == 200:
                break
            await asyncio.sleep(0.5)
        assert response.code == 200
        assert (await api.get("/health/ready")).code == 200
        # Nothing acknowledged before the outage was lost.
        assert (await api.post("/api/v1/auth/login",
                               {"username": "alice", "password": "password123"})).code == 200
        api.close()


class _HookedHandler(BaseHandler):
    """A handler that sets a header of its own from Tornado's set_default_headers() hook."""

    route_name = "test.hooked"

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("X-Hooked", "yes")

    def get(self) -> None:
        self.send_json({"ok": True})

    def delete(self) -> None:
        raise ApiError(409, "conflict", "refused")


@pytest.fixture
def hooked_api(server):
    """BaseHandler subclasses served on a socket of their own, with the server's context."""
    sock, port = bind_unused_port()
    http = HTTPServer(web.Application([("/hooked", _HookedHandler)], ctx=server.ctx))
    http.add_sockets([sock])
    client = Api(f"http://127.0.0.1:{port}")
    yield client
    client.close()
    http.stop()


@pytest.mark.gen_test
async def test_set_default_headers_is_honoured_on_answers(hooked_api):
    response = await hooked_api.get("/hooked")
    assert response.code == 200
    assert response.headers["X-Hooked"] == "yes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"  # BaseHandler's own


@pytest.mark.gen_test
async def test_set_default_headers_is_honoured_on_errors(hooked_api):
    """send_error() clears the response, and the hook runs again."""
    response = await hooked_api.delete("/hooked")
    assert_error(response, 409, "conflict")
    assert response.headers["X-Hooked"] == "yes"
