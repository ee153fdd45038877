"""The outbox's pieces on a real database: what a process that died half-way leaves behind, and
what the next one (or a second offer of the same change) makes of it."""

import pytest
from bson import ObjectId

from tests.realtime_helpers import create_posts, expire_events, publish
from tornado_app.core.clock import utcnow
from tornado_app.storage.outbox import entry
from tornado_app.blog.posts import comment_public, post_public


async def _events(server, type_=None):
    query = {"type": type_} if type_ else {}
    return await server.ctx.db["events"].find(query).sort("_id", 1).to_list(None)


async def _post_left_pending(server, title="left behind") -> dict:
    """A post stored with its event still pending: the process died right after the write."""
    now = utcnow()
    user = await server.ctx.db["users"].find_one({})
    doc = {"_id": ObjectId(), "title": title, "content": "x", "tags": [],
           "author_id": user["_id"], "author_username": user["username"], "comment_count": 0,
           "version": 1, "created_at": now, "updated_at": now}
    doc["_outbox"] = [entry("posts", "post.created", post_public(doc), doc["_id"])]
    await server.ctx.db["posts"].insert_one(doc)
    return doc


@pytest.mark.gen_test
async def test_the_sweep_stores_an_event_a_dead_process_left_pending(api, server):
    await api.user_token()
    doc = await _post_left_pending(server)
    assert await server.ctx.outbox.sweep() == 1
    (event,) = await _events(server, "post.created")
    assert event["data"]["id"] == str(doc["_id"]) and event["cid"] == doc["_id"]
    await server.ctx.outbox.clear_stored()
    assert (await server.ctx.db["posts"].find_one({"_id": doc["_id"]}))["_outbox"] == []


@pytest.mark.gen_test
async def test_a_change_offered_twice_has_one_event(api, server):
    await api.user_token()
    doc = await _post_left_pending(server)
    # Two offers from the same (now stale) image: a request and a sweep, or two workers.
    await server.ctx.outbox.flush("posts", doc)
    server.ctx.outbox._stored.clear()
    await server.ctx.outbox.flush("posts", doc)
    await server.ctx.outbox.sweep()
    assert len(await _events(server, "post.created")) == 1


@pytest.mark.gen_test
async def test_an_event_retention_removed_is_not_stored_again(api, server):
    await api.user_token()
    doc = await _post_left_pending(server)
    await server.ctx.outbox.flush("posts", doc)
    # The process died before taking the stored entry out of the document, and stayed down
    # longer than the retention: the event is gone from the log, the entry is not.
    server.ctx.outbox._stored.clear()
    server.ctx.outbox._to_clear.clear()
    (first,) = await _events(server, "post.created")
    await publish(server, "posts", 1)
    await expire_events(server, first["_id"])
    assert await server.ctx.outbox.sweep() == 0
    assert await _events(server, "post.created") == []


@pytest.mark.gen_test
async def test_a_later_change_does_not_store_again_an_event_retention_removed(api, server):
    await api.user_token()
    doc = await _post_left_pending(server)
    await server.ctx.outbox.flush("posts", doc)
    server.ctx.outbox._stored.clear()  # stored by a process that died before taking it out
    server.ctx.outbox._to_clear.clear()
    (first,) = await _events(server, "post.created")
    await publish(server, "posts", 1)
    await expire_events(server, first["_id"])
    # A change of the same post, made by a process that knows nothing of the leftover entry.
    update = entry("posts", "post.updated", {"id": str(doc["_id"])})
    image = await server.ctx.db["posts"].find_one_and_update(
        {"_id": doc["_id"]}, {"$push": {"_outbox": update}}, return_document=True)
    await server.ctx.outbox.flush("posts", image)
    assert await _events(server, "post.created") == []
    assert len(await _events(server, "post.updated")) == 1


@pytest.mark.gen_test
async def test_a_change_newer_than_the_retained_events_is_stored_after_retention(api, server):
    await api.user_token()
    await publish(server, "posts", 2)
    await expire_events(server, 1)
    doc = await _post_left_pending(server)
    assert await server.ctx.outbox.sweep() == 1
    (event,) = await _events(server, "post.created")
    assert event["cid"] == doc["_id"]


@pytest.mark.gen_test
async def test_a_comment_offered_twice_is_counted_once(api, server):
    token = await api.user_token()
    await create_posts(api, token, 1)
    post = await server.ctx.db["posts"].find_one({})
    comment = {"_id": ObjectId(), "post_id": post["_id"], "body": "hi",
               "author_id": post["author_id"], "author_username": "alice",
               "created_at": utcnow()}
    comment["_outbox"] = [entry(f"post:{post['_id']}", "comment.created",
                                comment_public(comment), comment["_id"], count=1)]
    await server.ctx.db["comments"].insert_one(comment)
    await server.ctx.outbox.flush("comments", comment)
    # Offered again from the same image by a process that does not know it is stored (another
    # worker, or a restart after a crash between counting and storing the event).
    server.ctx.outbox._stored.clear()
    await server.ctx.outbox.flush("comments", comment)
    response = await api.get(f"/api/v1/posts/{post['_id']}")
    assert response.json["comment_count"] == 1
    assert len(await _events(server, "comment.created")) == 1


