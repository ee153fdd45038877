"""Blog endpoints: posts and comments."""

from tornado_app.web.openapi import operation
from tornado_app.blog.posts import comment_public, post_public
from tornado_app.schemas.common import Page, PageQuery, patch_changes
from tornado_app.schemas.posts import (CommentCreate, CommentPublic, PostCreate, PostListQuery,
                                       PostPatch, PostPublic, PostReplace)

from .base import BaseHandler


class PostsHandler(BaseHandler):
    route_name = "posts.list"

    @operation(summary="List posts, newest first", query=PostListQuery, responses={200: Page[PostPublic]},
               tag="blog")
    async def get(self) -> None:
        params = self.query()
        page = await self.ctx.posts.list(params.limit, params.cursor, params.author, params.tag)
        self.send_json(page.to_json(post_public))

    @operation(summary="Create a post", body=PostCreate, responses={201: PostPublic}, auth="bearer",
               tag="blog")
    async def post(self) -> None:
        body = self.json_body()
        doc = await self.ctx.posts.create(self.user, body.title, body.content, body.tags,
                                          op_id=self.op_id)
        self.set_header("Location", f"/api/v1/posts/{doc['_id']}")
        self.send_versioned(doc, post_public, status=201)


class PostHandler(BaseHandler):
    route_name = "posts.item"

    @operation(summary="A post, with its ETag", responses={200: PostPublic, 304: None}, if_none_match=True,
               tag="blog")
    async def get(self, post_id: str) -> None:
        self.send_versioned(await self.ctx.posts.get(post_id), post_public)

    @operation(summary="Replace a post's editable fields", body=PostReplace, responses={200: PostPublic},
               auth="bearer", errors=(403,), if_match=True, tag="blog")
    async def put(self, post_id: str) -> None:
        await self._update(post_id, replace=True)

    @operation(summary="Change some of a post's fields", body=PostPatch, responses={200: PostPublic},
               auth="bearer", errors=(403,), if_match=True, tag="blog")
    async def patch(self, post_id: str) -> None:
        await self._update(post_id, replace=False)

    async def _update(self, post_id: str, replace: bool) -> None:
        body = self.json_body()
        changes = body.model_dump() if replace else patch_changes(body)
        doc = await self.ctx.posts.update(self.user, post_id, changes, self.if_match())
        self.send_versioned(doc, post_public)

    @operation(summary="Delete a post and its comments", responses={204: None}, auth="bearer", errors=(403,),
               tag="blog")
    async def delete(self, post_id: str) -> None:
        await self.ctx.posts.delete(self.user, post_id)
        self.send_empty()


class CommentsHandler(BaseHandler):
    route_name = "comments.list"

    @operation(summary="A post's comments, oldest first", query=PageQuery,
               responses={200: Page[CommentPublic]}, tag="blog")
    async def get(self, post_id: str) -> None:
        params = self.query()
        page = await self.ctx.posts.list_comments(post_id, params.limit, params.cursor)
        self.send_json(page.to_json(comment_public))

    @operation(summary="Comment on a post", body=CommentCreate, responses={201: CommentPublic}, auth="bearer",
               tag="blog")
    async def post(self, post_id: str) -> None:
        body = self.json_body()
        doc = await self.ctx.posts.add_comment(self.user, post_id, body.body, op_id=self.op_id)
        self.send_json(comment_public(doc), status=201)


class CommentHandler(BaseHandler):
    route_name = "comments.item"

    @operation(summary="Delete a comment", responses={204: None}, auth="bearer", errors=(403,), tag="blog")
    async def delete(self, comment_id: str) -> None:
        await self.ctx.posts.delete_comment(self.user, comment_id)
        self.send_empty()
