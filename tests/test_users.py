"""Users as the contract describes them: me, the admin's list and role changes, and no hash ever."""

import re
import time
import uuid

import jwt
import pytest

from tests.conftest import JWT_SECRET, assert_error

ME = "/api/v1/users/me"
USERS = "/api/v1/users"
UNKNOWN_ID = "0123456789abcdef01234567"
USER_FIELDS = {"id", "username", "email", "role", "created_at"}
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def assert_no_hash(user: dict):
    assert set(user) == USER_FIELDS, user
    text = repr(user).lower()
    assert "password" not in text and "hash" not in text and "$2b$" not in text


def forged_token(secret: str = JWT_SECRET, algorithm: str = "HS256", **overrides) -> str:
    now = int(time.time())
    claims = {"sub": UNKNOWN_ID, "type": "access", "jti": uuid.uuid4().hex,
              "fam": uuid.uuid4().hex, "iat": now, "exp": now + 600,
              "iss": "tornado-app", "aud": "tornado-app-api"}
    claims.update(overrides)
    return jwt.encode(claims, secret, algorithm=algorithm)


@pytest.fixture
def admin(io_loop, api, server):
    return io_loop.run_sync(lambda: api.admin_token(server, "admin"))


@pytest.fixture
def user(io_loop, api):
    return io_loop.run_sync(lambda: api.user_token("alice"))


async def me(api, token) -> dict:
    response = await api.get(ME, token=token)
    assert response.code == 200, response.body
    return response.json


# --- /users/me ---------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_me_returns_the_current_user(api, user):
    response = await api.get(ME, token=user)
    assert response.code == 200, response.body
    found = response.json
    assert set(found) == USER_FIELDS
    assert found["username"] == "alice"
    assert found["email"] == "alice@example.com"
    assert found["role"] == "user"
    assert re.fullmatch(r"[0-9a-f]{24}", found["id"])
    assert ISO_UTC.match(found["created_at"])


@pytest.mark.gen_test
async def test_me_without_a_token_is_401_with_www_authenticate(api):
    response = await api.get(ME)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
@pytest.mark.parametrize("header", [
    "", "Bearer", "Bearer ", "Basic YWxpY2U6cGFzc3dvcmQxMjM=", "Token abc", "bearer",
    "Bearerabc", "Bearer a b", "Digest username=alice",
])
async def test_me_with_a_malformed_authorization_header_is_401(api, header):
    response = await api.get(ME, headers={"Authorization": header})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
async def test_me_with_a_valid_token_under_another_scheme_is_401(api, user):
    response = await api.get(ME, headers={"Authorization": f"Basic {user}"})
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
@pytest.mark.parametrize("token", [
    "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.", "x" * 5000,
    forged_token(secret="another-secret-" + "y" * 40),
    forged_token(algorithm="none", secret=None),
    forged_token(exp=int(time.time()) - 10),
    forged_token(aud="someone-else"),
    forged_token(iss="someone-else"),
    forged_token(),  # well signed, but no such token family was ever issued
], ids=["word", "three-parts", "empty-signature", "huge", "other-secret", "alg-none",
        "expired", "other-audience", "other-issuer", "unknown-family"])
async def test_me_with_a_garbage_token_is_401(api, token):
    response = await api.get(ME, token=token)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
async def test_me_with_a_refresh_token_is_401(api):
    await api.register("alice")
    tokens = await api.login("alice")
    assert_error(await api.get(ME, token=tokens["refresh_token"]), 401, "unauthorized")


@pytest.mark.gen_test
async def test_me_with_a_tampered_token_is_401(api, user):
    header, payload, signature = user.split(".")
    tampered = ".".join([header, payload, signature[:-2] + ("AA" if signature[-2:] != "AA"
                                                            else "BB")])
    assert_error(await api.get(ME, token=tampered), 401, "unauthorized")


# --- the user shape ----------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_user_shape_never_contains_a_password_hash(api, server, admin):
    registered = await api.register("bob")
    assert_no_hash(registered)
    bob = await api.login("bob")
    assert_no_hash(await me(api, bob["access_token"]))
    page = (await api.get(USERS, token=admin)).json
    for listed in page["items"]:
        assert_no_hash(listed)
    changed = await api.patch(f"{USERS}/{registered['id']}", {"role": "admin"}, token=admin)
    assert_no_hash(changed.json)


# --- GET /users --------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_admin_lists_users_as_a_page(api, admin):
    await api.register("bob")
    response = await api.get(USERS, token=admin)
    assert response.code == 200, response.body
    page = response.json
    assert set(page) == {"items", "next_cursor"}
    assert [u["username"] for u in page["items"]] == ["admin", "bob"]
    assert page["next_cursor"] is None


