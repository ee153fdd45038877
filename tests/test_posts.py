"""Blog posts: /api/v1/posts and /api/v1/posts/{id}, as the contract's "Blog" section has them."""

import asyncio
import base64
import json
import re
from datetime import datetime
from urllib.parse import quote

import pytest
from bson import ObjectId

from tests.blog_helpers import MALFORMED_IDS, assert_validation, create_post, unknown_id
from tests.conftest import assert_error

POSTS = "/api/v1/posts"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
POST_FIELDS = {"id", "title", "content", "tags", "author", "comment_count", "version",
               "created_at", "updated_at"}


def raw_cursor(parts) -> str:
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_url(base: str, cursor: str | None, limit: int = 2) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}limit={limit}" + (f"&cursor={quote(cursor)}" if cursor else "")


async def list_ids(api, query=""):
    response = await api.get(POSTS + query)
    assert response.code == 200, response.body
    return [item["id"] for item in response.json["items"]]


# --- create ---------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_create_post_answers_201_with_the_post(api):
    token = await api.user_token("alice")
    response = await api.post(POSTS, {"title": "Hi", "content": "Body", "tags": ["a", "b-2"]},
                              token=token)
    assert response.code == 201, response.body
    post = response.json
    assert set(post) == POST_FIELDS
    assert ObjectId.is_valid(post["id"])
    assert (post["title"], post["content"], post["tags"]) == ("Hi", "Body", ["a", "b-2"])
    assert post["author"]["username"] == "alice"
    assert set(post["author"]) == {"id", "username"} and ObjectId.is_valid(post["author"]["id"])
    assert post["comment_count"] == 0
    assert post["version"] == 1


@pytest.mark.gen_test
async def test_create_post_sets_location_to_the_new_post(api):
    token = await api.user_token()
    response = await api.post(POSTS, {"title": "Hi", "content": "Body"}, token=token)
    assert response.headers["Location"] == f"{POSTS}/{response.json['id']}"
    fetched = await api.get(response.headers["Location"])
    assert fetched.code == 200
    assert fetched.json == response.json


@pytest.mark.gen_test
async def test_create_post_times_are_iso_utc_with_z(api):
    post = await create_post(api, await api.user_token())
    assert ISO_Z.match(post["created_at"]), post["created_at"]
    assert ISO_Z.match(post["updated_at"]), post["updated_at"]
    assert post["created_at"] == post["updated_at"]


@pytest.mark.gen_test
async def test_create_post_carries_etag_of_version_1(api):
    token = await api.user_token()
    response = await api.post(POSTS, {"title": "Hi", "content": "Body"}, token=token)
    assert response.headers["ETag"] == '"1"'


@pytest.mark.gen_test
async def test_create_post_tags_default_to_empty(api):
    post = await create_post(api, await api.user_token())
    assert post["tags"] == []


@pytest.mark.gen_test
async def test_create_post_without_token_is_401(api):
    response = await api.post(POSTS, {"title": "Hi", "content": "Body"})
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.gen_test
async def test_create_post_with_a_bad_token_is_401(api):
    response = await api.post(POSTS, {"title": "Hi", "content": "Body"}, token="not.a.jwt")
    assert_error(response, 401, "unauthorized")


@pytest.mark.gen_test
async def test_create_post_without_token_writes_nothing(api):
    await api.post(POSTS, {"title": "Hi", "content": "Body"})
    assert await list_ids(api) == []


@pytest.mark.parametrize("length", [1, 200])
@pytest.mark.gen_test
async def test_create_post_accepts_title_of_1_to_200_chars(api, length):
    post = await create_post(api, await api.user_token(), title="t" * length)
    assert post["title"] == "t" * length


@pytest.mark.parametrize("length", [1, 100_000])
@pytest.mark.gen_test
async def test_create_post_accepts_content_of_1_to_100000_chars(api, length):
    post = await create_post(api, await api.user_token(), content="c" * length)
    assert len(post["content"]) == length


