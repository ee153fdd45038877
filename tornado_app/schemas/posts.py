"""Blog models."""

from typing import Annotated

from pydantic import Field

from .common import PageQuery, RequestModel, ResponseModel

Title = Annotated[str, Field(min_length=1, max_length=200)]
Content = Annotated[str, Field(min_length=1, max_length=100_000)]
Tag = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")]
Tags = Annotated[list[Tag], Field(max_length=10)]


class PostCreate(RequestModel):
    title: Title
    content: Content
    tags: Tags = []


class PostReplace(PostCreate):
    """PUT: every editable field; tags left out means no tags."""


class PostPatch(RequestModel):
    title: Title | None = None
    content: Content | None = None
    tags: Tags | None = None


class PostListQuery(PageQuery):
    author: str | None = Field(None, max_length=32)
    tag: str | None = Field(None, max_length=32)


class CommentCreate(RequestModel):
    body: str = Field(min_length=1, max_length=5000)


class AuthorRef(ResponseModel):
    id: str
    username: str


class PostPublic(ResponseModel):
    id: str
    title: str
    content: str
    tags: list[str]
    author: AuthorRef
    comment_count: int
    version: int
    created_at: str
    updated_at: str


class CommentPublic(ResponseModel):
    id: str
    post_id: str
    body: str
    author: AuthorRef
    created_at: str
