"""What both peers send: an event the size and shape of our server's post.created frame."""

import json

EVENT = json.dumps({"type": "event", "event": {
    "seq": 1, "channel": "posts", "type": "post.created",
    "data": {"id": "6650f0c2a1b2c3d4e5f60718", "title": "Benchmark post",
             "content": "One event to every subscriber.", "tags": ["bench"],
             "author": {"id": "6650f0c2a1b2c3d4e5f60719", "username": "bench"},
             "comment_count": 0, "version": 1, "created_at": "2025-01-01T00:00:00.000Z",
             "updated_at": "2025-01-01T00:00:00.000Z"},
    "created_at": "2025-01-01T00:00:00.000Z"}}, separators=(",", ":"))


def post_json(doc: dict) -> str:
    """A post document as JSON (ObjectId and datetimes as strings), like the API's shape."""
    return json.dumps({"id": str(doc["_id"]), "title": doc["title"], "content": doc["content"],
                       "tags": doc["tags"], "author": {"id": str(doc["author_id"]),
                                                       "username": doc["author_username"]},
                       "comment_count": doc["comment_count"], "version": doc["version"],
                       "created_at": doc["created_at"].isoformat(),
                       "updated_at": doc["updated_at"].isoformat()}, separators=(",", ":"))


def titled_event(body: bytes) -> str:
    """The event to broadcast: EVENT, or with the title of a JSON body {"title": ...} (the
    `rate` scenario puts the time it published the event there, to time its delivery)."""
    if not body:
        return EVENT
    title = json.loads(body)["title"]
    return EVENT.replace('"title":"Benchmark post"', '"title":' + json.dumps(title), 1)