@pytest.mark.gen_test
async def test_create_post_accepts_10_tags_of_32_chars(api):
    tags = [f"{i}" + "a-9" * 10 + "z" for i in range(10)]
    assert all(len(tag) == 32 for tag in tags)
    post = await create_post(api, await api.user_token(), tags=tags)
    assert post["tags"] == tags


INVALID_POST_BODIES = [
    ("title-empty", {"title": "", "content": "c"}, ["body", "title"]),
    ("title-201-chars", {"title": "t" * 201, "content": "c"}, ["body", "title"]),
    ("title-missing", {"content": "c"}, ["body", "title"]),
    ("content-empty", {"title": "t", "content": ""}, ["body", "content"]),
    ("content-100001-chars", {"title": "t", "content": "c" * 100_001}, ["body", "content"]),
    ("content-missing", {"title": "t"}, ["body", "content"]),
    ("11-tags", {"title": "t", "content": "c", "tags": [f"t{i}" for i in range(11)]},
     ["body", "tags"]),
    ("tag-empty", {"title": "t", "content": "c", "tags": [""]}, ["body", "tags", 0]),
    ("tag-33-chars", {"title": "t", "content": "c", "tags": ["a" * 33]}, ["body", "tags", 0]),
    ("tag-upper-case", {"title": "t", "content": "c", "tags": ["ok", "Python"]},
     ["body", "tags", 1]),
    ("tag-with-space", {"title": "t", "content": "c", "tags": ["a b"]}, ["body", "tags", 0]),
    ("tag-with-underscore", {"title": "t", "content": "c", "tags": ["a_b"]},
     ["body", "tags", 0]),
    ("tag-non-ascii", {"title": "t", "content": "c", "tags": ["caf\u00e9"]}, ["body", "tags", 0]),
    ("tag-trailing-newline", {"title": "t", "content": "c", "tags": ["abc\n"]},
     ["body", "tags", 0]),
    ("title-number", {"title": 5, "content": "c"}, ["body", "title"]),
    ("title-null", {"title": None, "content": "c"}, ["body", "title"]),
    ("content-list", {"title": "t", "content": ["c"]}, ["body", "content"]),
    ("tags-string", {"title": "t", "content": "c", "tags": "abc"}, ["body", "tags"]),
    ("tags-null", {"title": "t", "content": "c", "tags": None}, ["body", "tags"]),
    ("tag-number", {"title": "t", "content": "c", "tags": [1]}, ["body", "tags", 0]),
    ("unknown-field", {"title": "t", "content": "c", "extra": 1}, ["body", "extra"]),
    ("client-sets-version", {"title": "t", "content": "c", "version": 7}, ["body", "version"]),
    ("client-sets-author", {"title": "t", "content": "c", "author": {"id": "x"}},
     ["body", "author"]),
]

OPERATOR_BODIES = [
    ("title-ne", {"title": {"$ne": None}, "content": "c"}, ["body", "title"]),
    ("content-gt", {"title": "t", "content": {"$gt": ""}}, ["body", "content"]),
    ("tags-in", {"title": "t", "content": "c", "tags": {"$in": ["a"]}}, ["body", "tags"]),
    ("tag-item-ne", {"title": "t", "content": "c", "tags": [{"$ne": 1}]}, ["body", "tags", 0]),
    ("top-level-set", {"title": "t", "content": "c", "$set": {"version": 9}}, ["body", "$set"]),
]


def _ids(cases):
    return [case[0] for case in cases]


@pytest.mark.parametrize("name,body,loc", INVALID_POST_BODIES, ids=_ids(INVALID_POST_BODIES))
@pytest.mark.gen_test
async def test_create_post_rejects_invalid_body_with_422_and_details(api, name, body, loc):
    response = await api.post(POSTS, body, token=await api.user_token())
    assert_validation(response, loc)


@pytest.mark.gen_test
async def test_create_post_unknown_field_detail_says_unknown_field(api):
    response = await api.post(POSTS, {"title": "t", "content": "c", "titel": "x"},
                              token=await api.user_token())
    assert_error(response, 422, "validation_error")
    assert response.json["error"]["details"] == [{"loc": ["body", "titel"],
                                                  "msg": "unknown field"}]


