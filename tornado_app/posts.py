"""Blog posts and their comments."""

from .clock import iso, utcnow
from .errors import forbidden, not_found
from .ids import parse_id
from .pagination import Page, fetch_page
from .versioned import update_versioned


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
    def __init__(self, db, events, users):
        self.posts = db["posts"]
        self.comments = db["comments"]
        self.posts_read = db.read("posts")
        self.comments_read = db.read("comments")
        self.events = events
        self.users = users

    async def create(self, author: dict, title: str, content: str, tags: list[str]) -> dict:
        now = utcnow()
        doc = {"title": title, "content": content, "tags": _dedupe(tags),
               "author_id": author["_id"], "author_username": author["username"],
               "comment_count": 0, "version": 1, "created_at": now, "updated_at": now}
        await self.posts.insert_one(doc)
        await self.events.publish("posts", "post.created", post_public(doc))
        return doc

    async def get(self, post_id: str) -> dict:
        oid = parse_id(post_id)
        doc = oid and await self.posts_read.find_one({"_id": oid})
        if not doc:
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
        doc = await update_versioned(self.posts, current["_id"], changes, expected, "post")
        await self.events.publish("posts", "post.updated", post_public(doc))
        return doc

    async def delete(self, user: dict, post_id: str) -> None:
        current = await self.get(post_id)
        if not _can_edit(user, current["author_id"]):
            raise forbidden("only the author or an admin may delete this post")
        deleted = await self.posts.delete_one({"_id": current["_id"]})
        if not deleted.deleted_count:
            raise not_found("post")
        await self.comments.delete_many({"post_id": current["_id"]})
        await self.events.publish("posts", "post.deleted", {"id": str(current["_id"])})

    async def add_comment(self, author: dict, post_id: str, body: str) -> dict:
        post = await self.get(post_id)
        doc = {"post_id": post["_id"], "body": body, "author_id": author["_id"],
               "author_username": author["username"], "created_at": utcnow()}
        await self.comments.insert_one(doc)
        # comment_count is part of the post, so its version (and ETag) moves with it.
        # (update_one: FerretDB does not implement findAndModify with a projection.)
        counted = await self.posts.update_one(
            {"_id": post["_id"]}, {"$inc": {"comment_count": 1, "version": 1}})
        if not counted.matched_count:
            # The post was deleted while the comment was being written: take it back.
            await self.comments.delete_one({"_id": doc["_id"]})
            raise not_found("post")
        await self.events.publish(f"post:{post['_id']}", "comment.created", comment_public(doc))
        return doc

    async def list_comments(self, post_id: str, limit: int, cursor: str | None):
        post = await self.get(post_id)
        return await fetch_page(self.comments_read, {"post_id": post["_id"]}, field="created_at",
                                descending=False, limit=limit, cursor=cursor, order="comments")

    async def delete_comment(self, user: dict, comment_id: str) -> None:
        oid = parse_id(comment_id)
        comment = oid and await self.comments.find_one({"_id": oid})
        if not comment:
            raise not_found("comment")
        if not _can_edit(user, comment["author_id"]):
            post = await self.posts.find_one({"_id": comment["post_id"]}, {"author_id": 1})
            if post is None or post["author_id"] != user["_id"]:
                raise forbidden("only the comment's author, the post's author or an admin may "
                                "delete this comment")
        deleted = await self.comments.delete_one({"_id": oid})
        if not deleted.deleted_count:
            raise not_found("comment")
        await self.posts.update_one({"_id": comment["post_id"], "comment_count": {"$gt": 0}},
                                    {"$inc": {"comment_count": -1, "version": 1}})
        await self.events.publish(f"post:{comment['post_id']}", "comment.deleted",
                                  {"id": str(oid), "post_id": str(comment["post_id"])})
