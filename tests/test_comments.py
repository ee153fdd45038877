"""Comments: /api/v1/posts/{id}/comments and /api/v1/comments/{id}, as the contract has them."""

import asyncio
import re
from datetime import datetime
from urllib.parse import quote

import pytest
from bson import ObjectId

from tests.blog_helpers import MALFORMED_IDS, assert_validation, create_post, unknown_id
from tests.conftest import assert_error

POSTS = "/api/v1/posts"
COMMENTS = "/api/v1/comments"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


async def add_comment(api, token, post_id, body="Nice post"):
    response = await api.post(f"{POSTS}/{post_id}/comments", {"body": body}, token=token)
    assert response.code == 201, response.body
    return response.json


async def get_post(api, post_id):
    response = await api.get(f"{POSTS}/{post_id}")
    assert response.code == 200, response.body
    return response.json


async def comment_ids(api, post_id, query=""):
    response = await api.get(f"{POSTS}/{post_id}/comments{query}")
    assert response.code == 200, response.body
    return [item["id"] for item in response.json["items"]]


# --- create ---------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_create_comment_answers_201_with_the_comment(api):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    post = await create_post(api, alice)
    response = await api.post(f"{POSTS}/{post['id']}/comments", {"body": "Great"}, token=bob)
    assert response.code == 201, response.body
    comment = response.json
    assert set(comment) == {"id", "post_id", "body", "author", "created_at"}
    assert ObjectId.is_valid(comment["id"])
    assert comment["post_id"] == post["id"]
    assert comment["body"] == "Great"
    assert comment["author"]["username"] == "bob"
    assert set(comment["author"]) == {"id", "username"}
    assert ISO_Z.match(comment["created_at"]), comment["created_at"]


@pytest.mark.gen_test
async def test_create_comment_without_token_is_401(api):
    post = await create_post(api, await api.user_token())
    response = await api.post(f"{POSTS}/{post['id']}/comments", {"body": "hi"})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await comment_ids(api, post["id"]) == []


@pytest.mark.gen_test
async def test_create_comment_on_unknown_post_is_404(api):
    response = await api.post(f"{POSTS}/{unknown_id()}/comments", {"body": "hi"},
                              token=await api.user_token())
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("post_id", MALFORMED_IDS)
@pytest.mark.gen_test
async def test_create_comment_on_malformed_post_id_is_404(api, post_id):
    response = await api.post(f"{POSTS}/{post_id}/comments", {"body": "hi"},
                              token=await api.user_token())
    assert_error(response, 404, "not_found")


