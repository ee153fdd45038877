"""Access tokens verified once are not decoded again (tornado_app/accounts/verified_tokens.py),
yet a token that is revoked, or whose exp has passed, is refused as before."""

import time

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from tests.realtime_helpers import WsClient, user_with_id
from tornado_app.accounts.security import TokenClaims
from tornado_app.accounts.verified_tokens import VerifiedTokens


def _claims(exp: float) -> TokenClaims:
    return TokenClaims(sub="u1", type="access", jti="j1", fam="f1", exp=exp)


def test_a_verified_token_gives_back_its_claims():
    verified = VerifiedTokens(size=100)
    claims = _claims(time.time() + 60)
    verified.put("token-a", claims)
    assert verified.get("token-a") is claims


def test_a_token_never_verified_is_not_known():
    verified = VerifiedTokens(size=100)
    verified.put("token-a", _claims(time.time() + 60))
    assert verified.get("token-b") is None


def test_a_token_past_its_exp_is_not_known_and_is_forgotten():
    verified = VerifiedTokens(size=100)
    verified.put("token-a", _claims(time.time() - 0.001))
    assert verified.get("token-a") is None
    assert len(verified) == 0


def test_a_full_cache_starts_over_rather_than_grow():
    verified = VerifiedTokens(size=2)
    for name in ("token-a", "token-b", "token-c"):
        verified.put(name, _claims(time.time() + 60))
    assert len(verified) == 1
    assert verified.get("token-c") is not None


async def _upgrade_refused(port: int, token: str) -> int:
    request = HTTPRequest(f"ws://127.0.0.1:{port}/api/v1/ws",
                          headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(HTTPClientError) as caught:
        await websocket_connect(request)
    return caught.value.code


@pytest.mark.gen_test(timeout=30)
async def test_a_token_upgraded_with_before_is_refused_on_a_new_upgrade_after_logout(api, server):
    _, token = await user_with_id(api, "alice")
    for _ in range(2):  # the second upgrade finds the token already verified
        ws = await WsClient.connect(server.port, token=token)
        await ws.subscribe(["posts"])
        ws.close()
    response = await api.post("/api/v1/auth/logout", token=token)
    assert response.code == 204, response.body
    assert await _upgrade_refused(server.port, token) == 401


@pytest.mark.gen_test(timeout=30)
async def test_a_token_used_before_is_refused_on_a_request_after_logout(api, server):
    _, token = await user_with_id(api, "bob")
    assert (await api.get("/api/v1/users/me", token=token)).code == 200
    response = await api.post("/api/v1/auth/logout", token=token)
    assert response.code == 204, response.body
    assert (await api.get("/api/v1/users/me", token=token)).code == 401
