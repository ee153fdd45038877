"""Classes of bad input that once reached a 500 or a wedged connection (issue 12, item 10): one
test per class, each on a real server and real sockets."""

import asyncio
import base64
import json
import resource
import socket
import time

import jwt
import pytest

from tests.conftest import JWT_SECRET, Api, assert_error
from tests.raw_clients import RawWebSocket, http_status, raw_http
from tests.realtime_helpers import WsClient, publish, wait_until
from tests.server_process import ServerProcess
from tornado_app.realtime.websocket import OP_TEXT, WebSocketConnection, server_frame
from tornado_app.runtime.settings import SettingsError, load_settings
from tornado_app.core.wire import MAX_INT, parse_decimal

POSTS = "/api/v1/posts"


async def _post(api, token) -> dict:
    response = await api.post(POSTS, {"title": "t", "content": "c"}, token=token)
    assert response.code == 201, response.body
    return response.json


# --- numbers from the wire: ASCII decimal digits only, one parser -----------------------------

def test_the_wire_parser_takes_ascii_digits_only():
    assert parse_decimal("0042") == 42
    assert parse_decimal(str(MAX_INT)) == MAX_INT
    for text in ("²", "¹", "١٢", "٣", " 5", "5 ", "+5", "-5", "5_0", "5.0", "0x5", "", "1e3"):
        assert parse_decimal(text) is None, text
    assert parse_decimal(str(MAX_INT + 1)) is None
    assert parse_decimal("0" * 100000 + "7") == 7


@pytest.mark.gen_test
async def test_superscript_digits_in_if_none_match_and_if_match_match_nothing(api):
    token = await api.user_token()
    post = await _post(api, token)
    path = f"{POSTS}/{post['id']}"
    response = await api.get(path, headers={"If-None-Match": '"¹"'})
    assert response.code == 200, response.body
    response = await api.patch(path, {"title": "u"}, token=token, headers={"If-Match": '"¹"'})
    assert_error(response, 412, "precondition_failed")


@pytest.mark.gen_test
async def test_a_superscript_last_event_id_is_422(server):
    # '²' as one byte, which the server reads back as '²' (header bytes are Latin-1).
    status, _, body = await http_status(server.port, (
        "GET /api/v1/stream?channels=posts HTTP/1.1\r\nHost: x\r\nLast-Event-ID: ²\r\n\r\n"
    ).encode("latin-1"))
    assert status == 422
    assert json.loads(body)["error"]["details"][0]["loc"] == ["header", "Last-Event-ID"]


@pytest.mark.gen_test
async def test_query_integers_are_plain_ascii_decimals(api):
    for value in ("5_0", "%2B5", "%C2%B2", "5.0", "0x5"):
        response = await api.get(f"/api/v1/poll?channels=posts&timeout=0&since={value}")
        assert_error(response, 422, "validation_error")
        response = await api.get(f"{POSTS}?limit={value}")
        assert_error(response, 422, "validation_error")


# --- integers of 2**63 and more never reach BSON or islice ------------------------------------

@pytest.mark.gen_test
async def test_a_since_of_2_63_is_refused_on_every_transport(server, api):
    await publish(server, "posts", 2)
    big = 2**63
    response = await api.get(f"/api/v1/poll?channels=posts&timeout=0&since={big}")
    assert_error(response, 422, "validation_error")
    status, _, _ = await http_status(
        server.port, f"GET /api/v1/stream?channels=posts&since={big} HTTP/1.1\r\nHost: x\r\n\r\n"
        .encode())
    assert status == 422
    status, _, _ = await http_status(server.port, (
        f"GET /api/v1/stream?channels=posts HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {big}\r\n\r\n"
    ).encode())
    assert status == 422
    ws = await WsClient.connect(server.port)
    await ws.send({"op": "subscribe", "channels": ["posts"], "since": big, "ref": 1})
    reply = await ws.recv()
    assert (reply["type"], reply["code"], reply["ref"]) == ("error", "validation_error", 1)
    ws.close()


@pytest.mark.gen_test
async def test_a_page_cursor_with_huge_numbers_is_422(api):
    for value in ({"t": 2**70}, {"t": -2**70}, 2**64):
        raw = json.dumps(["-created_at", value, "0" * 24]).encode()
        cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        response = await api.get(f"{POSTS}?cursor={cursor}")
        assert_error(response, 422, "validation_error")


# --- every WebSocket op validates its members; a failing op never wedges the connection ------

