"""Notifications `/api/v1/notifications`, as the contract's "Realtime" / "Notifications" section
has them: accepted with 202, delivered in the background, published on `user:{id}`, never lost."""

import asyncio
import re

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from tests.realtime_helpers import user_with_id
from tests.conftest import JWT_SECRET, Api, assert_error
from tornado_app.core.clock import utcnow
from tornado_app.runtime.server import Server

NOTIFICATIONS = "/api/v1/notifications"
NOTIFICATION_FIELDS = {"id", "user_id", "title", "body", "status", "created_at", "delivered_at",
                       "read_at"}
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
MALFORMED_IDS = ["abc", "zzzzzzzzzzzzzzzzzzzzzzzz", "0" * 23, "0" * 25, "%24ne", "null"]


@pytest.fixture
def people(api, server):
    """An admin and two users, as {"admin": token, "alice": (id, token), "bob": (id, token)}."""
    async def make() -> dict:
        return {"admin": await api.admin_token(server),
                "alice": await user_with_id(api, "alice"),
                "bob": await user_with_id(api, "bob")}
    return make


async def notify(api, admin_token: str, user_id: str, title: str = "Hello",
                 body: str = "You have mail") -> dict:
    response = await api.post(NOTIFICATIONS, {"user_id": user_id, "title": title, "body": body},
                              token=admin_token)
    assert response.code == 202, response.body
    return response.json


async def wait_for_status(api, token: str, notification_id: str, status: str,
                          timeout: float = 2.0) -> dict:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await api.get(f"{NOTIFICATIONS}/{notification_id}", token=token)
        assert response.code == 200, response.body
        if response.json["status"] == status:
            return response.json
        assert asyncio.get_running_loop().time() < deadline, response.json
        await asyncio.sleep(0.02)


async def current_cursor(api, channel: str, token: str) -> int:
    response = await api.get(f"/api/v1/poll?channels={channel}&timeout=0", token=token)
    assert response.code == 200, response.body
    return response.json["cursor"]


# --- POST /notifications -----------------------------------------------------------------------

@pytest.mark.gen_test
async def test_admin_posts_a_notification_and_gets_202_queued(api, people):
    who = await people()
    response = await api.post(NOTIFICATIONS, {"user_id": who["alice"][0], "title": "Hi",
                                              "body": "there"}, token=who["admin"])
    assert response.code == 202, response.body
    assert set(response.json) == {"id", "status"}
    assert response.json["status"] == "queued"
    assert ObjectId.is_valid(response.json["id"])


@pytest.mark.gen_test
async def test_accepted_notification_has_location_of_the_new_item(api, people):
    who = await people()
    response = await api.post(NOTIFICATIONS, {"user_id": who["alice"][0], "title": "Hi",
                                              "body": "there"}, token=who["admin"])
    location = response.headers["Location"]
    assert location.endswith(f"{NOTIFICATIONS}/{response.json['id']}")
    item = await api.get(location[location.index("/api/"):], token=who["alice"][1])
    assert item.code == 200, item.body
    assert item.json["id"] == response.json["id"]


@pytest.mark.gen_test
async def test_post_notification_by_a_non_admin_is_403(api, people):
    who = await people()
    response = await api.post(NOTIFICATIONS, {"user_id": who["alice"][0], "title": "Hi",
                                              "body": "there"}, token=who["bob"][1])
    assert_error(response, 403, "forbidden")


@pytest.mark.gen_test
async def test_post_notification_without_a_token_is_401(api, people):
    who = await people()
    response = await api.post(NOTIFICATIONS, {"user_id": who["alice"][0], "title": "Hi",
                                              "body": "there"})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
@pytest.mark.parametrize("user_id", [str(ObjectId()), "abc", "0" * 25])
async def test_post_notification_to_an_unknown_user_is_422(api, people, user_id):
    who = await people()
    response = await api.post(NOTIFICATIONS, {"user_id": user_id, "title": "Hi", "body": "x"},
                              token=who["admin"])
    assert_error(response, 422, "validation_error")
    assert ["body", "user_id"] in [d["loc"] for d in response.json["error"]["details"]]


@pytest.mark.gen_test
async def test_post_notification_with_an_unknown_field_is_422(api, people):
    who = await people()
    response = await api.post(NOTIFICATIONS, {"user_id": who["alice"][0], "title": "Hi",
                                              "body": "there", "urgent": True},
                              token=who["admin"])
    assert_error(response, 422, "validation_error")
    assert ["body", "urgent"] in [d["loc"] for d in response.json["error"]["details"]]


