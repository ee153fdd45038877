"""Hostile clients: forged JWTs, NoSQL operator injection, malformed bodies, slowloris, WebSocket
abuse, the connection cap, CORS and security headers. Real sockets against a real server."""

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.iostream import IOStream, StreamClosedError
from tornado.websocket import websocket_connect

from tests.conftest import JWT_SECRET, assert_error
from tests.realtime_helpers import WsClient

ME = "/api/v1/users/me"
POSTS = "/api/v1/posts"
PRODUCTS = "/api/v1/products"
LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"


# --- helpers -------------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict) -> str:
    return _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())


def _hs256(header: dict, claims: dict, key: bytes, digest=hashlib.sha256) -> str:
    """Signed by hand: PyJWT rightly refuses to HMAC with a PEM key, an attacker does not."""
    signing_input = _unsigned(header, claims)
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return signing_input + "." + _b64(signature)


_RSA_KEY = None


def _rsa_key():
    global _RSA_KEY
    if _RSA_KEY is None:
        _RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _RSA_KEY


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


async def _victim(api, username="alice") -> tuple[dict, dict, dict]:
    """A user, their tokens and the claims of their access token."""
    user = await api.register(username)
    tokens = await api.login(username)
    return user, tokens, _claims(tokens["access_token"])


def _assert_401(response) -> None:
    assert_error(response, 401, "unauthorized")
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


async def _post_count(api) -> int:
    return len((await api.get(POSTS + "?limit=100")).json["items"])


async def _open(port: int) -> IOStream:
    stream = IOStream(socket.socket())
    await stream.connect(("127.0.0.1", port))
    return stream