@pytest.mark.gen_test
async def test_a_wrongly_typed_unsubscribe_split_over_two_reads_leaves_the_socket_reading(server):
    ws = await RawWebSocket.connect(server.port)
    await ws.send_json({"op": "unsubscribe", "channels": [[1]], "ref": "u"}, split_at=3)
    reply = await ws.recv()
    assert (reply["type"], reply["code"], reply["ref"]) == ("error", "validation_error", "u")
    await ws.send_json({"op": "ping", "ref": "p"})
    pong, before = await ws.recv_until("pong")
    assert pong == {"type": "pong", "ref": "p"}, before
    ws.close()


class _Echo(WebSocketConnection):
    """A connection whose handler fails on one message and echoes the others."""

    def on_message(self, message):
        if message == "fail":
            raise RuntimeError("a bug in an op")
        self.write(server_frame(OP_TEXT, message.encode()))


@pytest.mark.gen_test
async def test_a_handler_that_raises_on_a_split_frame_leaves_the_connection_reading():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    accepted.setblocking(False)
    _Echo(accepted, 65536, 1 << 20).start(b"")
    reader, writer = await asyncio.open_connection(sock=client)
    ws = RawWebSocket(reader, writer)
    await ws.send_text("fail", split_at=3)
    await ws.send_text('{"still": "reading"}')
    assert await ws.recv() == {"still": "reading"}
    ws.close()


# --- channel names: fullmatch, never `$` (which takes a trailing newline) ---------------------

@pytest.mark.gen_test
async def test_a_channel_name_with_a_trailing_newline_is_unknown(server):
    ws = await WsClient.connect(server.port)
    for op in ("subscribe", "unsubscribe"):
        await ws.send({"op": op, "channels": ["posts\n"], "ref": 1})
        reply = await ws.recv()
        assert (reply["type"], reply["code"]) == ("error", "validation_error"), op
    ws.close()


def test_an_allowed_origin_with_a_trailing_newline_is_refused_at_start(tmp_path):
    with pytest.raises(SettingsError, match="ALLOWED_ORIGINS"):
        load_settings(app_env="test", data_dir=tmp_path, jwt_secret=JWT_SECRET,
                      allowed_origins=["https://app.example\n"])


# --- counters and gauges: whatever ends a stream takes it out of the gauge --------------------