@pytest.mark.gen_test
@pytest.mark.parametrize("fields", [
    {"title": "Hi", "body": "there"},                         # user_id missing
    {"user_id": "ALICE", "body": "there"},                    # title missing
    {"user_id": "ALICE", "title": "", "body": "there"},       # title empty
    {"user_id": "ALICE", "title": "x" * 201, "body": "there"},
    {"user_id": "ALICE", "title": "Hi"},                      # body missing
    {"user_id": "ALICE", "title": "Hi", "body": ""},
    {"user_id": "ALICE", "title": 5, "body": "there"},        # not a string
    {"user_id": None, "title": "Hi", "body": "there"},
])
async def test_post_notification_with_invalid_fields_is_422(api, people, fields):
    who = await people()
    body = {name: who["alice"][0] if value == "ALICE" else value for name, value in fields.items()}
    response = await api.post(NOTIFICATIONS, body, token=who["admin"])
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_post_notification_with_wrong_content_type_is_415(api, people):
    who = await people()
    response = await api.post(NOTIFICATIONS, body=b'{"title": "x"}', content_type="text/plain",
                              token=who["admin"])
    assert_error(response, 415, "unsupported_media_type")


# --- delivery ----------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_notification_is_delivered_in_the_background(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    accepted = await notify(api, who["admin"], alice_id)
    item = await wait_for_status(api, alice_token, accepted["id"], "delivered")
    assert ISO_Z.match(item["delivered_at"])
    assert item["delivered_at"] >= item["created_at"]
    assert item["read_at"] is None


