"""Property-based tests (hypothesis) over what clients send: every WebSocket op with random JSON
in every member, written in two parts, and random query parameters on the list, long-poll and
stream endpoints. Whatever comes in: never a 500, never a traceback in the server's log, and a
WebSocket always answers the next valid op (`ping` → `pong`).

Examples are bounded (a few hundred in all) so the module runs in well under 30 s.
"""

import base64
import json
import logging
import re
from urllib.parse import quote, quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.raw_clients import RawWebSocket, http_status
from tests.realtime_helpers import publish

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# --- values -----------------------------------------------------------------------------------

EDGE_INTS = st.sampled_from([0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -2**63 - 1,
                             10**30])
EDGE_TEXTS = st.sampled_from(["", "posts", "products", "post:" + "a" * 24, "user:" + "b" * 24,
                              "posts\n", " posts", "POSTS", "post:", "²", "١٢", "0", "-1",
                              "9" * 40, "\x00", "x" * 2000, "posts,products", "null"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | EDGE_INTS | st.floats() | st.text(max_size=16)
    | EDGE_TEXTS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
# Numbers as text, in every way `int()` or `str.isdigit()` would take and the wire must not.
DIGITISH = st.text(alphabet="0123456789²¹³٣۴ _+-.e", min_size=1, max_size=8)
# Members near what an op expects, so that the random part reaches past the first check.
CHANNELS = (st.lists(st.sampled_from(["posts", "products", "post:" + "a" * 24]), min_size=1,
                     max_size=3)
            | st.lists(EDGE_TEXTS | JSON_VALUES, max_size=4) | JSON_VALUES)
SINCE = st.integers(0, 5) | EDGE_INTS | JSON_VALUES
MEMBER = JSON_VALUES | CHANNELS

# A valid op with one member (or its name) replaced: the random value meets every check.
VALID = {"subscribe": {"channels": ["posts"], "since": 0}, "unsubscribe": {"channels": ["posts"]},
         "auth": {"token": "not-a-token"}, "ping": {}}
REPLACEMENTS = {
    "op": JSON_VALUES | EDGE_TEXTS,
    "channels": st.lists(st.lists(JSON_VALUES, max_size=2) | st.dictionaries(
        st.text(max_size=4), JSON_VALUES, max_size=2) | EDGE_TEXTS | JSON_VALUES,
        min_size=1, max_size=4) | JSON_VALUES,
    "since": EDGE_INTS | JSON_VALUES | DIGITISH,
    "token": JSON_VALUES | DIGITISH,
    "ref": MEMBER,
    "epoch": MEMBER,
    "extra": MEMBER,
}


@st.composite
def one_member_off(draw):
    name = draw(st.sampled_from(sorted(VALID)))
    op = {"op": name, **VALID[name]}
    member = draw(st.sampled_from(sorted(REPLACEMENTS)))
    op[member] = draw(REPLACEMENTS[member])
    return op


# And ops made of random members altogether.
OPS = one_member_off() | st.fixed_dictionaries(
    {"op": st.sampled_from(sorted(VALID)) | JSON_VALUES},
    optional={"channels": CHANNELS, "since": SINCE, "ref": MEMBER, "token": MEMBER | DIGITISH,
              "epoch": MEMBER, "extra": MEMBER})
# Messages that are not even a JSON object.
RAW_MESSAGES = (st.text(max_size=40) | JSON_VALUES.map(json.dumps)
                | st.sampled_from(["{", '{"op": "ping", "op": "ping"}', '{"op": NaN}', "[]",
                                   '{"op": "subscribe", "channels": ["posts"], "since": 1e400}']))

# --- the WebSocket ----------------------------------------------------------------------------


def _assert_quiet(caplog) -> None:
    """No traceback and nothing at ERROR in the server's log."""
    bad = [record for record in caplog.records
           if record.levelno >= logging.ERROR or record.exc_info]
    assert not bad, [record.getMessage() for record in bad]


async def _op_then_ping(port: int, text: str, split_at: int) -> None:
    ws = await RawWebSocket.connect(port)
    try:
        await ws.send_text(text, split_at=split_at)
        await ws.send_text(json.dumps({"op": "ping", "ref": "probe-7f3a"}))
        while True:
            message = await ws.recv()
            assert message is not None, "the server closed the connection"
            assert message.get("code") != "internal_error", (text, message)
            if message == {"type": "pong", "ref": "probe-7f3a"}:
                break
    finally:
        ws.close()


async def _with_events(server) -> None:
    """A few events in the log (and in the hub's memory), so that replays have work to do."""
    if server.ctx.hub.last_seq == 0:
        await publish(server, "posts", 3)
        await publish(server, "products", 2)


@settings(FUZZ, max_examples=300)
@given(op=OPS, split_at=st.integers(0, 80))
def test_every_websocket_op_with_random_members_leaves_the_socket_answering(
        server, io_loop, caplog, op, split_at):
    text = json.dumps(op)
    io_loop.run_sync(lambda: _with_events(server))
    io_loop.run_sync(lambda: _op_then_ping(server.port, text, split_at))
    _assert_quiet(caplog)


@FUZZ
@given(text=RAW_MESSAGES, split_at=st.integers(0, 40))
def test_any_text_message_leaves_the_socket_answering(server, io_loop, caplog, text, split_at):
    io_loop.run_sync(lambda: _op_then_ping(server.port, text, split_at))
    _assert_quiet(caplog)


# --- query parameters -------------------------------------------------------------------------

def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


QUERY_TEXT = (st.text(max_size=24) | EDGE_TEXTS | EDGE_INTS.map(str) | DIGITISH
              | st.integers(0, 10**25).map(str)
              | st.lists(JSON_VALUES, max_size=3).map(_cursor)
              | st.sampled_from(["-created_at", "price", "-price", "name", "true", "false"]))
# Percent-encoded as UTF-8, or raw bytes (not always UTF-8).
QUERY_VALUE = QUERY_TEXT.map(lambda text: quote(text, safe="")) | st.binary(max_size=12).map(
    lambda raw: quote_from_bytes(raw, safe=""))

PARAMS = {
    "/api/v1/posts": ["limit", "cursor", "author", "tag"],
    "/api/v1/products": ["limit", "cursor", "category", "q", "min_price_cents",
                         "max_price_cents", "in_stock", "sort"],
    "/api/v1/users": ["limit", "cursor"],
    "/api/v1/notifications": ["limit", "cursor"],
    "/api/v1/posts/{post}/comments": ["limit", "cursor"],
    "/api/v1/poll": ["channels", "since", "timeout", "epoch"],
    "/api/v1/stream": ["channels", "since", "epoch"],
}
# A long-poll with a valid timeout would wait for it: only 0, or something that is no number.
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")
POLL_TIMEOUT = st.just("0") | QUERY_TEXT.filter(lambda t: not _NUMBER.fullmatch(t.strip())).map(
    lambda text: quote(text, safe=""))
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=255,
                                    blacklist_characters="\x7f"), max_size=24)