@pytest.mark.gen_test
async def test_an_sse_stream_that_fails_in_its_replay_leaves_the_stream_gauge(server):
    await publish(server, "posts", 2)
    # The events leave the hub's memory (as past its window) and one is damaged in the log:
    # reading it back fails in the middle of the stream's replay.
    server.ctx.hub.forget_before(3)
    await server.ctx.db["events"].update_one({"_id": 1}, {"$unset": {"created_at": ""}})
    answer = await raw_http(server.port, b"GET /api/v1/stream?channels=posts&since=0 HTTP/1.1\r\n"
                                         b"Host: x\r\n\r\n", read_for=0.5)
    assert answer.startswith(b"HTTP/1.1 200 ")
    await wait_until(lambda: not server.ctx.connections.streams)
    _, _, metrics = await http_status(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b"\ntornado_app_sse_streams 0.0\n" in metrics


# --- /docs/static/ answers errors like every other route -------------------------------------

@pytest.mark.gen_test
async def test_docs_asset_errors_are_json_with_a_request_id(server):
    for path in ("/docs/static/%00", "/docs/static/no-such-file.js", "/docs/static/../x"):
        status, headers, body = await http_status(
            server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status in (403, 404), (path, status)
        assert headers["content-type"].startswith("application/json")
        assert headers["x-request-id"]
        assert json.loads(body)["error"]["code"] in ("forbidden", "not_found")


# --- a full disk is 507, and nothing else breaks ---------------------------------------------

@pytest.mark.gen_test(timeout=60)
async def test_a_write_the_disk_refuses_is_507_and_writes_work_again_once_it_has_room(
        outage_server, own_ferretdb):
    api = Api(f"http://127.0.0.1:{outage_server.port}")
    try:
        token = await api.user_token("writer")
        pid = own_ferretdb.process.pid
        # The database's files may not grow any more: every write that needs a new page fails
        # as on a full disk (the file system refuses it), while reads go on.
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            for _ in range(3):
                response = await api.post(POSTS, {"title": "t" * 200, "content": "c" * 20000},
                                          token=token)
                if response.code != 201:
                    break
            assert_error(response, 507, "insufficient_storage")
            assert response.headers["Retry-After"]
            assert (await api.get(POSTS)).code == 200
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE,
                             (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        assert (await api.post(POSTS, {"title": "t", "content": "c"}, token=token)).code == 201
    finally:
        api.close()


# --- JWT time claims are integers, strictly -------------------------------------------------

@pytest.mark.gen_test
async def test_a_token_with_a_numeric_string_exp_is_refused(server, api):
    user = await api.register("stringy")
    login = await api.login("stringy")
    claims = jwt.decode(login["access_token"], JWT_SECRET, algorithms=["HS256"],
                        options={"verify_aud": False})
    assert claims["sub"] == user["id"]
    for name, value in (("exp", str(int(time.time()) + 600)), ("iat", str(int(time.time()))),
                        ("exp", float(int(time.time()) + 600))):
        forged = jwt.encode({**claims, name: value}, JWT_SECRET, algorithm="HS256")
        response = await api.get("/api/v1/users/me", token=forged)
        assert_error(response, 401, "unauthorized")


# --- keep-alive: a 404 or 405 either keeps the connection for the next request or says so -----

@pytest.mark.gen_test
async def test_a_pipelined_request_after_a_404_is_answered(server):
    answer = await raw_http(server.port, b"GET /no/such/route HTTP/1.1\r\nHost: x\r\n\r\n"
                                         b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.count(b"HTTP/1.1 ") == 2, answer
    assert b"HTTP/1.1 404 " in answer and b"HTTP/1.1 200 " in answer


@pytest.mark.gen_test
async def test_a_connection_closed_after_an_early_answer_says_connection_close(server):
    # An unknown method is refused before its body is read: the connection cannot go on.
    answer = await raw_http(server.port, b"BREW /health HTTP/1.1\r\nHost: x\r\n"
                                         b"Content-Length: 4\r\n\r\ntea!"
                                         b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = answer.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 405 ")
    assert answer.count(b"HTTP/1.1 ") == 2 or b"\r\nConnection: close" in head, answer


# --- HEAD on every GET route ------------------------------------------------------------------

@pytest.mark.gen_test
async def test_head_answers_like_get_without_a_body(server, api):
    token = await api.user_token()
    post = await _post(api, token)
    for path in ("/health", POSTS, f"{POSTS}/{post['id']}", "/api/v1/products",
                 "/openapi.json", "/api/v1/poll?channels=posts&timeout=0",
                 "/api/v1/stream?channels=posts"):
        status, headers, _ = await http_status(
            server.port, f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status == 200, (path, status)
        assert headers["x-request-id"]
        if "stream" not in path:
            get = await api.get(path)
            assert int(headers["content-length"]) == len(get.body), path
    # Nothing follows the head: the next pipelined request is answered right after it.
    answer = await raw_http(server.port, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                         b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = answer.split(b"HTTP/1.1 200 OK")[1:3]
    assert first.endswith(b"\r\n\r\n") and second.endswith(b'{"status":"ok"}')


# --- the connection cap counts each connection once ------------------------------------------

CAP = 300


@pytest.fixture
def capped_process(mongodb_uri, db_name, tmp_path):
    """A server process of its own (so its turns of the loop are not the test's), with a cap."""
    process = ServerProcess(mongodb_uri, db_name, tmp_path, MAX_CONNECTIONS=str(CAP)).start()
    yield process
    process.kill()


@pytest.mark.gen_test(timeout=60)
async def test_connections_are_not_refused_below_the_cap_while_long_polls_park(capped_process):
    port = capped_process.port
    polls = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP - 2)]
    for _, writer in polls:
        writer.write(b"GET /api/v1/poll?channels=posts&timeout=30 HTTP/1.1\r\nHost: x\r\n\r\n")
    # One more connection at a time (CAP - 1 open, under the cap) while the polls park, and
    # for a while after.
    statuses = []
    deadline = asyncio.get_running_loop().time() + 1.0
    while asyncio.get_running_loop().time() < deadline:
        try:
            status, _, _ = await http_status(
                port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            status = "reset"  # refused: the 503 was cut short when the server closed
        statuses.append(status)
    _, _, metrics = await http_status(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert f"\ntornado_app_longpoll_pending {CAP - 2}.0\n".encode() in metrics
    assert set(statuses) == {200}, [s for s in statuses if s != 200]
    for _, writer in polls:
        writer.close()
