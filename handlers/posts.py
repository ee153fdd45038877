"""Blog endpoints: posts and comments."""

from tornado_app.posts import comment_public, post_public
from tornado_app.schemas.common import PageQuery, patch_changes
from tornado_app.schemas.posts import (CommentCreate, PostCreate, PostListQuery, PostPatch,
                                       PostReplace)

from .base import BaseHandler


class PostsHandler(BaseHandler):
    route_name = "posts.list"

    async def get(self) -> None:
        params = self.query(PostListQuery)
        page = await self.ctx.posts.list(params.limit, params.cursor, params.author, params.tag)
        self.send_json(page.to_json(post_public))

    async def post(self) -> None:
        user = await self.require_user()
        body = self.json_body(PostCreate)
        doc = await self.ctx.posts.create(user, body.title, body.content, body.tags)
        self.set_header("Location", f"/api/v1/posts/{doc['_id']}")
        self.send_versioned(doc, post_public, status=201)


class PostHandler(BaseHandler):
    route_name = "posts.item"

    async def get(self, post_id: str) -> None:
        self.send_versioned(await self.ctx.posts.get(post_id), post_public)

    async def put(self, post_id: str) -> None:
        await self._update(post_id, PostReplace, replace=True)

    async def patch(self, post_id: str) -> None:
        await self._update(post_id, PostPatch, replace=False)

    async def _update(self, post_id: str, model, replace: bool) -> None:
        user = await self.require_user()
        body = self.json_body(model)
        changes = body.model_dump() if replace else patch_changes(body)
        doc = await self.ctx.posts.update(user, post_id, changes, self.if_match())
        self.send_versioned(doc, post_public)

    async def delete(self, post_id: str) -> None:
        user = await self.require_user()
        await self.ctx.posts.delete(user, post_id)
        self.send_empty()


class CommentsHandler(BaseHandler):
    route_name = "comments.list"

    async def get(self, post_id: str) -> None:
        params = self.query(PageQuery)
        page = await self.ctx.posts.list_comments(post_id, params.limit, params.cursor)
        self.send_json(page.to_json(comment_public))

    async def post(self, post_id: str) -> None:
        user = await self.require_user()
        body = self.json_body(CommentCreate)
        doc = await self.ctx.posts.add_comment(user, post_id, body.body)
        self.send_json(comment_public(doc), status=201)


class CommentHandler(BaseHandler):
    route_name = "comments.item"

    async def delete(self, comment_id: str) -> None:
        user = await self.require_user()
        await self.ctx.posts.delete_comment(user, comment_id)
        self.send_empty()