# Valid values the random ones are mixed with, so that they reach past the first check.
VALID_PARAMS = {"/api/v1/poll": {"channels": "posts", "since": "0"},
                "/api/v1/stream": {"channels": "posts", "since": "0"},
                "/api/v1/products": {"sort": "price", "min_price_cents": "0"}}
# Numbers at and past the edges, more often than the other values.
FOCUS_VALUE = st.one_of(QUERY_VALUE, EDGE_INTS.map(str), EDGE_INTS.map(str),
                        DIGITISH.map(lambda text: quote(text, safe="")))


@st.composite
def list_requests(draw):
    path = draw(st.sampled_from(sorted(PARAMS)))
    values = dict(VALID_PARAMS.get(path, {}))
    names = draw(st.lists(st.sampled_from(PARAMS[path] + ["junk"]), unique=True, max_size=4))
    values.update({name: draw(QUERY_VALUE) for name in names})
    values[draw(st.sampled_from(PARAMS[path]))] = draw(FOCUS_VALUE)
    if path == "/api/v1/poll":
        values["timeout"] = draw(POLL_TIMEOUT)
    last_event_id = draw(st.none() | HEADER_TEXT | EDGE_INTS.map(str) | DIGITISH
                         | EDGE_TEXTS.filter(str.isprintable)) \
        if path == "/api/v1/stream" else None
    return path, values, last_event_id


_tokens: dict[int, dict] = {}


async def _setup(server, api) -> dict:
    """A user's and an admin's tokens and a post, made once per server."""
    if server.port not in _tokens:
        token = await api.user_token("fuzzer")
        post = await api.post("/api/v1/posts", {"title": "t", "content": "c"}, token=token)
        _tokens[server.port] = {"user": token, "admin": await api.admin_token(server, "fuzzadm"),
                                "post": post.json["id"]}
    return _tokens[server.port]


async def _get(server, api, path, values, last_event_id) -> None:
    setup = await _setup(server, api)
    await _with_events(server)
    token = setup["admin"] if path == "/api/v1/users" else setup["user"]
    target = path.replace("{post}", setup["post"]) + "?" + "&".join(
        f"{name}={value}" for name, value in values.items())
    head = f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
    if last_event_id is not None:
        head += f"Last-Event-ID: {last_event_id}\r\n"
    try:
        raw = (head + "\r\n").encode("latin-1")  # as a header's bytes are read
    except UnicodeEncodeError:
        raw = (head + "\r\n").encode("utf-8")
    status, headers, body = await http_status(server.port, raw)
    assert status < 500, (target, status, body)
    assert headers.get("x-request-id")
    if status >= 400:
        error = json.loads(body)["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str)


@settings(FUZZ, max_examples=400)
@given(request=list_requests())
def test_random_query_parameters_never_reach_a_500(server, api, io_loop, caplog, request):
    io_loop.run_sync(lambda: _get(server, api, *request))
    _assert_quiet(caplog)


@pytest.fixture
def settings_overrides():
    # Hundreds of connections a second from one client is what this test does, not abuse.
    return {"ws_max_messages_per_second": 1000.0}
