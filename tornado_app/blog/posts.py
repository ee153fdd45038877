"""Blog posts and their comments.

Every change goes through the outbox (tornado_app/storage/outbox.py): the write that makes it carries its
pending event. A comment's event also carries the ±1 for its post's `comment_count`, applied
once, and a post's deletion removes its comments, so a crash at any point leaves neither a
count that disagrees with the comments present nor a comment of a deleted post.
"""

from datetime import timedelta

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from ..core.clock import iso, utcnow
from ..core.errors import forbidden, not_found
from ..core.ids import parse_id
from ..storage.outbox import LIVE, Resource, entry, is_live
from ..storage.pagination import Page, fetch_page
from ..storage.versioned import update_versioned

# A post remembers which comment changes it has counted (`_counted`), so that one offered again
# (by the recovery sweep, or a second worker) is not counted twice. A change is offered again
# within seconds of being made; after this long it is forgotten.
COUNTED_MEMORY = timedelta(minutes=10)


def post_public(doc: dict) -> dict:
    return {"id": str(doc["_id"]), "title": doc["title"], "content": doc["content"],
            "tags": doc["tags"], "author": {"id": str(doc["author_id"]),
                                            "username": doc["author_username"]},
            "comment_count": doc["comment_count"], "version": doc["version"],
            "created_at": iso(doc["created_at"]), "updated_at": iso(doc["updated_at"])}


def comment_public(doc: dict) -> dict:
    return {"id": str(doc["_id"]), "post_id": str(doc["post_id"]), "body": doc["body"],
            "author": {"id": str(doc["author_id"]), "username": doc["author_username"]},
            "created_at": iso(doc["created_at"])}