@pytest.mark.parametrize("name,body,loc", OPERATOR_BODIES, ids=_ids(OPERATOR_BODIES))
@pytest.mark.gen_test
async def test_create_post_with_nosql_operator_objects_is_422(api, name, body, loc):
    response = await api.post(POSTS, body, token=await api.user_token())
    assert_validation(response, loc)


@pytest.mark.gen_test
async def test_create_post_invalid_body_writes_nothing(api):
    await api.post(POSTS, {"title": "", "content": "c"}, token=await api.user_token())
    assert await list_ids(api) == []


@pytest.mark.parametrize("raw", ["[]", '"text"', "1", "null", "true", '[{"title": "t"}]'])
@pytest.mark.gen_test
async def test_create_post_with_json_that_is_not_an_object_is_400(api, raw):
    response = await api.post(POSTS, body=raw, content_type="application/json",
                              token=await api.user_token())
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("raw", ["{", "", "{'title': 't'}", '{"title": "t",}', "NaN"])
@pytest.mark.gen_test
async def test_create_post_with_invalid_json_is_400(api, raw):
    response = await api.post(POSTS, body=raw, content_type="application/json",
                              token=await api.user_token())
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded",
                                   "multipart/form-data; boundary=x", "application/jsonx"])
@pytest.mark.gen_test
async def test_create_post_with_wrong_content_type_is_415(api, ctype):
    response = await api.post(POSTS, body='{"title": "t", "content": "c"}', content_type=ctype,
                              token=await api.user_token())
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_create_post_without_content_type_is_415(api):
    response = await api.post(POSTS, body='{"title": "t", "content": "c"}',
                              token=await api.user_token())
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_create_post_accepts_json_with_charset(api):
    response = await api.post(POSTS, body='{"title": "t", "content": "c"}',
                              content_type="application/json; charset=utf-8",
                              token=await api.user_token())
    assert response.code == 201, response.body


# --- read -----------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_get_post_needs_no_token_and_returns_the_post(api):
    created = await create_post(api, await api.user_token(), tags=["x"])
    response = await api.get(f"{POSTS}/{created['id']}")
    assert response.code == 200
    assert response.json == created


@pytest.mark.gen_test
async def test_get_post_carries_etag_of_its_version(api):
    created = await create_post(api, await api.user_token())
    response = await api.get(f"{POSTS}/{created['id']}")
    assert response.headers["ETag"] == '"1"'


@pytest.mark.gen_test
async def test_get_post_with_matching_if_none_match_is_304(api):
    created = await create_post(api, await api.user_token())
    response = await api.get(f"{POSTS}/{created['id']}", headers={"If-None-Match": '"1"'})
    assert response.code == 304
    assert response.body == b""
    assert response.headers["ETag"] == '"1"'


@pytest.mark.gen_test
async def test_get_post_with_stale_if_none_match_is_200(api):
    token = await api.user_token()
    created = await create_post(api, token)
    await api.patch(f"{POSTS}/{created['id']}", {"title": "New"}, token=token)
    response = await api.get(f"{POSTS}/{created['id']}", headers={"If-None-Match": '"1"'})
    assert response.code == 200
    assert response.json["title"] == "New"
    assert response.headers["ETag"] == '"2"'


@pytest.mark.gen_test
async def test_get_unknown_post_is_404(api):
    assert_error(await api.get(f"{POSTS}/{unknown_id()}"), 404, "not_found")


@pytest.mark.parametrize("post_id", MALFORMED_IDS)
@pytest.mark.gen_test
async def test_get_post_with_malformed_id_is_404(api, post_id):
    assert_error(await api.get(f"{POSTS}/{post_id}"), 404, "not_found")


# --- list -----------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_list_posts_needs_no_token_and_has_the_page_shape(api):
    created = await create_post(api, await api.user_token())
    response = await api.get(POSTS)
    assert response.code == 200
    assert response.json == {"items": [created], "next_cursor": None}