@pytest.mark.gen_test
async def test_a_comment_left_pending_on_a_deleted_post_is_void(api, server):
    token = await api.user_token()
    await create_posts(api, token, 1)
    post = await server.ctx.db["posts"].find_one({})
    comment = {"_id": ObjectId(), "post_id": post["_id"], "body": "late",
               "author_id": post["author_id"], "author_username": "alice",
               "created_at": utcnow()}
    comment["_outbox"] = [entry(f"post:{post['_id']}", "comment.created",
                                comment_public(comment), comment["_id"], count=1)]
    assert (await api.delete(f"/api/v1/posts/{post['_id']}", token=token)).code == 204
    await server.ctx.db["comments"].insert_one(comment)
    await server.ctx.outbox.sweep()
    assert await server.ctx.db["comments"].count_documents({}) == 0
    assert await _events(server, "comment.created") == []


@pytest.mark.gen_test
async def test_a_tombstone_is_never_shown(api, server):
    token = await api.user_token()
    await create_posts(api, token, 2)
    gone = await server.ctx.db["posts"].find_one({"title": "post 0"})
    # A deletion whose event is still pending: the process died after the tombstone.
    await server.ctx.db["posts"].update_one(
        {"_id": gone["_id"]},
        {"$set": {"_gone": True, "_gone_at": utcnow()},
         "$push": {"_outbox": entry("posts", "post.deleted", {"id": str(gone["_id"])},
                                    cascade=True)}})
    assert (await api.get(f"/api/v1/posts/{gone['_id']}")).code == 404
    titles = [item["title"] for item in (await api.get("/api/v1/posts")).json["items"]]
    assert titles == ["post 1"]
    await server.ctx.outbox.sweep()
    assert await server.ctx.db["posts"].find_one({"_id": gone["_id"]}) is None
    assert len(await _events(server, "post.deleted")) == 1


@pytest.mark.gen_test
async def test_events_of_one_resource_follow_its_versions(api, server):
    token = await api.user_token()
    await create_posts(api, token, 1)
    post_id = (await api.get("/api/v1/posts")).json["items"][0]["id"]
    responses = [api.patch(f"/api/v1/posts/{post_id}", {"title": f"v{n}"}, token=token)
                 for n in range(10)]
    for response in responses:
        assert (await response).code == 200
    versions = [event["data"]["version"] for event in await _events(server)
                if event["data"].get("id") == post_id]
    assert versions == sorted(versions) and len(versions) == 11


# --- taking stored entries out on FerretDB: one document at a time, only while quiet ---------

async def _pending_entries(server, ids) -> list:
    docs = await server.ctx.db["posts"].find({"_id": {"$in": ids}}).to_list(None)
    return [len(doc.get("_outbox") or ()) for doc in docs]


@pytest.mark.gen_test
async def test_stored_entries_are_taken_out_of_every_document_when_writes_are_quiet(api, server):
    await api.user_token()
    docs = [await _post_left_pending(server, f"left {n}") for n in range(3)]
    await server.ctx.outbox.sweep()
    server.ctx.outbox.events.last_published -= 60  # the last event was stored a minute ago
    await server.ctx.outbox.clear_stored(until_busy=True)
    assert await _pending_entries(server, [doc["_id"] for doc in docs]) == [0, 0, 0]


@pytest.mark.gen_test
async def test_entries_are_not_taken_out_while_events_are_being_stored(api, server, monkeypatch):
    """On FerretDB each of those updates reads the whole collection and holds the one write
    connection: requests that store events are not kept waiting behind them."""
    outbox = server.ctx.outbox
    assert outbox.per_document  # the tests run on FerretDB
    await api.user_token()
    docs = [await _post_left_pending(server, f"left {n}") for n in range(2)]
    await outbox.sweep()
    ids = [doc["_id"] for doc in docs]
    await publish(server, "posts", 1)  # another request stores an event just now
    await outbox.clear_stored(until_busy=True)
    assert await _pending_entries(server, ids) == [1, 1]
    monkeypatch.setattr("tornado_app.storage.outbox.CLEAR_QUIET", 0.0)  # quiet since
    await outbox.clear_stored(until_busy=True)
    assert await _pending_entries(server, ids) == [0, 0]


@pytest.mark.gen_test
async def test_an_entry_left_in_its_document_is_not_stored_again_after_a_restart(api, server):
    await api.user_token()
    doc = await _post_left_pending(server)
    await server.ctx.outbox.flush("posts", doc)
    # Never taken out (the server was never quiet), then the process restarted.
    server.ctx.outbox._stored.clear()
    server.ctx.outbox._to_clear.clear()
    assert await server.ctx.outbox.sweep() == 0
    assert len(await _events(server, "post.created")) == 1