@pytest.mark.gen_test
async def test_create_comment_on_deleted_post_is_404(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await api.delete(f"{POSTS}/{post['id']}", token=token)
    response = await api.post(f"{POSTS}/{post['id']}/comments", {"body": "hi"}, token=token)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("length", [1, 5000])
@pytest.mark.gen_test
async def test_create_comment_accepts_body_of_1_to_5000_chars(api, length):
    token = await api.user_token()
    post = await create_post(api, token)
    comment = await add_comment(api, token, post["id"], body="b" * length)
    assert comment["body"] == "b" * length


INVALID_COMMENT_BODIES = [
    ("body-empty", {"body": ""}, ["body", "body"]),
    ("body-5001-chars", {"body": "b" * 5001}, ["body", "body"]),
    ("body-missing", {}, ["body", "body"]),
    ("body-null", {"body": None}, ["body", "body"]),
    ("body-number", {"body": 5}, ["body", "body"]),
    ("body-list", {"body": ["hi"]}, ["body", "body"]),
    ("body-ne-operator", {"body": {"$ne": None}}, ["body", "body"]),
    ("unknown-field", {"body": "hi", "extra": 1}, ["body", "extra"]),
    ("client-sets-post-id", {"body": "hi", "post_id": str(ObjectId())}, ["body", "post_id"]),
    ("client-sets-author", {"body": "hi", "author": {"id": "x"}}, ["body", "author"]),
    ("top-level-operator", {"body": "hi", "$set": {"x": 1}}, ["body", "$set"]),
]


@pytest.mark.parametrize("name,body,loc", INVALID_COMMENT_BODIES,
                         ids=[case[0] for case in INVALID_COMMENT_BODIES])
@pytest.mark.gen_test
async def test_create_comment_rejects_invalid_body_with_422(api, name, body, loc):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.post(f"{POSTS}/{post['id']}/comments", body, token=token)
    assert_validation(response, loc)
    assert await comment_ids(api, post["id"]) == []
    assert (await get_post(api, post["id"]))["comment_count"] == 0


@pytest.mark.gen_test
async def test_create_comment_unknown_field_detail_says_unknown_field(api):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.post(f"{POSTS}/{post['id']}/comments", {"body": "hi", "bdy": "x"},
                              token=token)
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"] == [{"loc": ["body", "bdy"], "msg": "unknown field"}]


@pytest.mark.parametrize("raw", ["[]", '"hi"', "1", "null", '[{"body": "hi"}]'])
@pytest.mark.gen_test
async def test_create_comment_with_json_that_is_not_an_object_is_400(api, raw):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.post(f"{POSTS}/{post['id']}/comments", body=raw,
                              content_type="application/json", token=token)
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("raw", ["{", "", '{"body": "hi",}'])
@pytest.mark.gen_test
async def test_create_comment_with_invalid_json_is_400(api, raw):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.post(f"{POSTS}/{post['id']}/comments", body=raw,
                              content_type="application/json", token=token)
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.gen_test
async def test_create_comment_with_wrong_content_type_is_415(api, ctype):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.post(f"{POSTS}/{post['id']}/comments", body='{"body": "hi"}',
                              content_type=ctype, token=token)
    assert_error(response, 415, "unsupported_media_type")


# --- comment_count --------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_comment_count_goes_up_with_each_comment(api):
    token = await api.user_token()
    post = await create_post(api, token)
    for expected in (1, 2, 3):
        await add_comment(api, token, post["id"])
        assert (await get_post(api, post["id"]))["comment_count"] == expected


@pytest.mark.gen_test
async def test_comment_count_goes_down_when_a_comment_is_deleted(api):
    token = await api.user_token()
    post = await create_post(api, token)
    first = await add_comment(api, token, post["id"])
    await add_comment(api, token, post["id"])
    assert (await api.delete(f"{COMMENTS}/{first['id']}", token=token)).code == 204
    assert (await get_post(api, post["id"]))["comment_count"] == 1


@pytest.mark.gen_test
async def test_comment_count_counts_concurrent_comments(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await asyncio.gather(*(add_comment(api, token, post["id"], f"c{i}") for i in range(5)))
    assert (await get_post(api, post["id"]))["comment_count"] == 5
    assert len(await comment_ids(api, post["id"])) == 5


@pytest.mark.gen_test
async def test_comment_count_is_listed_with_the_post(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await add_comment(api, token, post["id"])
    listed = (await api.get(POSTS)).json["items"]
    assert listed[0]["comment_count"] == 1


@pytest.mark.gen_test
async def test_a_new_comment_changes_the_post_etag(api):
    """comment_count is part of the post, so a cached copy must not be revalidated as fresh."""
    token = await api.user_token()
    post = await create_post(api, token)
    etag = (await api.get(f"{POSTS}/{post['id']}")).headers["ETag"]
    await add_comment(api, token, post["id"])
    response = await api.get(f"{POSTS}/{post['id']}", headers={"If-None-Match": etag})
    assert response.code == 200
    assert response.json["comment_count"] == 1
    assert response.headers["ETag"] == f'"{response.json["version"]}"' != etag


@pytest.mark.gen_test
async def test_a_deleted_comment_changes_the_post_etag(api):
    token = await api.user_token()
    post = await create_post(api, token)
    comment = await add_comment(api, token, post["id"])
    etag = (await api.get(f"{POSTS}/{post['id']}")).headers["ETag"]
    await api.delete(f"{COMMENTS}/{comment['id']}", token=token)
    response = await api.get(f"{POSTS}/{post['id']}", headers={"If-None-Match": etag})
    assert response.code == 200
    assert response.json["comment_count"] == 0


# --- list -----------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_list_comments_needs_no_token_and_has_the_page_shape(api):
    token = await api.user_token()
    post = await create_post(api, token)
    comment = await add_comment(api, token, post["id"])
    response = await api.get(f"{POSTS}/{post['id']}/comments")
    assert response.code == 200
    assert response.json == {"items": [comment], "next_cursor": None}


@pytest.mark.gen_test
async def test_list_comments_is_oldest_first(api):
    token = await api.user_token()
    post = await create_post(api, token)
    ids = [(await add_comment(api, token, post["id"], f"c{i}"))["id"] for i in range(4)]
    assert await comment_ids(api, post["id"]) == ids


@pytest.mark.gen_test
async def test_list_comments_shows_only_that_posts_comments(api):
    token = await api.user_token()
    post, other = await create_post(api, token), await create_post(api, token)
    mine = (await add_comment(api, token, post["id"]))["id"]
    await add_comment(api, token, other["id"])
    assert await comment_ids(api, post["id"]) == [mine]


@pytest.mark.gen_test
async def test_list_comments_of_unknown_post_is_404(api):
    assert_error(await api.get(f"{POSTS}/{unknown_id()}/comments"), 404, "not_found")


@pytest.mark.parametrize("post_id", MALFORMED_IDS)
@pytest.mark.gen_test
async def test_list_comments_of_malformed_post_id_is_404(api, post_id):
    assert_error(await api.get(f"{POSTS}/{post_id}/comments"), 404, "not_found")


@pytest.mark.gen_test
async def test_list_comments_pages_through_every_comment_once_in_order(api):
    token = await api.user_token()
    post = await create_post(api, token)
    ids = [(await add_comment(api, token, post["id"], f"c{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    for _ in range(10):
        query = "?limit=2" + (f"&cursor={quote(cursor)}" if cursor else "")
        response = await api.get(f"{POSTS}/{post['id']}/comments{query}")
        assert len(response.json["items"]) <= 2
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


@pytest.mark.gen_test
async def test_list_comments_default_limit_is_20(api):
    token = await api.user_token()
    post = await create_post(api, token)
    for i in range(21):
        await add_comment(api, token, post["id"], f"c{i}")
    response = await api.get(f"{POSTS}/{post['id']}/comments")
    assert len(response.json["items"]) == 20
    assert response.json["next_cursor"]


@pytest.mark.gen_test
async def test_list_comments_paging_while_others_comment_neither_skips_nor_repeats(api):
    token = await api.user_token()
    post = await create_post(api, token)
    existing = [(await add_comment(api, token, post["id"], f"old{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    for page in range(20):
        query = "?limit=2" + (f"&cursor={quote(cursor)}" if cursor else "")
        response, *_ = await asyncio.gather(
            api.get(f"{POSTS}/{post['id']}/comments{query}"),
            *(add_comment(api, token, post["id"], f"new{page}-{i}") for i in range(2))
            if page < 3 else ())
        assert response.code == 200
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a comment was repeated"
    assert seen[:len(existing)] == existing


@pytest.mark.gen_test
async def test_list_comments_pages_comments_made_in_the_same_millisecond(api, server):
    token = await api.user_token()
    post = await create_post(api, token)
    ids = [(await add_comment(api, token, post["id"], f"c{i}"))["id"] for i in range(5)]
    when = datetime(2030, 1, 1, 12, 0, 0, 123000)
    await server.ctx.db["comments"].update_many({}, {"$set": {"created_at": when}})
    seen, cursor = [], None
    for _ in range(10):
        query = "?limit=2" + (f"&cursor={quote(cursor)}" if cursor else "")
        response = await api.get(f"{POSTS}/{post['id']}/comments{query}")
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert seen == ids


@pytest.mark.parametrize("limit", ["0", "101", "-5", "ten", ""])
@pytest.mark.gen_test
async def test_list_comments_with_invalid_limit_is_422(api, limit):
    post = await create_post(api, await api.user_token())
    response = await api.get(f"{POSTS}/{post['id']}/comments?limit={limit}")
    assert_validation(response, ["query", "limit"])


@pytest.mark.parametrize("cursor", ["garbage", "!!!!", "A" * 600, "eyJ0IjoxfQ"])
@pytest.mark.gen_test
async def test_list_comments_with_garbage_cursor_is_422(api, cursor):
    post = await create_post(api, await api.user_token())
    response = await api.get(f"{POSTS}/{post['id']}/comments?cursor={quote(cursor)}")
    assert_validation(response, ["query", "cursor"])


@pytest.mark.gen_test
async def test_list_comments_with_a_cursor_from_the_posts_listing_is_422(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await create_post(api, token)
    posts_cursor = (await api.get(f"{POSTS}?limit=1")).json["next_cursor"]
    response = await api.get(f"{POSTS}/{post['id']}/comments?cursor={quote(posts_cursor)}")
    assert_validation(response, ["query", "cursor"])


@pytest.mark.parametrize("query", ["?limit[$gt]=0", "?cursor[$ne]=x", "?post_id[$ne]=x",
                                   "?cursor=" + quote('{"$gt": ""}')])
@pytest.mark.gen_test
async def test_list_comments_with_operators_in_the_query_string_is_never_500(api, query):
    token = await api.user_token()
    post = await create_post(api, token)
    await add_comment(api, token, post["id"])
    response = await api.get(f"{POSTS}/{post['id']}/comments{query}")
    assert response.code < 500, (response.code, response.body)
    if response.code != 200:
        assert_error(response, response.code, response.json["error"]["code"])


# --- delete post takes its comments ---------------------------------------------------------


@pytest.mark.gen_test
async def test_listing_comments_of_a_deleted_post_is_404(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await add_comment(api, token, post["id"])
    assert (await api.delete(f"{POSTS}/{post['id']}", token=token)).code == 204
    assert_error(await api.get(f"{POSTS}/{post['id']}/comments"), 404, "not_found")


@pytest.mark.gen_test
async def test_deleting_a_post_deletes_its_comments(api, server):
    token = await api.user_token()
    post, other = await create_post(api, token), await create_post(api, token)
    doomed = [await add_comment(api, token, post["id"], f"c{i}") for i in range(3)]
    kept = await add_comment(api, token, other["id"])
    await api.delete(f"{POSTS}/{post['id']}", token=token)
    for comment in doomed:
        assert_error(await api.delete(f"{COMMENTS}/{comment['id']}", token=token),
                     404, "not_found")
    remaining = await server.ctx.db["comments"].find({}, {"_id": 1}).to_list(None)
    assert [str(doc["_id"]) for doc in remaining] == [kept["id"]]


# --- delete comment -------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_comment_author_may_delete_their_comment(api):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    post = await create_post(api, alice)
    comment = await add_comment(api, bob, post["id"])
    response = await api.delete(f"{COMMENTS}/{comment['id']}", token=bob)
    assert response.code == 204
    assert response.body == b""
    assert await comment_ids(api, post["id"]) == []


@pytest.mark.gen_test
async def test_post_author_may_delete_a_comment_on_their_post(api):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    post = await create_post(api, alice)
    comment = await add_comment(api, bob, post["id"])
    assert (await api.delete(f"{COMMENTS}/{comment['id']}", token=alice)).code == 204
    assert await comment_ids(api, post["id"]) == []


@pytest.mark.gen_test
async def test_admin_may_delete_any_comment(api, server):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    admin = await api.admin_token(server, "root")
    post = await create_post(api, alice)
    comment = await add_comment(api, bob, post["id"])
    assert (await api.delete(f"{COMMENTS}/{comment['id']}", token=admin)).code == 204
    assert await comment_ids(api, post["id"]) == []


@pytest.mark.gen_test
async def test_other_users_may_not_delete_a_comment(api):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    mallory = await api.user_token("mallory")
    post = await create_post(api, alice)
    comment = await add_comment(api, bob, post["id"])
    response = await api.delete(f"{COMMENTS}/{comment['id']}", token=mallory)
    assert_error(response, 403, "forbidden")
    assert await comment_ids(api, post["id"]) == [comment["id"]]
    assert (await get_post(api, post["id"]))["comment_count"] == 1


@pytest.mark.gen_test
async def test_author_of_another_post_may_not_delete_a_comment(api):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    post = await create_post(api, alice)
    await create_post(api, bob)
    comment = await add_comment(api, alice, post["id"])
    assert_error(await api.delete(f"{COMMENTS}/{comment['id']}", token=bob), 403, "forbidden")


@pytest.mark.gen_test
async def test_deleting_a_comment_without_token_is_401(api):
    token = await api.user_token()
    post = await create_post(api, token)
    comment = await add_comment(api, token, post["id"])
    response = await api.delete(f"{COMMENTS}/{comment['id']}")
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await comment_ids(api, post["id"]) == [comment["id"]]


@pytest.mark.gen_test
async def test_deleting_an_unknown_comment_is_404(api):
    response = await api.delete(f"{COMMENTS}/{unknown_id()}", token=await api.user_token())
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("comment_id", MALFORMED_IDS)
@pytest.mark.gen_test
async def test_deleting_a_comment_with_malformed_id_is_404(api, comment_id):
    response = await api.delete(f"{COMMENTS}/{comment_id}", token=await api.user_token())
    assert_error(response, 404, "not_found")


@pytest.mark.gen_test
async def test_deleting_a_comment_twice_is_404_and_counts_once(api):
    token = await api.user_token()
    post = await create_post(api, token)
    comment = await add_comment(api, token, post["id"])
    await add_comment(api, token, post["id"])
    await api.delete(f"{COMMENTS}/{comment['id']}", token=token)
    assert_error(await api.delete(f"{COMMENTS}/{comment['id']}", token=token), 404, "not_found")
    assert (await get_post(api, post["id"]))["comment_count"] == 1


@pytest.mark.gen_test
async def test_a_post_id_is_not_a_comment_id(api):
    token = await api.user_token()
    post = await create_post(api, token)
    assert_error(await api.delete(f"{COMMENTS}/{post['id']}", token=token), 404, "not_found")
    assert (await get_post(api, post["id"]))["title"] == "Hello"