@pytest.mark.gen_test
async def test_list_posts_is_newest_first(api):
    token = await api.user_token()
    ids = [(await create_post(api, token, title=f"p{i}"))["id"] for i in range(4)]
    assert await list_ids(api) == ids[::-1]


@pytest.mark.gen_test
async def test_list_posts_default_limit_is_20(api):
    token = await api.user_token()
    for i in range(21):
        await create_post(api, token, title=f"p{i}")
    first = await api.get(POSTS)
    assert len(first.json["items"]) == 20
    assert first.json["next_cursor"]
    second = await api.get(f"{POSTS}?cursor={quote(first.json['next_cursor'])}")
    assert len(second.json["items"]) == 1
    assert second.json["next_cursor"] is None


@pytest.mark.parametrize("limit", [1, 100])
@pytest.mark.gen_test
async def test_list_posts_accepts_limit_1_to_100(api, limit):
    token = await api.user_token()
    for i in range(2):
        await create_post(api, token, title=f"p{i}")
    response = await api.get(f"{POSTS}?limit={limit}")
    assert response.code == 200
    assert len(response.json["items"]) == min(limit, 2)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "abc", "", "1.5", "1e2"])
@pytest.mark.gen_test
async def test_list_posts_with_invalid_limit_is_422(api, limit):
    assert_validation(await api.get(f"{POSTS}?limit={limit}"), ["query", "limit"])


@pytest.mark.gen_test
async def test_list_posts_pages_through_every_post_once_in_order(api):
    token = await api.user_token()
    ids = [(await create_post(api, token, title=f"p{i}"))["id"] for i in range(5)]
    seen, cursor = [], None
    for _ in range(10):
        response = await api.get(page_url(POSTS, cursor))
        assert response.code == 200
        assert len(response.json["items"]) <= 2
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


@pytest.mark.gen_test
async def test_list_posts_paging_while_others_insert_neither_skips_nor_repeats(api):
    token = await api.user_token()
    existing = [(await create_post(api, token, title=f"old{i}"))["id"] for i in range(6)]
    seen, cursor = [], None
    for page in range(10):
        response, *_ = await asyncio.gather(
            api.get(page_url(POSTS, cursor)),
            *(create_post(api, token, title=f"new{page}-{i}") for i in range(2)))
        assert response.code == 200
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "an item was repeated"
    assert [i for i in seen if i in existing] == existing[::-1]