@pytest.mark.gen_test
async def test_delivered_notification_is_published_on_the_user_channel(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    channel = f"user:{alice_id}"
    cursor = await current_cursor(api, channel, alice_token)
    accepted = await notify(api, who["admin"], alice_id, title="Ping", body="Pong")
    response = await api.get(f"/api/v1/poll?channels={channel}&since={cursor}&timeout=2",
                             token=alice_token)
    assert response.code == 200, response.body
    (event,) = response.json["events"]
    assert (event["channel"], event["type"]) == (channel, "notification")
    data = event["data"]
    assert set(data) == NOTIFICATION_FIELDS
    assert (data["id"], data["user_id"], data["title"], data["body"]) == (
        accepted["id"], alice_id, "Ping", "Pong")
    assert data["status"] == "delivered"
    assert ISO_Z.match(data["delivered_at"])


@pytest.mark.gen_test
async def test_notification_is_not_published_on_another_users_channel(api, people):
    who = await people()
    bob_id, bob_token = who["bob"]
    channel = f"user:{bob_id}"
    cursor = await current_cursor(api, channel, bob_token)
    accepted = await notify(api, who["admin"], who["alice"][0])
    await wait_for_status(api, who["alice"][1], accepted["id"], "delivered")
    response = await api.get(f"/api/v1/poll?channels={channel}&since={cursor}&timeout=0.2",
                             token=bob_token)
    assert response.json["events"] == []


@pytest.mark.gen_test
async def test_queued_notification_is_delivered_after_the_next_start(
        api, server, people, settings, mongodb_uri):
    who = await people()
    alice_id, alice_token = who["alice"]
    await server.stop()
    # Left queued by the server that stopped, in the shape the service stores.
    oid = ObjectId()
    client = AsyncMongoClient(mongodb_uri)
    try:
        await client[settings.mongodb_db]["notifications"].insert_one({
            "_id": oid, "user_id": ObjectId(alice_id), "title": "Left", "body": "behind",
            "status": "queued", "created_at": utcnow(), "delivered_at": None, "read_at": None,
            "claimed_until": None})
    finally:
        await client.close()
    fresh = Server(settings, mongodb_uri, JWT_SECRET)
    await fresh.start()
    other = Api(f"http://127.0.0.1:{fresh.port}")
    try:
        item = await wait_for_status(other, alice_token, str(oid), "delivered")
    finally:
        other.close()
        await fresh.stop()
    assert ISO_Z.match(item["delivered_at"])


# --- GET /notifications ------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_list_has_only_mine_newest_first(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    ids = [(await notify(api, who["admin"], alice_id, title=f"n{i}"))["id"] for i in range(3)]
    await notify(api, who["admin"], who["bob"][0], title="for bob")
    response = await api.get(NOTIFICATIONS, token=alice_token)
    assert response.code == 200, response.body
    items = response.json["items"]
    assert [item["id"] for item in items] == ids[::-1]
    assert {item["user_id"] for item in items} == {alice_id}
    assert all(set(item) == NOTIFICATION_FIELDS for item in items)
    assert response.json["next_cursor"] is None


@pytest.mark.gen_test
async def test_list_pages_with_cursor_without_skip_or_repeat(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    ids = [(await notify(api, who["admin"], alice_id, title=f"n{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    for _ in range(3):
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = await api.get(NOTIFICATIONS + query, token=alice_token)
        assert response.code == 200, response.body
        assert len(response.json["items"]) <= 2
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert cursor is None


@pytest.mark.gen_test
async def test_list_without_a_token_is_401(api):
    response = await api.get(NOTIFICATIONS)
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
@pytest.mark.parametrize("query", ["?limit=0", "?limit=101", "?limit=abc", "?cursor=garbage"])
async def test_list_with_invalid_paging_is_422(api, query):
    token = await api.user_token("alice")
    response = await api.get(NOTIFICATIONS + query, token=token)
    assert_error(response, 422, "validation_error")


@pytest.mark.gen_test
async def test_list_is_empty_for_a_user_without_notifications(api):
    token = await api.user_token("alice")
    response = await api.get(NOTIFICATIONS, token=token)
    assert response.code == 200, response.body
    assert response.json == {"items": [], "next_cursor": None}


# --- GET /notifications/{id} -------------------------------------------------------------------

@pytest.mark.gen_test
async def test_recipient_gets_the_notification(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    accepted = await notify(api, who["admin"], alice_id, title="T", body="B")
    response = await api.get(f"{NOTIFICATIONS}/{accepted['id']}", token=alice_token)
    assert response.code == 200, response.body
    item = response.json
    assert set(item) == NOTIFICATION_FIELDS
    assert (item["id"], item["user_id"], item["title"], item["body"]) == (
        accepted["id"], alice_id, "T", "B")
    assert item["status"] in ("queued", "delivered")
    assert ISO_Z.match(item["created_at"])


@pytest.mark.gen_test
async def test_admin_gets_anyones_notification(api, people):
    who = await people()
    accepted = await notify(api, who["admin"], who["alice"][0])
    response = await api.get(f"{NOTIFICATIONS}/{accepted['id']}", token=who["admin"])
    assert response.code == 200, response.body
    assert response.json["id"] == accepted["id"]


@pytest.mark.gen_test
async def test_another_user_gets_404_for_someone_elses_notification(api, people):
    who = await people()
    accepted = await notify(api, who["admin"], who["alice"][0])
    response = await api.get(f"{NOTIFICATIONS}/{accepted['id']}", token=who["bob"][1])
    assert_error(response, 404, "not_found")


@pytest.mark.gen_test
async def test_get_notification_without_a_token_is_401(api, people):
    who = await people()
    accepted = await notify(api, who["admin"], who["alice"][0])
    response = await api.get(f"{NOTIFICATIONS}/{accepted['id']}")
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
@pytest.mark.parametrize("bad_id", MALFORMED_IDS + [str(ObjectId())])
async def test_get_malformed_or_unknown_notification_id_is_404(api, bad_id):
    token = await api.user_token("alice")
    response = await api.get(f"{NOTIFICATIONS}/{bad_id}", token=token)
    assert_error(response, 404, "not_found")


# --- POST /notifications/{id}/read -------------------------------------------------------------

@pytest.mark.gen_test
async def test_recipient_marks_a_delivered_notification_read(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    accepted = await notify(api, who["admin"], alice_id)
    delivered = await wait_for_status(api, alice_token, accepted["id"], "delivered")
    response = await api.post(f"{NOTIFICATIONS}/{accepted['id']}/read", token=alice_token)
    assert response.code == 200, response.body
    item = response.json
    assert set(item) == NOTIFICATION_FIELDS
    assert item["status"] == "read"
    assert ISO_Z.match(item["read_at"])
    assert item["delivered_at"] == delivered["delivered_at"]
    assert item["read_at"] >= item["delivered_at"]


@pytest.mark.gen_test
async def test_read_notification_stays_read(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    accepted = await notify(api, who["admin"], alice_id)
    await wait_for_status(api, alice_token, accepted["id"], "delivered")
    first = await api.post(f"{NOTIFICATIONS}/{accepted['id']}/read", token=alice_token)
    again = await api.post(f"{NOTIFICATIONS}/{accepted['id']}/read", token=alice_token)
    assert again.code == 200, again.body
    assert again.json["status"] == "read"
    assert again.json["read_at"] == first.json["read_at"]
    fetched = await api.get(f"{NOTIFICATIONS}/{accepted['id']}", token=alice_token)
    assert fetched.json["status"] == "read"


@pytest.mark.gen_test
async def test_another_user_cannot_mark_a_notification_read(api, people):
    who = await people()
    alice_id, alice_token = who["alice"]
    accepted = await notify(api, who["admin"], alice_id)
    await wait_for_status(api, alice_token, accepted["id"], "delivered")
    response = await api.post(f"{NOTIFICATIONS}/{accepted['id']}/read", token=who["bob"][1])
    assert_error(response, 404, "not_found")
    fetched = await api.get(f"{NOTIFICATIONS}/{accepted['id']}", token=alice_token)
    assert fetched.json["status"] == "delivered"


@pytest.mark.gen_test
async def test_mark_read_without_a_token_is_401(api, people):
    who = await people()
    accepted = await notify(api, who["admin"], who["alice"][0])
    response = await api.post(f"{NOTIFICATIONS}/{accepted['id']}/read")
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
@pytest.mark.parametrize("bad_id", MALFORMED_IDS + [str(ObjectId())])
async def test_mark_read_of_a_malformed_or_unknown_id_is_404(api, bad_id):
    token = await api.user_token("alice")
    response = await api.post(f"{NOTIFICATIONS}/{bad_id}/read", token=token)
    assert_error(response, 404, "not_found")


# --- lifecycle ---------------------------------------------------------------------------------

@pytest.mark.gen_test
async def test_delivery_stops_promptly_right_after_a_notification_is_accepted(api, server, people):
    who = await people()
    service = server.ctx.notifications
    await asyncio.sleep(0.05)  # the delivery worker is idle, waiting for news
    await service.create(who["alice"][0], "Last", "one before shutdown")
    await asyncio.wait_for(service.stop(), 2)
