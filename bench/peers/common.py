"""What both peers send: an event the size and shape of our server's post.created frame."""

import json

# The body of a typical blog post (the compression scenario posts it to every target): a few
# paragraphs of prose, about 1 KB.
TYPICAL_TITLE = "What we learned moving our realtime feed to a durable event log"
TYPICAL_CONTENT = (
    "For two years our realtime feed was a best-effort broadcast: a server kept the list of "
    "connected clients in memory and wrote every change to each of them as it happened. It "
    "worked well enough until the first deploy that restarted every process at once, when "
    "thousands of clients reconnected and none of them knew what they had missed.\n\n"
    "The fix was not a faster broadcast but a log. Every change is stored first, with a "
    "sequence number, and the broadcast only tells subscribers that something new is there. "
    "A client that reconnects says which number it saw last and gets exactly what came after, "
    "from the log, before it goes live again.\n\n"
    "Most of the work was in the seams: the moment a replay hands over to the live stream, the "
    "retention window that decides how far back a client may resume, and the slow consumer "
    "that must be dropped rather than allowed to hold everyone else back. Each of these has a "
    "test now, and each test talks to a real server over a real socket.")


def event(content: str = "One event to every subscriber.",
          title: str = "Benchmark post") -> str:
    return json.dumps({"type": "event", "event": {
        "seq": 1, "channel": "posts", "type": "post.created",
        "data": {"id": "6650f0c2a1b2c3d4e5f60718", "title": title,
                 "content": content, "tags": ["bench"],
                 "author": {"id": "6650f0c2a1b2c3d4e5f60719", "username": "bench"},
                 "comment_count": 0, "version": 1, "created_at": "2025-01-01T00:00:00.000Z",
                 "updated_at": "2025-01-01T00:00:00.000Z"},
        "created_at": "2025-01-01T00:00:00.000Z"}}, separators=(",", ":"))


# Another post, sent just before the typical one in the compression scenario: the typical
# event is then what a subscriber in a stream gets, the one before it still in its window (a
# compressor that keeps its context refers back to its keys and envelope; its prose differs).
EARLIER_TITLE = "Release notes"
EARLIER_CONTENT = "A short note about the release schedule for next month."

EVENT = event()
TYPICAL_EVENT = event(TYPICAL_CONTENT, TYPICAL_TITLE)
EARLIER_EVENT = event(EARLIER_CONTENT, EARLIER_TITLE)


def post_json(doc: dict) -> str:
    """A post document as JSON (ObjectId and datetimes as strings), like the API's shape."""
    return json.dumps({"id": str(doc["_id"]), "title": doc["title"], "content": doc["content"],
                       "tags": doc["tags"], "author": {"id": str(doc["author_id"]),
                                                       "username": doc["author_username"]},
                       "comment_count": doc["comment_count"], "version": doc["version"],
                       "created_at": doc["created_at"].isoformat(),
                       "updated_at": doc["updated_at"].isoformat()}, separators=(",", ":"))


def titled_event(body: bytes, base: str = EVENT) -> str:
    """The event to broadcast: `base`, or with the title of a JSON body {"title": ...} (the
    `rate` scenario puts the time it published the event there, to time its delivery)."""
    if not body:
        return base
    message = json.loads(base)
    message["event"]["data"]["title"] = json.loads(body)["title"]
    return json.dumps(message, separators=(",", ":"))