@pytest.mark.gen_test
async def test_listing_users_is_403_for_a_user(api, user):
    assert_error(await api.get(USERS, token=user), 403, "forbidden")


@pytest.mark.gen_test
async def test_listing_users_without_a_token_is_401(api):
    assert_error(await api.get(USERS), 401, "unauthorized")


@pytest.mark.gen_test
async def test_admin_pages_through_users_without_skips_or_repeats(api, admin):
    for index in range(6):
        await api.register(f"user{index}")
    seen, cursor = [], None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get(USERS + query, token=admin)).json
        assert len(page["items"]) <= 2
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [u["username"] for u in seen] == ["admin"] + [f"user{i}" for i in range(6)]


@pytest.mark.gen_test
@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "cursor=garbage"])
async def test_listing_users_with_a_bad_limit_or_cursor_is_422(api, admin, query):
    assert_error(await api.get(f"{USERS}?{query}", token=admin), 422, "validation_error")


# --- PATCH /users/{id} -------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_admin_changes_a_users_role(api, admin):
    bob = await api.register("bob")
    response = await api.patch(f"{USERS}/{bob['id']}", {"role": "admin"}, token=admin)
    assert response.code == 200, response.body
    assert response.json == {**bob, "role": "admin"}


@pytest.mark.gen_test
async def test_a_promoted_users_role_takes_effect_on_the_next_request(api, admin):
    bob = await api.register("bob")
    token = (await api.login("bob"))["access_token"]
    assert_error(await api.get(USERS, token=token), 403, "forbidden")
    await api.patch(f"{USERS}/{bob['id']}", {"role": "admin"}, token=admin)
    assert (await api.get(USERS, token=token)).code == 200
    assert (await me(api, token))["role"] == "admin"


@pytest.mark.gen_test
async def test_a_demoted_admins_role_takes_effect_on_the_next_request(api, server, admin):
    bob_token = await api.admin_token(server, "bob")
    bob = await me(api, bob_token)
    assert (await api.get(USERS, token=bob_token)).code == 200
    await api.patch(f"{USERS}/{bob['id']}", {"role": "user"}, token=admin)
    assert_error(await api.get(USERS, token=bob_token), 403, "forbidden")


@pytest.mark.gen_test
async def test_changing_a_role_is_403_for_a_user(api, user):
    alice = await me(api, user)
    response = await api.patch(f"{USERS}/{alice['id']}", {"role": "admin"}, token=user)
    assert_error(response, 403, "forbidden")
    assert (await me(api, user))["role"] == "user"


@pytest.mark.gen_test
async def test_changing_a_role_without_a_token_is_401(api):
    bob = await api.register("bob")
    response = await api.patch(f"{USERS}/{bob['id']}", {"role": "admin"})
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
@pytest.mark.parametrize("role", ["superuser", "", "ADMIN", "Admin", None, 1, True, ["admin"]])
async def test_a_bad_role_is_422_and_changes_nothing(api, admin, role):
    bob = await api.register("bob")
    response = await api.patch(f"{USERS}/{bob['id']}", {"role": role}, token=admin)
    assert_error(response, 422, "validation_error")
    assert [d["loc"] for d in response.json["error"]["details"]] == [["body", "role"]]
    listed = (await api.get(USERS, token=admin)).json["items"]
    assert [u["role"] for u in listed if u["id"] == bob["id"]] == ["user"]


@pytest.mark.gen_test
async def test_a_role_change_without_role_is_422(api, admin):
    bob = await api.register("bob")
    response = await api.patch(f"{USERS}/{bob['id']}", {}, token=admin)
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_a_role_change_with_an_unknown_field_is_422_naming_it(api, admin):
    bob = await api.register("bob")
    response = await api.patch(f"{USERS}/{bob['id']}",
                               {"role": "admin", "password_hash": "x"}, token=admin)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"] == [{"loc": ["body", "password_hash"],
                                                  "msg": "unknown field"}]


@pytest.mark.gen_test
@pytest.mark.parametrize("user_id", [UNKNOWN_ID, "not-an-id", "123",
                                     "zzzzzzzzzzzzzzzzzzzzzzzz"])
async def test_a_role_change_for_an_unknown_or_malformed_id_is_404(api, admin, user_id):
    response = await api.patch(f"{USERS}/{user_id}", {"role": "admin"}, token=admin)
    assert_error(response, 404, "not_found")