@pytest.mark.gen_test
async def test_list_posts_pages_posts_created_in_the_same_millisecond(api, server):
    """Ties on created_at are broken by id, so a page boundary inside a tie loses nothing."""
    token = await api.user_token()
    ids = [(await create_post(api, token, title=f"p{i}"))["id"] for i in range(5)]
    same = (await api.get(f"{POSTS}/{ids[0]}")).json["created_at"]
    when = datetime.strptime(same, "%Y-%m-%dT%H:%M:%S.%fZ")
    await server.ctx.db["posts"].update_many({}, {"$set": {"created_at": when}})
    seen, cursor = [], None
    for _ in range(10):
        response = await api.get(page_url(POSTS, cursor))
        seen += [item["id"] for item in response.json["items"]]
        cursor = response.json["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


GARBAGE_CURSORS = [
    ("not-base64", "!!!!"),
    ("base64-of-text", base64.urlsafe_b64encode(b"hello world").decode()),
    ("base64-of-non-utf8", base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode()),
    ("json-object", raw_cursor({"$gt": ""})),
    ("wrong-arity", raw_cursor(["posts", 1])),
    ("bad-object-id", raw_cursor(["posts", {"t": 0}, "zzzzzzzzzzzzzzzzzzzzzzzz"])),
    ("operator-value", raw_cursor(["posts", {"$gt": 0}, str(ObjectId())])),
    ("null-value", raw_cursor(["posts", None, str(ObjectId())])),
    ("float-time", raw_cursor(["posts", {"t": 1.5}, str(ObjectId())])),
    ("time-out-of-range", raw_cursor(["posts", {"t": 10 ** 20}, str(ObjectId())])),
    ("time-far-negative", raw_cursor(["posts", {"t": -10 ** 20}, str(ObjectId())])),
    ("time-year-out-of-range", raw_cursor(["posts", {"t": 10 ** 15}, str(ObjectId())])),
    ("time-huge-integer", raw_cursor(["posts", {"t": 10 ** 400}, str(ObjectId())])),
    ("another-listing", raw_cursor(["comments", {"t": 0}, str(ObjectId())])),
    ("too-long", "A" * 600),
    ("non-ascii", "\u00e9t\u00e9"),
]


@pytest.mark.parametrize("name,cursor", GARBAGE_CURSORS, ids=_ids(GARBAGE_CURSORS))
@pytest.mark.gen_test
async def test_list_posts_with_garbage_cursor_is_422(api, name, cursor):
    assert_validation(await api.get(f"{POSTS}?cursor={quote(cursor)}"), ["query", "cursor"])


@pytest.mark.gen_test
async def test_list_posts_filters_by_author_username_case_insensitively(api):
    alice, bob = await api.user_token("alice"), await api.user_token("Bob")
    mine = (await create_post(api, alice))["id"]
    theirs = (await create_post(api, bob))["id"]
    assert await list_ids(api, "?author=ALICE") == [mine]
    assert await list_ids(api, "?author=bob") == [theirs]


@pytest.mark.gen_test
async def test_list_posts_by_unknown_author_is_empty(api):
    await create_post(api, await api.user_token("alice"))
    response = await api.get(f"{POSTS}?author=nobody")
    assert response.code == 200
    assert response.json == {"items": [], "next_cursor": None}


@pytest.mark.gen_test
async def test_list_posts_filters_by_tag(api):
    token = await api.user_token()
    tagged = (await create_post(api, token, tags=["python", "web"]))["id"]
    await create_post(api, token, tags=["go"])
    await create_post(api, token)
    assert await list_ids(api, "?tag=python") == [tagged]
    assert await list_ids(api, "?tag=nothing") == []


@pytest.mark.gen_test
async def test_list_posts_author_and_tag_filters_combine(api):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    wanted = (await create_post(api, alice, tags=["x"]))["id"]
    await create_post(api, alice, tags=["y"])
    await create_post(api, bob, tags=["x"])
    assert await list_ids(api, "?author=alice&tag=x") == [wanted]


@pytest.mark.gen_test
async def test_list_posts_filtered_pages_keep_the_filter(api):
    alice, bob = await api.user_token("alice"), await api.user_token("bob")
    mine = []
    for i in range(3):
        mine.append((await create_post(api, alice, title=f"a{i}"))["id"])
        await create_post(api, bob, title=f"b{i}")
    first = await api.get(f"{POSTS}?author=alice&limit=2")
    second = await api.get(page_url(f"{POSTS}?author=alice", first.json["next_cursor"]))
    seen = [p["id"] for p in first.json["items"] + second.json["items"]]
    assert seen == mine[::-1]
    assert second.json["next_cursor"] is None


QUERY_INJECTIONS = [
    "?author[$ne]=x",
    "?author[$ne]=",
    "?tag[$gt]=",
    "?tag[$regex]=.*",
    "?tag[$exists]=true",
    "?author[$where]=1",
    "?limit[$gt]=0",
    "?cursor[$ne]=x",
    "?author=" + quote('{"$ne": null}'),
    "?tag=" + quote('{"$gt": ""}'),
    "?author=%24ne",
    "?tag=%00",
    "?author=" + quote(".*"),
    "?author=a&author[$ne]=b",
]


@pytest.mark.parametrize("query", QUERY_INJECTIONS)
@pytest.mark.gen_test
async def test_list_posts_with_operators_in_the_query_string_is_never_500(api, query):
    await create_post(api, await api.user_token("alice"), tags=["t"])
    response = await api.get(POSTS + query)
    assert response.code < 500, (response.code, response.body)
    if response.code != 200:
        assert_error(response, response.code, response.json["error"]["code"])


@pytest.mark.parametrize("query", ["?author=" + quote('{"$ne": null}'), "?author=" + quote(".*"),
                                   "?tag=" + quote('{"$gt": ""}'), "?tag=" + quote(".*")])
@pytest.mark.gen_test
async def test_list_posts_filter_values_are_literal_not_operators(api, query):
    await create_post(api, await api.user_token("alice"), tags=["t"])
    assert await list_ids(api, query) == []


# --- update ---------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_put_replaces_the_editable_fields(api):
    token = await api.user_token()
    post = await create_post(api, token, tags=["old"])
    response = await api.put(f"{POSTS}/{post['id']}",
                             {"title": "T2", "content": "C2", "tags": ["new"]}, token=token)
    assert response.code == 200, response.body
    assert (response.json["title"], response.json["content"], response.json["tags"]) == \
        ("T2", "C2", ["new"])
    assert response.json["version"] == 2
    assert response.headers["ETag"] == '"2"'
    assert (await api.get(f"{POSTS}/{post['id']}")).json == response.json


@pytest.mark.gen_test
async def test_put_without_tags_leaves_no_tags(api):
    token = await api.user_token()
    post = await create_post(api, token, tags=["old"])
    response = await api.put(f"{POSTS}/{post['id']}", {"title": "T", "content": "C"}, token=token)
    assert response.code == 200
    assert response.json["tags"] == []


@pytest.mark.parametrize("body,loc", [({"title": "T"}, ["body", "content"]),
                                      ({"content": "C"}, ["body", "title"])])
@pytest.mark.gen_test
async def test_put_requires_title_and_content(api, body, loc):
    token = await api.user_token()
    post = await create_post(api, token)
    assert_validation(await api.put(f"{POSTS}/{post['id']}", body, token=token), loc)


@pytest.mark.gen_test
async def test_patch_changes_only_the_given_fields(api):
    token = await api.user_token()
    post = await create_post(api, token, tags=["keep"])
    response = await api.patch(f"{POSTS}/{post['id']}", {"content": "changed"}, token=token)
    assert response.code == 200, response.body
    assert response.json["content"] == "changed"
    assert response.json["title"] == post["title"]
    assert response.json["tags"] == ["keep"]
    assert response.json["version"] == 2
    assert response.headers["ETag"] == '"2"'


@pytest.mark.gen_test
async def test_patch_with_empty_body_is_422(api):
    token = await api.user_token()
    post = await create_post(api, token)
    assert_validation(await api.patch(f"{POSTS}/{post['id']}", {}, token=token), ["body"])


@pytest.mark.parametrize("field", ["title", "content", "tags"])
@pytest.mark.gen_test
async def test_patch_with_null_field_is_422(api, field):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.patch(f"{POSTS}/{post['id']}", {field: None}, token=token)
    assert_validation(response, ["body", field])


@pytest.mark.parametrize("name,body,loc", [
    case for case in INVALID_POST_BODIES + OPERATOR_BODIES
    if "missing" not in case[0] and "null" not in case[0]],
    ids=_ids([case for case in INVALID_POST_BODIES + OPERATOR_BODIES
              if "missing" not in case[0] and "null" not in case[0]]))
@pytest.mark.gen_test
async def test_patch_rejects_invalid_fields_with_422(api, name, body, loc):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.patch(f"{POSTS}/{post['id']}", body, token=token)
    assert_validation(response, loc)


# PUT validates with the create model; a sample of each kind of rule shows it is applied.
PUT_SAMPLE = [case for case in INVALID_POST_BODIES + OPERATOR_BODIES if case[0] in {
    "title-201-chars", "content-empty", "11-tags", "tag-upper-case", "title-number",
    "unknown-field", "client-sets-version", "title-ne", "top-level-set"}]


@pytest.mark.parametrize("name,body,loc", PUT_SAMPLE, ids=_ids(PUT_SAMPLE))
@pytest.mark.gen_test
async def test_put_rejects_invalid_body_with_422(api, name, body, loc):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.put(f"{POSTS}/{post['id']}", body, token=token)
    assert_validation(response, loc)


@pytest.mark.gen_test
async def test_invalid_patch_writes_nothing(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await api.patch(f"{POSTS}/{post['id']}", {"title": "ok", "tags": ["BAD"]}, token=token)
    assert (await api.get(f"{POSTS}/{post['id']}")).json == post


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.gen_test
async def test_update_with_json_that_is_not_an_object_is_400(api, method):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.request(method, f"{POSTS}/{post['id']}", body='["title"]',
                                 content_type="application/json", token=token)
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.gen_test
async def test_update_with_invalid_json_is_400(api, method):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.request(method, f"{POSTS}/{post['id']}", body='{"title": ',
                                 content_type="application/json", token=token)
    assert_error(response, 400, "invalid_json")


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.gen_test
async def test_update_with_wrong_content_type_is_415(api, method):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.request(method, f"{POSTS}/{post['id']}",
                                 body='{"title": "t", "content": "c"}',
                                 content_type="text/plain", token=token)
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.gen_test
async def test_update_keeps_created_at_and_moves_updated_at(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await asyncio.sleep(0.005)
    response = await api.patch(f"{POSTS}/{post['id']}", {"title": "New"}, token=token)
    assert response.json["created_at"] == post["created_at"]
    assert ISO_Z.match(response.json["updated_at"])
    assert response.json["updated_at"] > post["updated_at"]


@pytest.mark.gen_test
async def test_version_goes_up_by_one_on_every_change(api):
    token = await api.user_token()
    post = await create_post(api, token)
    url = f"{POSTS}/{post['id']}"
    versions = [(await api.patch(url, {"title": f"t{i}"}, token=token)).json["version"]
                for i in range(3)]
    versions.append((await api.put(url, {"title": "t", "content": "c"}, token=token))
                    .json["version"])
    assert versions == [2, 3, 4, 5]
    response = await api.get(url)
    assert response.json["version"] == 5
    assert response.headers["ETag"] == '"5"'


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.gen_test
async def test_changing_a_post_without_token_is_401(api, method):
    post = await create_post(api, await api.user_token())
    body = None if method == "DELETE" else {"title": "t", "content": "c"}
    response = await api.request(method, f"{POSTS}/{post['id']}", json_body=body)
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.get(f"{POSTS}/{post['id']}")).json == post


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.gen_test
async def test_changing_someone_elses_post_is_403_and_writes_nothing(api, method):
    post = await create_post(api, await api.user_token("alice"))
    mallory = await api.user_token("mallory")
    body = None if method == "DELETE" else {"title": "pwned", "content": "pwned"}
    response = await api.request(method, f"{POSTS}/{post['id']}", json_body=body, token=mallory)
    assert_error(response, 403, "forbidden")
    assert (await api.get(f"{POSTS}/{post['id']}")).json == post


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.gen_test
async def test_admin_may_edit_anyones_post(api, server, method):
    post = await create_post(api, await api.user_token("alice"))
    admin = await api.admin_token(server, "root")
    response = await api.request(method, f"{POSTS}/{post['id']}",
                                 json_body={"title": "moderated", "content": "c"}, token=admin)
    assert response.code == 200, response.body
    assert response.json["title"] == "moderated"
    assert response.json["author"] == post["author"]
    assert response.json["version"] == 2


@pytest.mark.gen_test
async def test_admin_may_delete_anyones_post(api, server):
    post = await create_post(api, await api.user_token("alice"))
    admin = await api.admin_token(server, "root")
    response = await api.delete(f"{POSTS}/{post['id']}", token=admin)
    assert response.code == 204
    assert_error(await api.get(f"{POSTS}/{post['id']}"), 404, "not_found")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.gen_test
async def test_changing_an_unknown_post_is_404(api, method):
    token = await api.user_token()
    body = None if method == "DELETE" else {"title": "t", "content": "c"}
    response = await api.request(method, f"{POSTS}/{unknown_id()}", json_body=body, token=token)
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("post_id", MALFORMED_IDS)
@pytest.mark.gen_test
async def test_changing_a_post_with_malformed_id_is_404(api, method, post_id):
    token = await api.user_token()
    body = None if method == "DELETE" else {"title": "t", "content": "c"}
    response = await api.request(method, f"{POSTS}/{post_id}", json_body=body, token=token)
    assert_error(response, 404, "not_found")


# --- If-Match -------------------------------------------------------------------------------


@pytest.mark.parametrize("if_match", ['"1"', "*", '"7", "1"'])
@pytest.mark.gen_test
async def test_patch_with_matching_if_match_succeeds(api, if_match):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.patch(f"{POSTS}/{post['id']}", {"title": "New"}, token=token,
                               headers={"If-Match": if_match})
    assert response.code == 200, response.body
    assert response.json["version"] == 2


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.parametrize("if_match", ['"2"', '"0"', "garbage", '""'])
@pytest.mark.gen_test
async def test_update_with_mismatched_if_match_is_412_and_writes_nothing(api, method, if_match):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.request(method, f"{POSTS}/{post['id']}", token=token,
                                 json_body={"title": "New", "content": "New"},
                                 headers={"If-Match": if_match})
    assert_error(response, 412, "precondition_failed")
    after = await api.get(f"{POSTS}/{post['id']}")
    assert after.json == post
    assert after.headers["ETag"] == '"1"'


@pytest.mark.gen_test
async def test_update_with_the_etag_of_an_older_version_is_412(api):
    token = await api.user_token()
    post = await create_post(api, token)
    url = f"{POSTS}/{post['id']}"
    etag = (await api.get(url)).headers["ETag"]
    await api.patch(url, {"title": "first"}, token=token, headers={"If-Match": etag})
    response = await api.patch(url, {"title": "second"}, token=token, headers={"If-Match": etag})
    assert_error(response, 412, "precondition_failed")
    assert (await api.get(url)).json["title"] == "first"


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
@pytest.mark.gen_test
async def test_two_concurrent_writers_with_the_same_if_match_exactly_one_wins(api, method):
    token = await api.user_token()
    post = await create_post(api, token)
    url = f"{POSTS}/{post['id']}"
    first, second = await asyncio.gather(*(
        api.request(method, url, json_body={"title": name, "content": name}, token=token,
                    headers={"If-Match": '"1"'})
        for name in ("first", "second")))
    assert sorted([first.code, second.code]) == [200, 412], (first.body, second.body)
    winner, loser = (first, second) if first.code == 200 else (second, first)
    assert_error(loser, 412, "precondition_failed")
    current = (await api.get(url)).json
    assert current == winner.json
    assert current["version"] == 2


@pytest.mark.gen_test
async def test_concurrent_patches_without_if_match_each_bump_the_version(api):
    token = await api.user_token()
    post = await create_post(api, token)
    url = f"{POSTS}/{post['id']}"
    responses = await asyncio.gather(*(api.patch(url, {"title": f"t{i}"}, token=token)
                                       for i in range(4)))
    assert sorted(r.json["version"] for r in responses) == [2, 3, 4, 5]
    assert (await api.get(url)).json["version"] == 5


# --- delete ---------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_delete_post_is_204_and_then_it_is_gone(api):
    token = await api.user_token()
    post = await create_post(api, token)
    response = await api.delete(f"{POSTS}/{post['id']}", token=token)
    assert response.code == 204
    assert response.body == b""
    assert_error(await api.get(f"{POSTS}/{post['id']}"), 404, "not_found")
    assert await list_ids(api) == []


@pytest.mark.gen_test
async def test_deleting_a_post_twice_is_404(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await api.delete(f"{POSTS}/{post['id']}", token=token)
    assert_error(await api.delete(f"{POSTS}/{post['id']}", token=token), 404, "not_found")


@pytest.mark.gen_test
async def test_updating_a_deleted_post_is_404(api):
    token = await api.user_token()
    post = await create_post(api, token)
    await api.delete(f"{POSTS}/{post['id']}", token=token)
    response = await api.patch(f"{POSTS}/{post['id']}", {"title": "zombie"}, token=token)
    assert_error(response, 404, "not_found")
