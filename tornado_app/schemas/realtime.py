"""The realtime protocol's messages: WebSocket ops and frames, the SSE messages, and every event
type with its payload. The AsyncAPI document (tornado_app/web/asyncapi.py) is generated from these,
and tests/test_asyncapi.py checks every frame and event a running server emits against them, so
neither the document nor these models can drift from the wire."""

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from .notifications import NotificationPublic
from .posts import CommentPublic, PostPublic
from .products import ProductPublic

ChannelName = Annotated[str, Field(
    pattern=r"^(posts|products|post:[0-9a-f]{24}|user:[0-9a-f]{24})$",
    description="posts, products, post:{post_id} or user:{user_id}")]
Ref = Annotated[Any, Field(description="Any JSON value; echoed in the answer to this op")]
Epoch = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$",
                             description="The event log's epoch, fixed when the log was created")]


class Message(BaseModel):
    """What the server sends has exactly these fields: a test fails on any other."""

    model_config = ConfigDict(extra="forbid")


# --- events ------------------------------------------------------------------------------------

class DeletedRef(Message):
    id: str


class CommentDeletedRef(Message):
    id: str
    post_id: str


class _Event(Message):
    seq: int = Field(ge=1, description="Deployment-wide, strictly increasing; the cursor")
    created_at: str = Field(description="When the event was stored, ISO 8601 UTC")


class PostCreated(_Event):
    """A post was created."""
    channel: Literal["posts"]
    type: Literal["post.created"]
    data: PostPublic


class PostUpdated(_Event):
    """A post was replaced or patched, or its comment count changed."""
    channel: Literal["posts"]
    type: Literal["post.updated"]
    data: PostPublic


class PostDeleted(_Event):
    """A post was deleted (its comments with it)."""
    channel: Literal["posts"]
    type: Literal["post.deleted"]
    data: DeletedRef


class CommentCreated(_Event):
    """A comment was added to the post of the channel."""
    channel: Annotated[str, Field(pattern=r"^post:[0-9a-f]{24}$")]
    type: Literal["comment.created"]
    data: CommentPublic


class CommentDeleted(_Event):
    """A comment was deleted from the post of the channel."""
    channel: Annotated[str, Field(pattern=r"^post:[0-9a-f]{24}$")]
    type: Literal["comment.deleted"]
    data: CommentDeletedRef


class ProductCreated(_Event):
    """A product was created."""
    channel: Literal["products"]
    type: Literal["product.created"]
    data: ProductPublic


class ProductUpdated(_Event):
    """A product was replaced or patched."""
    channel: Literal["products"]
    type: Literal["product.updated"]
    data: ProductPublic


class ProductStockChanged(_Event):
    """A product's stock changed (POST /products/{id}/stock)."""
    channel: Literal["products"]
    type: Literal["product.stock_changed"]
    data: ProductPublic


class ProductDeleted(_Event):
    """A product was deleted."""
    channel: Literal["products"]
    type: Literal["product.deleted"]
    data: DeletedRef


class NotificationDelivered(_Event):
    """A notification for the user of the channel was delivered (status `delivered`)."""
    channel: Annotated[str, Field(pattern=r"^user:[0-9a-f]{24}$")]
    type: Literal["notification"]
    data: NotificationPublic


Event = Annotated[Union[PostCreated, PostUpdated, PostDeleted, CommentCreated, CommentDeleted,
                        ProductCreated, ProductUpdated, ProductStockChanged, ProductDeleted,
                        NotificationDelivered], Field(discriminator="type")]

# Each channel, who may read it, and the events it carries.
CHANNELS = {
    "posts": ("Every post change. Public.", (PostCreated, PostUpdated, PostDeleted)),
    "post:{post_id}": ("The comments of one post. Public.", (CommentCreated, CommentDeleted)),
    "products": ("Every product change. Public.",
                 (ProductCreated, ProductUpdated, ProductStockChanged, ProductDeleted)),
    "user:{user_id}": ("One user's notifications. That user and admins only.",
                       (NotificationDelivered,)),
}


def event_type(model: type[_Event]) -> str:
    return model.model_fields["type"].annotation.__args__[0]


# --- WebSocket: client → server ----------------------------------------------------------------

class SubscribeOp(Message):
    """Subscribe to channels; with `since`, first every retained event after it, then live."""
    op: Literal["subscribe"]
    channels: list[ChannelName] = Field(min_length=1)
    since: int | None = Field(None, ge=0, description="The last seq the client has")
    epoch: Epoch | None = Field(None, description="The epoch `since` belongs to")
    ref: Ref = None


class UnsubscribeOp(Message):
    op: Literal["unsubscribe"]
    channels: list[ChannelName]
    ref: Ref = None


class PingOp(Message):
    op: Literal["ping"]
    ref: Ref = None


class AuthOp(Message):
    """Authenticate (or re-authenticate with a refreshed token) on an open connection."""
    op: Literal["auth"]
    token: str = Field(min_length=1, description="An access token")
    ref: Ref = None


ClientOp = Annotated[Union[SubscribeOp, UnsubscribeOp, PingOp, AuthOp], Field(discriminator="op")]


# --- WebSocket: server → client ----------------------------------------------------------------

class SubscribedFrame(Message):
    """The subscription is in place; with `since`, the replay follows this frame."""
    type: Literal["subscribed"]
    channels: list[ChannelName]
    ref: Ref = None
    epoch: Epoch | None = None


class UnsubscribedFrame(Message):
    type: Literal["unsubscribed"]
    channels: list[str]
    ref: Ref = None


class EventFrame(Message):
    type: Literal["event"]
    event: Event


class PongFrame(Message):
    """The answer to a ping op; ops are answered in order, so it follows every earlier op's
    answer (and the replay of an earlier subscribe)."""
    type: Literal["pong"]
    ref: Ref = None


class AuthenticatedFrame(Message):
    type: Literal["authenticated"]
    user_id: str
    ref: Ref = None


class ErrorFrame(Message):
    """An op failed (the connection stays open), or the log was replaced under the connection
    (`cursor_expired` with `ref` null: its subscriptions are dropped)."""
    type: Literal["error"]
    code: str = Field(description="cursor_expired, forbidden, unauthorized, validation_error, "
                      "invalid_json, rate_limited, service_unavailable or internal_error")
    message: str
    ref: Ref = None
    oldest_seq: int | None = Field(None, description="cursor_expired: the oldest retained seq")
    epoch: Epoch | None = Field(None, description="cursor_expired: the log's current epoch")


ServerFrame = Annotated[Union[SubscribedFrame, UnsubscribedFrame, EventFrame, PongFrame,
                              AuthenticatedFrame, ErrorFrame], Field(discriminator="type")]


# --- Server-Sent Events ------------------------------------------------------------------------

class SseEpoch(Message):
    """The stream's first message (`event: epoch`, no `id`): where the stream starts."""
    epoch: Epoch
    cursor: int


class SseError(Message):
    """`event: error`: the log was replaced under the stream, which then ends."""
    code: str
    message: str
    oldest_seq: int | None = None
    epoch: Epoch | None = None
