"""The read cache seen from outside: a post or product read by id comes from the process's
cache, and every write the server makes, by any route, is seen by the very next read."""

import asyncio
import os

import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.blog_helpers import POSTS, create_post
from tests.test_metrics import scrape
from tests.test_products import PRODUCTS, product_body
from tornado_app.storage.db import Database
from tornado_app.storage.read_cache import MAX_AGE

ON_FERRETDB = not os.environ.get("TEST_MONGODB_URI")


@pytest.fixture
def settings_overrides():
    # `on`, so these run against MongoDB too (where `auto` leaves it off).
    return {"read_cache": "on"}


async def read_twice(api, path):
    first = await api.get(path)
    second = await api.get(path)
    assert first.code == second.code == 200, (first.body, second.body)
    return second.json


async def cached_post(api, token=None) -> tuple[str, str]:
    """A new post read twice (so it is in the cache): (its path, the author's token)."""
    token = token or await api.user_token()
    post = await create_post(api, token)
    path = f"{POSTS}/{post['id']}"
    await read_twice(api, path)
    return path, token


@pytest.mark.gen_test
async def test_a_post_read_again_comes_from_the_cache(api):
    await cached_post(api)
    metrics = await scrape(api)
    assert metrics.value("tornado_app_read_cache_hits_total") == 1
    assert metrics.value("tornado_app_read_cache_misses_total") == 1


@pytest.mark.gen_test
async def test_the_author_reads_an_edit_at_once(api):
    path, token = await cached_post(api)
    edited = await api.patch(path, {"title": "Edited"}, token=token)
    assert edited.code == 200, edited.body
    after = (await api.get(path)).json
    assert (after["title"], after["version"]) == ("Edited", 2)


@pytest.mark.gen_test
async def test_a_new_comment_is_counted_in_the_next_read(api):
    path, token = await cached_post(api)
    comment = await api.post(f"{path}/comments", {"body": "First"}, token=token)
    assert comment.code == 201, comment.body
    assert (await api.get(path)).json["comment_count"] == 1


@pytest.mark.gen_test
async def test_a_deleted_post_is_not_found_at_once(api):
    path, token = await cached_post(api)
    assert (await api.delete(path, token=token)).code == 204
    assert (await api.get(path)).code == 404


@pytest.mark.gen_test
async def test_a_product_change_is_read_at_once(api, server):
    admin = await api.admin_token(server)
    created = await api.post(PRODUCTS, product_body(stock=5), token=admin)
    assert created.code == 201, created.body
    path = f"{PRODUCTS}/{created.json['id']}"
    await read_twice(api, path)
    changed = await api.patch(path, {"stock": 2}, token=admin)
    assert changed.code == 200, changed.body
    assert (await api.get(path)).json["stock"] == 2


@pytest.mark.gen_test
async def test_a_cached_post_still_answers_if_none_match(api):
    path, token = await cached_post(api)
    assert (await api.get(path, headers={"If-None-Match": '"1"'})).code == 304
    await api.patch(path, {"title": "Edited"}, token=token)
    fresh = await api.get(path, headers={"If-None-Match": '"1"'})
    assert fresh.code == 200 and fresh.headers["ETag"] == '"2"'


@pytest.mark.gen_test
async def test_any_write_of_the_process_empties_the_cache(api, server):
    path, _ = await cached_post(api)
    # Not through a store: the write client's listener sees every write, whatever sends it.
    await server.ctx.db["posts"].update_one({"_id": ObjectId(path.rsplit("/", 1)[1])},
                                            {"$set": {"title": "Written directly"}})
    assert (await api.get(path)).json["title"] == "Written directly"


@pytest.mark.gen_test
async def test_a_write_by_another_process_is_read_within_max_age(api, settings):
    # What READ_CACHE=on promises does not happen (no other process writes); bounded anyway.
    path, _ = await cached_post(api)
    with MongoClient(settings.mongodb_uri, serverSelectionTimeoutMS=3000) as other:
        other[settings.mongodb_db]["posts"].update_one(
            {"_id": ObjectId(path.rsplit("/", 1)[1])}, {"$set": {"title": "From elsewhere"}})
    await asyncio.sleep(MAX_AGE + 0.1)
    assert (await api.get(path)).json["title"] == "From elsewhere"


@pytest.mark.gen_test
@pytest.mark.parametrize("only_writer, expected", [(True, ON_FERRETDB), (False, False)])
async def test_auto_caches_only_for_the_one_writer_of_a_ferretdb(mongodb_uri, db_name,
                                                                 only_writer, expected):
    db = await Database.connect(mongodb_uri, db_name, 3, read_cache="auto",
                                only_writer=only_writer)
    try:
        assert (db.cache is not None) is expected
    finally:
        await db.close()


@pytest.mark.gen_test
async def test_off_turns_it_off(mongodb_uri, db_name):
    db = await Database.connect(mongodb_uri, db_name, 3, read_cache="off", only_writer=True)
    try:
        assert db.cache is None
    finally:
        await db.close()
