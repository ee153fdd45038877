import asyncio
import json
import time

import jwt
import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from tests.conftest import JWT_SECRET, assert_error

REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"


def _claims(token):
    return jwt.decode(token, options={"verify_signature": False})


@pytest.mark.gen_test
async def test_register_returns_the_user_without_any_hash(api):
    response = await api.post(REGISTER, {"username": "Alice", "email": "Alice@Example.COM",
                                         "password": "password123"})
    assert response.code == 201
    user = response.json
    assert set(user) == {"id", "username", "email", "role", "created_at"}
    assert user["username"] == "Alice"
    assert user["email"] == "alice@example.com"
    assert user["role"] == "user"
    assert user["created_at"].endswith("Z")


@pytest.mark.gen_test
async def test_username_is_unique_case_insensitively(api):
    await api.register("alice")
    response = await api.post(REGISTER, {"username": "ALICE", "email": "other@example.com",
                                         "password": "password123"})
    assert_error(response, 409, "conflict")


@pytest.mark.gen_test
async def test_email_is_unique_case_insensitively(api):
    await api.register("alice", email="alice@example.com")
    response = await api.post(REGISTER, {"username": "bob", "email": "ALICE@example.com",
                                         "password": "password123"})
    assert_error(response, 409, "conflict")


@pytest.mark.gen_test
@pytest.mark.parametrize("field,value", [
    ("username", "ab"), ("username", "a" * 33), ("username", "bad name"), ("username", "x$y"),
    ("email", "not-an-email"), ("email", "a@"), ("password", "short"), ("password", 12345678),
    ("username", {"$ne": None}),
])
async def test_register_validates_each_field(api, field, value):
    body = {"username": "alice", "email": "alice@example.com", "password": "password123"}
    body[field] = value
    response = await api.post(REGISTER, body)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"][0]["loc"][:2] == ["body", field]


@pytest.mark.gen_test
async def test_password_over_72_bytes_is_a_clear_422(api):
    # 37 two-byte characters: 37 characters, 74 bytes.
    response = await api.post(REGISTER, {"username": "alice", "email": "a@example.com",
                                         "password": "é" * 37})
    assert_error(response, 422, "validation_error")
    assert "72" in response.json["error"]["details"][0]["msg"]


@pytest.mark.gen_test
async def test_register_refuses_unknown_fields(api):
    response = await api.post(REGISTER, {"username": "alice", "email": "a@example.com",
                                         "password": "password123", "role": "admin"})
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"] == [{"loc": ["body", "role"], "msg": "unknown field"}]


@pytest.mark.gen_test
async def test_login_with_username_or_email_gives_tokens(api):
    await api.register("alice")
    for login in ("alice", "ALICE", "alice@example.com"):
        tokens = await api.login(login)
        assert set(tokens) == {"access_token", "refresh_token", "token_type", "expires_in"}
        assert tokens["token_type"] == "bearer"
        assert tokens["expires_in"] == 900


@pytest.mark.gen_test
async def test_tokens_carry_every_required_claim(api):
    await api.register("alice")
    tokens = await api.login("alice")
    claims = _claims(tokens["access_token"])
    assert {"sub", "type", "jti", "iat", "exp", "iss", "aud"} <= set(claims)
    assert claims["type"] == "access"
    assert _claims(tokens["refresh_token"])["type"] == "refresh"
    assert jwt.get_unverified_header(tokens["access_token"])["alg"] == "HS256"


@pytest.mark.gen_test
async def test_wrong_password_and_unknown_user_get_the_same_answer(api):
    await api.register("alice")
    wrong = await api.post(LOGIN, {"username": "alice", "password": "wrong-password"})
    unknown = await api.post(LOGIN, {"username": "nobody", "password": "wrong-password"})
    assert_error(wrong, 401, "invalid_credentials")
    assert_error(unknown, 401, "invalid_credentials")
    assert wrong.json == unknown.json


@pytest.mark.gen_test
async def test_login_operator_object_is_refused_not_a_bypass(api):
    await api.register("alice")
    response = await api.post(LOGIN, {"username": "alice", "password": {"$ne": None}})
    assert_error(response, 422, "validation_error")
    response = await api.post(LOGIN, {"username": {"$gt": ""}, "password": "password123"})
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_oauth2_token_endpoint_takes_a_form(api):
    await api.register("alice")
    response = await api.post("/api/v1/auth/token",
                              body="grant_type=password&username=alice&password=password123",
                              content_type="application/x-www-form-urlencoded")
    assert response.code == 200, response.body
    assert response.json["token_type"] == "bearer"