def _dedupe(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def _can_edit(user: dict, author_id) -> bool:
    return user["role"] == "admin" or user["_id"] == author_id


class PostStore:
    def __init__(self, db, outbox, users):
        self.posts = db["posts"]
        self.comments = db["comments"]
        self.posts_read = db.read("posts")
        self.db = db
        self.comments_read = db.read("comments")
        self.outbox = outbox
        self.users = users
        outbox.register(Resource("posts", post_public, before_publish=self._cascade))
        outbox.register(Resource("comments", comment_public, before_publish=self._count,
                                 after_cleared=self._forget_counted))

    # --- posts -------------------------------------------------------------------------------

    async def create(self, author: dict, title: str, content: str, tags: list[str],
                     op_id: ObjectId | None = None) -> dict:
        now = utcnow()
        doc = {"_id": op_id or ObjectId(), "title": title, "content": content,
               "tags": _dedupe(tags), "author_id": author["_id"],
               "author_username": author["username"], "comment_count": 0, "version": 1,
               "created_at": now, "updated_at": now}
        doc["_outbox"] = [entry("posts", "post.created", None, doc["_id"])]
        return await self._insert("posts", doc, "post")

    async def get(self, post_id: str) -> dict:
        oid = parse_id(post_id)
        doc = oid and await self.db.find_by_id("posts", oid)
        if not is_live(doc):
            raise not_found("post")
        return doc

    async def list(self, limit: int, cursor: str | None, author: str | None, tag: str | None):
        query = {}
        if author is not None:
            user = await self.users.find_by_username(author)
            if user is None:
                return Page([], None)
            query["author_id"] = user["_id"]
        if tag is not None:
            query["tags"] = tag
        return await fetch_page(self.posts_read, query, field="created_at", descending=True,
                                limit=limit, cursor=cursor, order="posts")

    async def update(self, user: dict, post_id: str, changes: dict, expected) -> dict:
        current = await self.get(post_id)
        if not _can_edit(user, current["author_id"]):
            raise forbidden("only the author or an admin may change this post")
        if "tags" in changes:
            changes["tags"] = _dedupe(changes["tags"])
        return await update_versioned(self.outbox, "posts", current["_id"], changes, expected,
                                      "post", "posts", "post.updated")

    async def delete(self, user: dict, post_id: str) -> None:
        current = await self.get(post_id)
        if not _can_edit(user, current["author_id"]):
            raise forbidden("only the author or an admin may delete this post")
        oid = current["_id"]
        cid = ObjectId()
        # A tombstone until the event is stored; its comments go when the event does.
        doc = await self.outbox.update(
            "posts", {"_id": oid},
            {"$set": {"_gone": True, "_gone_at": utcnow()},
             "$push": {"_outbox": entry("posts", "post.deleted", {"id": str(oid)}, cid,
                                        gone=True, cascade=True)}}, cid, "post")
        if doc is None:
            raise not_found("post")
        await self.outbox.flush("posts", doc)

    async def _cascade(self, outbox, doc: dict, item: dict) -> bool:
        if item.get("cascade"):
            await self.comments.delete_many({"post_id": doc["_id"]})
        return True

    # --- comments ----------------------------------------------------------------------------

    async def add_comment(self, author: dict, post_id: str, body: str,
                          op_id: ObjectId | None = None) -> dict:
        post = await self.get(post_id)
        doc = {"_id": op_id or ObjectId(), "post_id": post["_id"], "body": body,
               "author_id": author["_id"], "author_username": author["username"],
               "created_at": utcnow()}
        doc["_outbox"] = [entry(f"post:{post['_id']}", "comment.created", None, doc["_id"],
                                count=1)]
        return await self._insert("comments", doc, "post")

    async def list_comments(self, post_id: str, limit: int, cursor: str | None):
        post = await self.get(post_id)
        return await fetch_page(self.comments_read, {"post_id": post["_id"]}, field="created_at",
                                descending=False, limit=limit, cursor=cursor, order="comments")

    async def delete_comment(self, user: dict, comment_id: str) -> None:
        oid = parse_id(comment_id)
        comment = oid and await self.comments.find_one({"_id": oid})
        if not is_live(comment):
            raise not_found("comment")
        if not _can_edit(user, comment["author_id"]):
            post = await self.posts.find_one({"_id": comment["post_id"]}, {"author_id": 1})
            if post is None or post["author_id"] != user["_id"]:
                raise forbidden("only the comment's author, the post's author or an admin may "
                                "delete this comment")
        cid = ObjectId()
        doc = await self.outbox.update(
            "comments", {"_id": oid},
            {"$set": {"_gone": True, "_gone_at": utcnow()},
             "$push": {"_outbox": entry(f"post:{comment['post_id']}", "comment.deleted",
                                        {"id": str(oid), "post_id": str(comment["post_id"])},
                                        cid, gone=True, count=-1)}}, cid, "comment")
        if doc is None:
            raise not_found("comment")
        await self.outbox.flush("comments", doc)

    async def _count(self, outbox, comment: dict, item: dict) -> bool:
        """Applies a comment change's ±1 to its post, once. False: the comment is void (its
        post was deleted before the comment was counted)."""
        delta = item.get("count")
        if not delta:
            return True
        cid = item["cid"]
        query = {"_id": comment["post_id"], "_counted": {"$ne": cid}}
        if delta > 0:
            query.update(LIVE)  # no new comment on a post being deleted
        else:
            query["comment_count"] = {"$gt": 0}
        counted = await self.posts.update_one(
            query, {"$inc": {"comment_count": delta, "version": 1}, "$push": {"_counted": cid}})
        if counted.matched_count:
            return True
        post = await self.posts.find_one({"_id": comment["post_id"]}, {"_gone": 1, "_counted": 1})
        if post is not None and cid in (post.get("_counted") or ()):
            return True  # counted by an earlier offer of this change
        # A new comment on a post that is gone or going is void; a deletion has nothing to do.
        return delta < 0

    async def _forget_counted(self, entries) -> None:
        """Once a batch of comment changes is done with, their posts forget the oldest counted
        change past COUNTED_MEMORY: one command per batch (each is a scan on FerretDB)."""
        post_ids = {parse_id(item["channel"].partition(":")[2]) for item in entries
                    if item.get("count")}
        post_ids.discard(None)
        if post_ids:
            cutoff = ObjectId.from_datetime(utcnow() - COUNTED_MEMORY)
            await self.posts.update_many(
                {"_id": {"$in": list(post_ids)}, "_counted.0": {"$lt": cutoff}},
                {"$pop": {"_counted": -1}})

    # --- creation, safe to retry -------------------------------------------------------------

    async def _insert(self, name: str, doc: dict, what: str) -> dict:
        """Stores a new document with its pending event; a retry of the same operation (same
        `_id`, from an Idempotency-Key) finds the first one instead."""
        try:
            await self.outbox.insert(name, doc)
        except DuplicateKeyError:
            existing = await self.outbox.existing(name, doc)
            if existing is None:
                raise not_found(what) from None
            return existing
        if not await self.outbox.flush(name, doc):
            raise not_found(what)
        return doc