async def _exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Sends raw bytes, returns everything the server answers until it closes."""
    stream = await _open(port)
    try:
        await stream.write(data)
        return await asyncio.wait_for(stream.read_until_close(), timeout)
    except StreamClosedError:
        return b""
    finally:
        stream.close()


async def _each(cases, check) -> None:
    """Runs `check` on every case and reports every failing one at once (one server for all)."""
    failures = []
    for case in cases:
        try:
            await check(case)
        except AssertionError as exc:
            failures.append(f"{str(case)[:120]!r}: {str(exc)[:400]}")
    assert not failures, "\n".join(failures)


async def _closed_after(stream: IOStream, timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(stream.read_until_close(), timeout)
    except StreamClosedError:
        return b""


# --- JWTs ----------------------------------------------------------------------------------------

def _forgeries(claims: dict, token: str, other_user_id: str) -> dict:
    now = int(time.time())
    header_b64, payload_b64, signature = token.split(".")
    pem = _rsa_key().public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)

    def signed(mutated: dict) -> str:
        return jwt.encode(mutated, JWT_SECRET, algorithm="HS256")

    def without(name: str) -> str:
        return signed({k: v for k, v in claims.items() if k != name})

    tampered_payload = _b64(json.dumps({**claims, "sub": other_user_id}).encode())
    return {
        "alg none, no signature": _unsigned({"alg": "none", "typ": "JWT"}, claims) + ".",
        "alg None": _unsigned({"alg": "None", "typ": "JWT"}, claims) + ".",
        "alg NONE with the real signature": _unsigned({"alg": "NONE"}, claims) + "." + signature,
        "RS256 with our own RSA key": jwt.encode(claims, _rsa_key(), algorithm="RS256"),
        "HS256 keyed with an RSA public key PEM": _hs256({"alg": "HS256", "typ": "JWT"}, claims, pem),
        "RS256 header, HMAC with the PEM": _hs256({"alg": "RS256", "typ": "JWT"}, claims, pem),
        "HS512 with the real secret": _hs256({"alg": "HS512", "typ": "JWT"}, claims,
                                             JWT_SECRET.encode(), hashlib.sha512),
        "HS256 with another secret": jwt.encode(claims, "k" * 48, algorithm="HS256"),
        "kid path traversal, empty key": _hs256({"alg": "HS256", "kid": "../../../../dev/null"},
                                                claims, b""),
        "wrong iss": signed({**claims, "iss": "someone-else"}),
        "wrong aud": signed({**claims, "aud": "another-api"}),
        "aud list without ours": signed({**claims, "aud": ["another-api"]}),
        "expired": signed({**claims, "iat": now - 3600, "exp": now - 10}),
        "not yet valid (nbf)": signed({**claims, "nbf": now + 3600}),
        "exp as a string": signed({**claims, "exp": "tomorrow"}),
        "tampered payload, original signature": f"{header_b64}.{tampered_payload}.{signature}",
        "signature stripped": f"{header_b64}.{payload_b64}.",
        "signature truncated": f"{header_b64}.{payload_b64}.{signature[:-4]}",
        "missing sub": without("sub"),
        "missing type": without("type"),
        "missing jti": without("jti"),
        "missing iat": without("iat"),
        "missing exp": without("exp"),
        "missing iss": without("iss"),
        "missing aud": without("aud"),
        "missing fam": without("fam"),
        "type refresh on an access token's claims": signed({**claims, "type": "refresh"}),
        "type admin": signed({**claims, "type": "admin"}),
        "sub is an operator object": signed({**claims, "sub": {"$ne": None}}),
        "sub of another user in this family": signed({**claims, "sub": other_user_id}),
        "fam is an operator object": signed({**claims, "fam": {"$ne": None}}),
        "not a JWT at all": "garbage",
        "two segments": f"{header_b64}.{payload_b64}",
    }


@pytest.mark.gen_test
async def test_a_correctly_signed_copy_of_a_real_token_is_accepted(api):
    """The control for the forgeries below: re-signing unchanged claims with the real key works,
    so each refusal is down to the one thing that was changed."""
    user, tokens, claims = await _victim(api)
    resigned = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    response = await api.get(ME, token=resigned)
    assert response.code == 200 and response.json["id"] == user["id"]


@pytest.mark.gen_test(timeout=60)
async def test_forged_tokens_are_refused_everywhere(api, server):
    _, tokens, claims = await _victim(api)
    admin = await api.admin_token(server, "root")
    admin_id = (await api.get(ME, token=admin)).json["id"]
    forgeries = _forgeries(claims, tokens["access_token"], admin_id)
    assert len(forgeries) > 30

    async def check(name):
        forged = forgeries[name]
        before = await _post_count(api)
        _assert_401(await api.get(ME, token=forged))
        _assert_401(await api.post(POSTS, {"title": "forged", "content": "x"}, token=forged))
        _assert_401(await api.get("/api/v1/users", token=forged))
        assert await _post_count(api) == before
        # The WebSocket upgrade and its auth message refuse it the same way.
        with pytest.raises(HTTPClientError) as caught:
            await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{server.port}/api/v1/ws",
                                                headers={"Authorization": f"Bearer {forged}"}))
        assert caught.value.code == 401
        ws = await WsClient.connect(server.port)
        await ws.send({"op": "auth", "token": forged, "ref": 1})
        reply = await ws.recv()
        ws.close()
        assert reply["type"] == "error" and reply["code"] == "unauthorized", reply

    await _each(list(forgeries), check)
    # The real tokens still work: nothing above was refused for an unrelated reason.
    assert (await api.get(ME, token=tokens["access_token"])).code == 200


@pytest.mark.gen_test
async def test_malformed_authorization_headers_are_401(api):
    await _victim(api)
    headers = ["Bearer", "Bearer ", "Basic YWxpY2U6cGFzc3dvcmQxMjM=", "Token abc", "bearer",
               "Bearer " + "A" * 8000, "Bearer a.b.c.d.e", "Bearer \u00e9\u00e9", "Bearer null",
               "Bearer undefined", "Bearer {\"$ne\": null}"]

    async def check(header):
        _assert_401(await api.get(ME, headers={"Authorization": header.encode("utf-8").decode("latin-1")}))

    await _each(headers, check)


@pytest.mark.gen_test
async def test_refresh_token_is_not_an_access_token_and_the_reverse(api, server):
    _, tokens, _ = await _victim(api)
    _assert_401(await api.get(ME, token=tokens["refresh_token"]))
    _assert_401(await api.post(POSTS, {"title": "t", "content": "c"}, token=tokens["refresh_token"]))
    ws = await WsClient.connect(server.port)
    await ws.send({"op": "auth", "token": tokens["refresh_token"]})
    assert (await ws.recv())["code"] == "unauthorized"
    ws.close()
    _assert_401(await api.post(REFRESH, {"refresh_token": tokens["access_token"]}))
    # Neither attempt spent the real refresh token.
    assert (await api.post(REFRESH, {"refresh_token": tokens["refresh_token"]})).code == 200


@pytest.mark.gen_test
async def test_tokens_revoked_by_logout_are_refused_everywhere(api, server):
    _, tokens, _ = await _victim(api)
    access, refresh = tokens["access_token"], tokens["refresh_token"]
    assert (await api.post("/api/v1/auth/logout", token=access)).code == 204
    _assert_401(await api.get(ME, token=access))
    _assert_401(await api.post(POSTS, {"title": "t", "content": "c"}, token=access))
    _assert_401(await api.post("/api/v1/auth/logout", token=access))
    _assert_401(await api.post(REFRESH, {"refresh_token": refresh}))
    with pytest.raises(HTTPClientError) as caught:
        await websocket_connect(f"ws://127.0.0.1:{server.port}/api/v1/ws?access_token={access}")
    assert caught.value.code == 401
    # A re-signed copy of the revoked token is just as dead: revocation is by family, not bytes.
    resigned = jwt.encode({**_claims(access), "jti": "fresh-jti"}, JWT_SECRET, algorithm="HS256")
    _assert_401(await api.get(ME, token=resigned))


# --- NoSQL operator injection --------------------------------------------------------------------

@pytest.mark.gen_test
async def test_login_with_operator_objects_is_422_never_a_token(api):
    await api.register("alice")
    bodies = [
        {"username": {"$ne": None}, "password": {"$ne": None}},
        {"username": "alice", "password": {"$ne": None}},
        {"username": {"$gt": ""}, "password": "password123"},
        {"username": {"$regex": ".*"}, "password": "password123"},
        {"username": "alice", "password": "password123", "$where": "return true"},
        {"$where": "sleep(5000) || true"},
        {"username": ["alice"], "password": ["password123"]},
        {"username": "alice", "password": {"$in": ["password123", "x"]}},
    ]

    async def check(body):
        response = await api.post(LOGIN, body)
        assert_error(response, 422, "validation_error")
        assert "access_token" not in response.body.decode()

    await _each(bodies, check)


@pytest.mark.gen_test
async def test_login_names_that_look_like_patterns_match_nothing(api):
    await api.register("alice")

    async def check(username):
        response = await api.post(LOGIN, {"username": username, "password": "password123"})
        assert_error(response, 401, "invalid_credentials")

    await _each(["^a", ".*", "alice'||'1'=='1", "ALICE.*", "a.ice", "/.*/", "alic[e]"], check)


@pytest.mark.gen_test
async def test_form_operator_keys_on_the_token_endpoint_are_never_a_token(api):
    await api.register("alice")
    forms = ["username[$ne]=x&password[$ne]=x", "username=alice&password[$ne]=x",
             "grant_type=password&username=alice&password=wrong&password[$gt]="]

    async def check(form):
        response = await api.post("/api/v1/auth/token", body=form,
                                  content_type="application/x-www-form-urlencoded")
        assert response.code in (401, 422), response.body
        assert "access_token" not in response.body.decode()

    await _each(forms, check)


@pytest.mark.gen_test
async def test_operators_in_refresh_and_register_bodies_are_422(api):
    assert_error(await api.post(REFRESH, {"refresh_token": {"$ne": None}}), 422, "validation_error")
    response = await api.post("/api/v1/auth/register", {
        "username": {"$gt": ""}, "email": "a@example.com", "password": "password123"})
    assert_error(response, 422, "validation_error")
    response = await api.post("/api/v1/auth/register", {
        "username": "mallory", "email": "m@example.com", "password": "password123", "role": "admin"})
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_post_bodies_with_operators_or_server_fields_are_422(api):
    token = await api.user_token()
    bodies = [
        {"title": "t", "content": "c", "$where": "sleep(1000)"},
        {"title": {"$ne": None}, "content": "c"},
        {"title": "t", "content": "c", "tags": {"$each": ["a"]}},
        {"title": "t", "content": "c", "author_id": "0" * 24},
        {"title": "t", "content": "c", "version": 99},
        {"title": "t", "content": "c", "$set": {"author_id": "0" * 24}},
    ]

    async def check(body):
        assert_error(await api.post(POSTS, body, token=token), 422, "validation_error")

    await _each(bodies, check)
    assert await _post_count(api) == 0


@pytest.mark.gen_test
async def test_post_query_operators_never_apply(api):
    token = await api.user_token("alice")
    await api.post(POSTS, {"title": "a", "content": "c", "tags": ["x"]}, token=token)
    bob = await api.user_token("bob")
    await api.post(POSTS, {"title": "b", "content": "c", "tags": ["y"]}, token=bob)
    queries = ["author[$ne]=nobody", "author[$regex]=.*", "author=%7B%22%24ne%22%3Anull%7D",
               "author=.*", "tag[$ne]=zzz", "tag=.*", "tag[$where]=1", "$where=sleep(1000)",
               "limit[$gt]=0", "author=%00", "tag=%24ne", "author=alice&author[$ne]=alice"]

    async def check(query):
        response = await api.get(f"{POSTS}?{query}")
        assert response.code in (200, 422), (response.code, response.body)
        if response.code == 422:
            assert_error(response, 422, "validation_error")
            return
        titles = {p["title"] for p in response.json["items"]}
        if query.startswith("author=alice"):
            assert titles == {"a"}, titles
        elif "[" in query or query.startswith("$"):
            assert titles == {"a", "b"}, titles  # unknown parameters are ignored, not interpreted
        else:
            assert titles == set(), titles  # matched literally: nobody is called ".*"

    await _each(queries, check)


@pytest.mark.gen_test
async def test_catastrophic_patterns_in_q_are_fast_because_q_is_literal(api, server):
    admin = await api.admin_token(server)
    for index, name in enumerate(["a" * 40 + "!", "a" * 60, "(a+)+$ literally"]):
        response = await api.post(PRODUCTS, {"sku": f"RE-{index}", "name": name, "category": "c",
                                             "price_cents": 1}, token=admin)
        assert response.code == 201
    for pattern, expected in [("(a+)+$", {"(a+)+$ literally"}), ("(a|aa)*b", set()),
                              ("(.*a){20}", set()), ("^(([a-z])+.)+[A-Z]([a-z])+$", set()),
                              (".*", set()), ("a" * 30, {"a" * 40 + "!", "a" * 60})]:
        started = time.monotonic()
        response = await api.get(f"{PRODUCTS}?q={quote(pattern)}")
        elapsed = time.monotonic() - started
        assert response.code == 200, response.body
        assert elapsed < 1.0, (pattern, elapsed)
        assert {p["name"] for p in response.json["items"]} == expected, pattern


@pytest.mark.gen_test
async def test_operator_ids_in_paths_name_nothing(api, server):
    token = await api.user_token("alice")
    post = (await api.post(POSTS, {"title": "keep", "content": "c"}, token=token)).json
    admin = await api.admin_token(server)
    raw_ids = ["%7B%22%24ne%22%3Anull%7D", "%24where", "%24ne", "000000000000000000000000%00",
               "..%2F..%2Fusers", "a" * 24, "ObjectId('0')", "%2A"]

    async def check(raw_id):
        assert_error(await api.get(f"{POSTS}/{raw_id}"), 404, "not_found")
        assert_error(await api.delete(f"{POSTS}/{raw_id}", token=admin), 404, "not_found")
        assert_error(await api.patch(f"/api/v1/users/{raw_id}", {"role": "admin"}, token=admin),
                     404, "not_found")
        assert (await api.get(f"{POSTS}/{post['id']}")).code == 200
        assert (await api.get(ME, token=token)).json["role"] == "user"

    await _each(raw_ids, check)


# --- malformed and hostile bodies ----------------------------------------------------------------

def _nested(containers: int, scalar_leaf: bool = False) -> dict:
    """A body whose objects and arrays nest `containers` deep (the body object counts as one),
    with an empty array or a number innermost."""
    value = 1 if scalar_leaf else []
    for _ in range(containers - (2 if scalar_leaf else 3)):
        value = [value]
    return {"title": [value]}


@pytest.mark.gen_test
async def test_hostile_json_is_400_invalid_json_and_fast(api):
    token = await api.user_token()
    bodies = [
        b'{"title": "\xff\xfe", "content": "c"}',
        b'{"title": "\xc3\x28", "content": "c"}',
        b'{"title": "t", "content": "\xed\xa0\x80"}',  # a UTF-8 encoded surrogate
        b'{"title": "t", "title": "u", "content": "c"}',
        b'{"title": "t", "content": "c", "content": "c"}',
        b'{"title": NaN, "content": "c"}',
        b'{"title": Infinity, "content": "c"}',
        b'{"title": "t", "content": "c"} trailing',
        b"\x00\x00\x00{",
        b"\xef\xbb\xbf{}",  # a byte-order mark
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ]

    async def check(raw):
        started = time.monotonic()
        response = await api.post(POSTS, body=raw, content_type="application/json", token=token)
        assert_error(response, 400, "invalid_json")
        assert time.monotonic() - started < 2

    await _each(bodies, check)
    assert await _post_count(api) == 0


@pytest.mark.gen_test
async def test_nesting_33_deep_is_400_and_32_deep_is_parsed(api):
    token = await api.user_token()
    deep = await api.post(POSTS, _nested(33), token=token)
    assert_error(deep, 400, "invalid_json")
    assert "nested" in deep.json["error"]["message"]
    ok = await api.post(POSTS, _nested(32), token=token)
    assert_error(ok, 422, "validation_error")  # parsed, then refused by the model


@pytest.mark.gen_test
async def test_32_containers_with_a_scalar_leaf_is_within_the_depth_limit(api):
    token = await api.user_token()
    response = await api.post(POSTS, _nested(32, scalar_leaf=True), token=token)
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_arrays_of_1001_are_400_and_of_1000_are_parsed(api):
    token = await api.user_token()
    big = await api.post(POSTS, {"title": "t", "content": "c", "tags": ["a"] * 1001}, token=token)
    assert_error(big, 400, "invalid_json")
    nested = await api.post(POSTS, {"title": "t", "content": "c", "x": [[0] * 1001]}, token=token)
    assert_error(nested, 400, "invalid_json")
    ok = await api.post(POSTS, {"title": "t", "content": "c", "tags": ["a"] * 1000}, token=token)
    assert_error(ok, 422, "validation_error")


@pytest.mark.gen_test
async def test_numbers_out_of_range_or_of_the_wrong_kind_are_refused(api, server):
    admin = await api.admin_token(server)
    prices = [b"1e400", b"-1e400", b"1" + b"0" * 30, b"-1", b"1000000001", b"1.5", b"1e2", b'"100"',
              b"true", b"null", b"[1]", b"-0.0", b"1" * 5000]

    async def check(raw_price):
        raw = b'{"sku": "NUM-1", "name": "n", "category": "c", "price_cents": ' + raw_price + b"}"
        response = await api.post(PRODUCTS, body=raw, content_type="application/json", token=admin)
        # 4300+ digit integers are refused by the JSON parser itself (400); the rest by the model.
        expected = (400, "invalid_json") if len(raw_price) > 4300 else (422, "validation_error")
        assert_error(response, *expected)
        if expected[0] == 422:
            assert response.json["error"]["details"][0]["loc"] == ["body", "price_cents"]

    await _each(prices, check)
    assert (await api.get(PRODUCTS)).json["items"] == []


@pytest.mark.gen_test
async def test_stock_delta_of_10_to_the_30_is_422(api, server):
    admin = await api.admin_token(server)
    product = (await api.post(PRODUCTS, {"sku": "BIG-1", "name": "n", "category": "c",
                                         "price_cents": 1}, token=admin)).json
    response = await api.post(f"{PRODUCTS}/{product['id']}/stock", body=b'{"delta": 1' + b"0" * 30 + b"}",
                              content_type="application/json", token=admin)
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_2_mib_body_is_413(api):
    token = await api.user_token()
    body = json.dumps({"title": "t", "content": "x" * (2 * 1024 * 1024)})
    response = await api.post(POSTS, body=body, content_type="application/json", token=token)
    assert_error(response, 413, "payload_too_large")
    assert await _post_count(api) == 0


@pytest.mark.gen_test
async def test_2_mib_chunked_body_is_413_and_the_server_keeps_serving(server, api):
    stream = await _open(server.port)
    await stream.write(b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    head = b""
    try:
        for _ in range(32):  # 2 MiB, never finished
            await stream.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except StreamClosedError:
        pass
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413")
    stream.close()
    assert (await api.get("/health")).code == 200


@pytest.mark.gen_test
async def test_wrong_content_types_are_415(api):
    token = await api.user_token()
    types = ["text/plain", "application/xml", "multipart/form-data; boundary=x",
             "application/x-www-form-urlencoded", "application/jsonx", "application/json-patch+json",
             "application/javascript", "text/json", "application/json, text/plain"]

    async def check(content_type):
        response = await api.post(POSTS, body='{"title": "t", "content": "c"}',
                                  content_type=content_type, token=token)
        assert_error(response, 415, "unsupported_media_type")

    await _each(types, check)
    assert await _post_count(api) == 0


@pytest.mark.gen_test
async def test_json_on_the_form_token_endpoint_is_415(api):
    await api.register("alice")
    response = await api.post("/api/v1/auth/token", {"username": "alice", "password": "password123"})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_broken_http_framing_is_refused_and_the_server_keeps_serving(server, api):
    requests = [
        # Both framings at once: the classic request-smuggling set-up.
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ]

    async def check(request_bytes):
        answer = await _exchange(server.port, request_bytes)
        assert not answer.startswith(b"HTTP/1.1 5"), answer[:200]
        assert not answer.startswith(b"HTTP/1.1 2"), answer[:200]
        assert (await api.get("/health")).code == 200

    await _each(requests, check)


# --- slowloris -----------------------------------------------------------------------------------

class TestSlowClients:
    @pytest.fixture
    def settings_overrides(self):
        return {"http_idle_timeout": 1, "http_body_timeout": 1}

    @pytest.mark.gen_test(timeout=30)
    async def test_headers_sent_one_byte_at_a_time_are_cut_while_others_are_served(self, server, api):
        stream = await _open(server.port)
        closed = asyncio.ensure_future(_closed_after(stream, 15))
        request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        started = time.monotonic()
        served_meanwhile = []
        for index, byte in enumerate(request):
            if closed.done():
                break
            try:
                await stream.write(bytes([byte]))
            except StreamClosedError:
                break
            if index == 3:
                served_meanwhile.append((await api.get("/health")).code)
            await asyncio.sleep(0.1)
        answer = await closed
        elapsed = time.monotonic() - started
        assert served_meanwhile == [200]
        assert elapsed < 3, f"a slowloris held its connection for {elapsed:.1f} s"
        assert not answer.startswith(b"HTTP/1.1 200")
        assert server.ctx.inflight == 0

    @pytest.mark.gen_test(timeout=30)
    async def test_a_stalled_body_is_cut_after_the_body_timeout(self, server, api):
        token = await api.user_token()
        stream = await _open(server.port)
        await stream.write(b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 100\r\n\r\n"
                           b'{"title": ')
        started = time.monotonic()
        closed = asyncio.ensure_future(_closed_after(stream, 15))
        await asyncio.sleep(0.3)
        assert (await api.get("/health")).code == 200
        answer = await closed
        elapsed = time.monotonic() - started
        assert elapsed < 3, f"a stalled body held its connection for {elapsed:.1f} s"
        assert not answer.startswith(b"HTTP/1.1 2")
        await asyncio.sleep(0.1)
        assert server.ctx.inflight == 0
        assert await _post_count(api) == 0

    @pytest.mark.gen_test(timeout=30)
    async def test_a_body_trickled_one_byte_at_a_time_is_cut(self, server, api):
        stream = await _open(server.port)
        await stream.write(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n")
        started = time.monotonic()
        closed = asyncio.ensure_future(_closed_after(stream, 15))
        while not closed.done() and time.monotonic() - started < 10:
            try:
                await stream.write(b" ")
            except StreamClosedError:
                break
            await asyncio.sleep(0.1)
        await closed
        assert time.monotonic() - started < 3

    @pytest.mark.gen_test(timeout=30)
    async def test_an_idle_keep_alive_connection_is_closed(self, server):
        stream = await _open(server.port)
        await stream.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        await _closed_after(stream, 10)
        assert time.monotonic() - started < 3


# --- the connection cap --------------------------------------------------------------------------

async def _keep_alive_get(stream: IOStream) -> bytes:
    await stream.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), 5)
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")][0])
    await asyncio.wait_for(stream.read_bytes(length), 5)
    return head


class TestConnectionCap:
    @pytest.fixture
    def settings_overrides(self):
        return {"max_connections": 5}

    @pytest.mark.gen_test(timeout=30)
    async def test_the_sixth_connection_gets_503_and_is_served_once_one_closes(self, server):
        held = []
        for _ in range(5):
            stream = await _open(server.port)
            assert (await _keep_alive_get(stream)).startswith(b"HTTP/1.1 200")
            held.append(stream)
        refused = await _exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503"), refused[:200]
        headers = {line.split(b":", 1)[0].strip().lower(): line.split(b":", 1)[1].strip()
                   for line in head.split(b"\r\n")[1:]}
        assert int(headers[b"retry-after"]) > 0
        assert headers[b"content-type"].startswith(b"application/json")
        assert json.loads(body)["error"]["code"] == "service_unavailable"
        assert set(json.loads(body)) == {"error"}
        # The held ones are still served.
        assert (await _keep_alive_get(held[0])).startswith(b"HTTP/1.1 200")

        for stream in held[:2]:
            stream.close()
        deadline = time.monotonic() + 5
        while True:
            answer = await _exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        for stream in held[2:]:
            stream.close()

    @pytest.mark.gen_test(timeout=30)
    async def test_open_websockets_count_toward_the_cap(self, server):
        sockets = [await WsClient.connect(server.port) for _ in range(5)]
        refused = await _exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503"), refused[:200]
        with pytest.raises(Exception):
            extra = await WsClient.connect(server.port)
            extra.close()
        sockets[0].close()
        deadline = time.monotonic() + 5
        while True:
            answer = await _exchange(server.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        for ws in sockets[1:]:
            ws.close()


# --- WebSocket abuse -----------------------------------------------------------------------------

async def _drain(ws: WsClient, timeout: float = 5.0) -> list:
    """Every frame until the server closes the connection."""
    frames = []
    while True:
        frame = await ws.recv(timeout)
        if frame is None:
            return frames
        frames.append(frame)


class TestWebSocketFlood:
    """WS_MAX_MESSAGES_PER_SECOND=5: a bucket of 10, and 50 drops in a row close the connection.
    A low rate keeps "in a row" independent of how fast this machine parses frames."""

    RATE = 5

    @pytest.fixture
    def settings_overrides(self):
        return {"ws_max_messages_per_second": self.RATE}

    @pytest.mark.gen_test(timeout=30)
    async def test_a_flood_gets_rate_limited_then_closed_with_1008(self, server, api):
        ws = await WsClient.connect(server.port)
        bystander = await WsClient.connect(server.port)
        # Written without waiting: the frames leave together, as a flood does.
        for index in range(1000):
            ws.conn.write_message(json.dumps({"op": "ping", "ref": index}))
        frames = await _drain(ws, timeout=10)
        assert ws.conn.close_code == 1008, (ws.conn.close_code, frames[-3:])
        pongs = [f for f in frames if f["type"] == "pong"]
        limited = [f for f in frames if f.get("code") == "rate_limited"]
        assert 2 * self.RATE <= len(pongs) < 4 * self.RATE, len(pongs)  # the burst, little more
        assert limited and limited[0]["type"] == "error"
        assert frames.index(limited[0]) >= 2 * self.RATE
        # One flooding client costs the others nothing.
        await bystander.send({"op": "ping", "ref": "b"})
        assert (await bystander.recv())["type"] == "pong"
        assert (await api.get("/health")).code == 200
        bystander.close()

    @pytest.mark.gen_test(timeout=30)
    async def test_a_short_burst_is_limited_but_the_connection_recovers(self, server):
        ws = await WsClient.connect(server.port)
        for index in range(3 * self.RATE):
            ws.conn.write_message(json.dumps({"op": "ping", "ref": index}))
        frames = []
        while len([f for f in frames if f["type"] == "pong"]) < 2 * self.RATE or not any(
                f.get("code") == "rate_limited" for f in frames):
            frames.append(await ws.recv())
        await asyncio.sleep(2.1)  # the bucket refills
        for index in range(self.RATE):
            await ws.send({"op": "ping", "ref": f"after-{index}"})
            reply = await ws.recv_until("pong")
            assert reply["ref"] == f"after-{index}"
        ws.close()

    @pytest.mark.gen_test(timeout=30)
    async def test_a_sustained_flood_at_20_times_the_limit_is_closed(self, server):
        ws = await WsClient.connect(server.port)
        started = time.monotonic()
        closed = asyncio.ensure_future(_drain(ws, timeout=10))
        index = 0
        while not closed.done() and time.monotonic() - started < 4:
            for _ in range(2 * self.RATE):  # 20 times the limit, in batches every 100 ms
                ws.conn.write_message(json.dumps({"op": "ping", "ref": index}))
                index += 1
            await asyncio.sleep(0.1)
        assert closed.done(), f"still open after {index} messages in {time.monotonic() - started:.1f} s"
        await closed
        assert ws.conn.close_code == 1008


@pytest.mark.gen_test
async def test_oversized_frames_close_with_1009_at_the_default_limit(server):
    ws = await WsClient.connect(server.port)
    padding = 65536 - len(json.dumps({"op": "ping", "ref": ""}))
    await ws.send({"op": "ping", "ref": "x" * padding})  # exactly 64 KiB: allowed
    assert (await ws.recv())["type"] == "pong"
    await ws.conn.write_message("x" * (65536 + 1))
    assert await ws.recv() is None
    assert ws.conn.close_code == 1009


@pytest.mark.gen_test
async def test_binary_and_garbage_frames_get_error_frames_and_the_connection_stays(server):
    ws = await WsClient.connect(server.port)
    garbage = [b"\x00\xff\xfe" * 100, "\u0000", "{", "null", '"op"', '{"op": "subscribe", "op": "ping"}',
               '{"op": ["ping"]}', "[" * 40 + "]" * 40, json.dumps({"op": "ping", "a": [0] * 1001}),
               '{"op": "subscribe", "channels": ["posts"], "since": 1e400}',
               '{"op": "auth", "token": {"$ne": null}}', '{"op": "unsubscribe", "channels": {"$ne": 1}}']
    for message in garbage:
        await ws.conn.write_message(message, binary=isinstance(message, bytes))
        reply = await ws.recv()
        assert reply["type"] == "error", (message, reply)
        assert reply["code"] in ("invalid_json", "validation_error"), (message, reply)
    await ws.send({"op": "ping", "ref": "alive"})
    assert await ws.recv() == {"type": "pong", "ref": "alive"}
    ws.close()


@pytest.mark.gen_test
async def test_subscribing_to_hundreds_of_channels_is_bounded(server):
    ws = await WsClient.connect(server.port)
    ids = [f"{index:024x}" for index in range(1, 1002)]
    await ws.send({"op": "subscribe", "channels": [f"post:{i}" for i in ids[:500]], "ref": "500"})
    error = await ws.recv()
    assert error["code"] == "validation_error" and error["ref"] == "500"
    await ws.send({"op": "subscribe", "channels": [f"post:{i}" for i in ids], "ref": "1001"})
    assert (await ws.recv())["code"] == "invalid_json"  # over the array bound
    for start in range(0, 100, 25):
        await ws.subscribe([f"post:{i}" for i in ids[start:start + 25]], ref=start)
    await ws.send({"op": "subscribe", "channels": [f"post:{ids[100]}"], "ref": "101st"})
    error = await ws.recv()
    assert error["code"] == "validation_error" and error["ref"] == "101st"
    # Subscribing again to ones it has is no extra channel.
    await ws.subscribe([f"post:{ids[0]}"], ref="again")
    await ws.send({"op": "ping", "ref": "alive"})
    assert (await ws.recv_until("pong"))["ref"] == "alive"
    ws.close()


FOREIGN_ORIGINS = ["https://evil.example.com", "https://app.example.com.evil.com", "null",
                   "http://app.example.com", "https://app.example.com:444",
                   "https://evil.com/https://app.example.com", "https://app.example.com\tx"]


class TestForeignOrigin:
    @pytest.fixture
    def settings_overrides(self):
        return {"allowed_origins": ["https://app.example.com"]}

    @pytest.mark.gen_test
    async def test_websocket_upgrade_from_a_foreign_origin_is_403(self, server):
        async def check(origin):
            with pytest.raises(HTTPClientError) as caught:
                await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{server.port}/api/v1/ws",
                                                    headers={"Origin": origin}))
            assert caught.value.code == 403
            assert json.loads(caught.value.response.body)["error"]["code"] == "forbidden"
            assert not server.ctx.connections.sockets

        await _each(FOREIGN_ORIGINS, check)


@pytest.mark.gen_test
async def test_a_plain_get_on_the_websocket_endpoint_is_426(api):
    response = await api.get("/api/v1/ws")
    assert_error(response, 426, "upgrade_required")


# --- CORS ----------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"


class TestCors:
    @pytest.fixture
    def settings_overrides(self):
        return {"allowed_origins": [ALLOWED, "https://admin.example.com"]}

    @pytest.mark.gen_test
    async def test_allowed_origin_gets_allow_origin_on_answers_and_errors(self, api):
        for response in (await api.get(POSTS, headers={"Origin": ALLOWED}),
                         await api.get(POSTS + "/nope", headers={"Origin": ALLOWED}),
                         await api.post(POSTS, {"title": "t"}, headers={"Origin": ALLOWED})):
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
            assert "Origin" in response.headers.get_list("Vary")
            exposed = response.headers["Access-Control-Expose-Headers"]
            assert "X-Request-ID" in exposed and "ETag" in exposed
            assert "Access-Control-Allow-Credentials" not in response.headers

    @pytest.mark.gen_test
    async def test_allowed_origin_may_read_the_stream_position(self, api):
        response = await api.get(POSTS, headers={"Origin": ALLOWED})
        exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"Event-Seq", "Event-Epoch"} <= exposed
        assert "Event-Seq" in response.headers

    @pytest.mark.gen_test
    async def test_preflight_from_an_allowed_origin_is_204_with_methods_and_headers(self, api):
        response = await api.request("OPTIONS", POSTS, headers={
            "Origin": ALLOWED, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert response.code == 204
        assert response.headers["Access-Control-Allow-Origin"] == ALLOWED
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert methods == {"GET", "POST"}
        headers = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "if-match"} <= headers
        assert int(response.headers["Access-Control-Max-Age"]) > 0
        item = await api.request("OPTIONS", POSTS + "/" + "a" * 24, headers={
            "Origin": "https://admin.example.com", "Access-Control-Request-Method": "PATCH"})
        assert item.code == 204
        assert {m.strip() for m in item.headers["Access-Control-Allow-Methods"].split(",")} == {
            "GET", "PUT", "PATCH", "DELETE"}

    @pytest.mark.gen_test
    async def test_foreign_origin_gets_no_cors_headers_and_preflight_403(self, api):
        async def check(origin):
            response = await api.get(POSTS, headers={"Origin": origin})
            assert response.code == 200
            assert "Access-Control-Allow-Origin" not in response.headers
            preflight = await api.request("OPTIONS", POSTS, headers={
                "Origin": origin, "Access-Control-Request-Method": "DELETE"})
            assert_error(preflight, 403, "forbidden")
            assert "Access-Control-Allow-Origin" not in preflight.headers
            assert "Access-Control-Allow-Methods" not in preflight.headers

        await _each(FOREIGN_ORIGINS, check)


@pytest.mark.gen_test
async def test_without_allowed_origins_no_origin_gets_cors_headers(api):
    response = await api.get(POSTS, headers={"Origin": ALLOWED})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = await api.request("OPTIONS", POSTS, headers={"Origin": ALLOWED,
                                                             "Access-Control-Request-Method": "GET"})
    assert preflight.code == 403


# --- security headers ----------------------------------------------------------------------------

def _assert_security_headers(response) -> None:
    headers = response.headers
    assert headers["X-Content-Type-Options"] == "nosniff", response.request.url
    assert headers["X-Frame-Options"] == "DENY", response.request.url
    assert headers["Referrer-Policy"] == "no-referrer", response.request.url
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, csp
    assert headers["X-Request-ID"]


@pytest.mark.gen_test
async def test_security_headers_on_every_kind_of_json_answer(api):
    token = await api.user_token()
    responses = [
        await api.get("/health"),
        await api.get("/health/ready"),
        await api.get("/openapi.json"),
        await api.get(POSTS),
        await api.post(POSTS, {"title": "t", "content": "c"}, token=token),
        await api.get("/nope"),
        await api.get(ME),
        await api.post(POSTS, {"title": ""}, token=token),
        await api.post(POSTS, body="x", content_type="text/plain", token=token),
        await api.post(POSTS, body=b"{", content_type="application/json", token=token),
        await api.request("TRACE", "/health"),
        await api.post(POSTS, body=b"x" * (1024 * 1024 + 1), content_type="application/json", token=token),
    ]
    assert [r.code for r in responses] == [200, 200, 200, 200, 201, 404, 401, 422, 415, 400, 405, 413]
    for response in responses:
        assert response.headers["Content-Type"].startswith("application/json")
        _assert_security_headers(response)
    assert responses[0].headers["Cache-Control"] == "no-store"


@pytest.mark.gen_test
async def test_405_lists_the_allowed_methods(api):
    response = await api.request("TRACE", POSTS)
    assert_error(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"GET", "POST"}