@pytest.mark.gen_test
async def test_oauth2_token_endpoint_refuses_json(api):
    response = await api.post("/api/v1/auth/token", {"username": "a", "password": "b"})
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_oauth2_token_endpoint_refuses_other_grants(api):
    response = await api.post("/api/v1/auth/token",
                              body="grant_type=client_credentials&username=a&password=b",
                              content_type="application/x-www-form-urlencoded")
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_refresh_rotates_and_the_old_token_stops_working(api):
    await api.register("alice")
    first = await api.login("alice")
    response = await api.post("/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert response.code == 200
    second = response.json
    assert second["refresh_token"] != first["refresh_token"]
    me = await api.get("/api/v1/users/me", token=second["access_token"])
    assert me.code == 200


@pytest.mark.gen_test
async def test_reused_refresh_token_revokes_the_whole_family(api):
    await api.register("alice")
    first = await api.login("alice")
    second = (await api.post("/api/v1/auth/refresh",
                             {"refresh_token": first["refresh_token"]})).json
    reuse = await api.post("/api/v1/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert_error(reuse, 401, "unauthorized")
    # Everything issued from that login is now dead: the rotated refresh token and access tokens.
    again = await api.post("/api/v1/auth/refresh", {"refresh_token": second["refresh_token"]})
    assert_error(again, 401, "unauthorized")
    me = await api.get("/api/v1/users/me", token=second["access_token"])
    assert_error(me, 401, "unauthorized")


@pytest.mark.gen_test
async def test_other_logins_survive_a_revoked_family(api):
    await api.register("alice")
    stolen = await api.login("alice")
    other = await api.login("alice")
    await api.post("/api/v1/auth/refresh", {"refresh_token": stolen["refresh_token"]})
    await api.post("/api/v1/auth/refresh", {"refresh_token": stolen["refresh_token"]})
    me = await api.get("/api/v1/users/me", token=other["access_token"])
    assert me.code == 200


@pytest.mark.gen_test
async def test_concurrent_refreshes_with_one_token_have_one_winner(api):
    await api.register("alice")
    tokens = await api.login("alice")
    responses = await asyncio.gather(*[
        api.post("/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
        for _ in range(5)])
    assert sorted(r.code for r in responses).count(200) <= 1


@pytest.mark.gen_test
async def test_access_token_is_refused_where_a_refresh_token_is_expected(api):
    await api.register("alice")
    tokens = await api.login("alice")
    response = await api.post("/api/v1/auth/refresh", {"refresh_token": tokens["access_token"]})
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
async def test_refresh_token_is_refused_as_an_access_token(api):
    await api.register("alice")
    tokens = await api.login("alice")
    response = await api.get("/api/v1/users/me", token=tokens["refresh_token"])
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
async def test_logout_revokes_the_access_token_and_its_refresh_family(api):
    await api.register("alice")
    tokens = await api.login("alice")
    response = await api.post("/api/v1/auth/logout", token=tokens["access_token"])
    assert response.code == 204
    me = await api.get("/api/v1/users/me", token=tokens["access_token"])
    assert_error(me, 401, "unauthorized")
    refresh = await api.post("/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
    assert_error(refresh, 401, "unauthorized")


@pytest.mark.gen_test
async def test_logout_needs_a_token(api):
    response = await api.post("/api/v1/auth/logout")
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
@pytest.mark.parametrize("mutate", [
    lambda c: {**c, "iss": "someone-else"},
    lambda c: {**c, "aud": "another-api"},
    lambda c: {**c, "exp": int(time.time()) - 10},
    lambda c: {k: v for k, v in c.items() if k != "jti"},
    lambda c: {k: v for k, v in c.items() if k != "exp"},
])
async def test_tokens_with_a_bad_claim_are_refused(api, mutate):
    await api.register("alice")
    claims = _claims((await api.login("alice"))["access_token"])
    forged = jwt.encode(mutate(claims), JWT_SECRET, algorithm="HS256")
    response = await api.get("/api/v1/users/me", token=forged)
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
async def test_unsigned_and_tampered_tokens_are_refused(api):
    await api.register("alice")
    token = (await api.login("alice"))["access_token"]
    claims = _claims(token)
    unsigned = jwt.encode(claims, None, algorithm="none")
    other_key = jwt.encode(claims, "another-secret-another-secret-another", algorithm="HS256")
    header, payload, signature = token.split(".")
    tampered = ".".join([header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"),
                         signature])
    for bad in (unsigned, other_key, tampered, "garbage", ""):
        response = await api.get("/api/v1/users/me", headers={"Authorization": f"Bearer {bad}"})
        assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
async def test_login_throttle_after_max_failures_even_with_the_right_password(api):
    await api.register("alice")
    for _ in range(5):
        response = await api.post(LOGIN, {"username": "alice", "password": "wrong-password"})
        assert_error(response, 401, "invalid_credentials")
    response = await api.post(LOGIN, {"username": "alice", "password": "password123"})
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.gen_test
async def test_login_throttle_counts_username_and_email_together(api):
    await api.register("alice")
    for login in ("alice", "alice@example.com", "ALICE", "alice", "alice@example.com"):
        await api.post(LOGIN, {"username": login, "password": "wrong-password"})
    response = await api.post(LOGIN, {"username": "alice", "password": "password123"})
    assert_error(response, 429, "rate_limited")


@pytest.mark.gen_test
async def test_login_throttle_is_per_username(api):
    await api.register("alice")
    await api.register("bob")
    for _ in range(5):
        await api.post(LOGIN, {"username": "alice", "password": "wrong-password"})
    assert (await api.post(LOGIN, {"username": "bob", "password": "password123"})).code == 200


async def _login_burst(api, attempts):
    """Every (username, password) login at once, on connections of their own."""
    http = AsyncHTTPClient(force_instance=True, max_clients=len(attempts))
    try:
        requests = [HTTPRequest(api.base_url + LOGIN, method="POST", body=json.dumps(
            {"username": name, "password": password}), headers={
            "Content-Type": "application/json"}, request_timeout=30)
            for name, password in attempts]
        return await asyncio.gather(*(http.fetch(r, raise_error=False) for r in requests))
    finally:
        http.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("username", ["alice", "nobody-by-that-name"])
async def test_concurrent_wrong_guesses_are_throttled_like_sequential_ones(api, username):
    await api.register("alice")
    responses = await _login_burst(api, [(username, f"wrong-{n}") for n in range(60)])
    codes = [response.code for response in responses]
    assert codes.count(401) <= 5, codes
    assert codes.count(429) == 60 - codes.count(401), codes
    response = await api.post(LOGIN, {"username": username, "password": "password123"})
    assert_error(response, 429, "rate_limited")


@pytest.mark.gen_test(timeout=60)
async def test_right_password_in_a_burst_of_guesses_does_not_widen_the_limit(api):
    await api.register("alice")
    attempts = [("alice", f"wrong-{n}") for n in range(20)]
    attempts.insert(10, ("alice", "password123"))
    responses = await _login_burst(api, attempts)
    codes = [response.code for response in responses]
    # At most LOGIN_MAX_FAILURES guesses were checked; the right one only counts if it was one.
    assert codes.count(401) <= 5, codes
    assert codes.count(429) >= 21 - 5 - 1, codes
    assert codes[10] in (200, 429), codes
    assert set(codes) <= {200, 401, 429}, codes


class TestThrottleWindow:
    @pytest.fixture
    def settings_overrides(self):
        return {"login_window": 1, "login_max_failures": 2}

    @pytest.mark.gen_test
    async def test_login_works_again_once_the_window_passes(self, api):
        await api.register("alice")
        for _ in range(2):
            await api.post(LOGIN, {"username": "alice", "password": "wrong-password"})
        blocked = await api.post(LOGIN, {"username": "alice", "password": "password123"})
        assert_error(blocked, 429, "rate_limited")
        await asyncio.sleep(1.2)
        assert (await api.post(LOGIN, {"username": "alice", "password": "password123"})).code == 200


class TestExpiry:
    @pytest.fixture
    def settings_overrides(self):
        return {"access_token_ttl": 1, "refresh_token_ttl": 1}

    @pytest.mark.gen_test
    async def test_expired_access_token_is_refused(self, api):
        await api.register("alice")
        tokens = await api.login("alice")
        await asyncio.sleep(2.1)
        response = await api.get("/api/v1/users/me", token=tokens["access_token"])
        assert_error(response, 401, "unauthorized")
        refresh = await api.post("/api/v1/auth/refresh", {"refresh_token": tokens["refresh_token"]})
        assert_error(refresh, 401, "unauthorized")
