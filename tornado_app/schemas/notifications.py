"""Notification and realtime query models."""

from pydantic import BaseModel, Field

from .common import QueryModel, RequestModel


class NotificationCreate(RequestModel):
    user_id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=5000)


class NotificationAccepted(BaseModel):
    id: str
    status: str


class NotificationPublic(BaseModel):
    id: str
    user_id: str
    title: str
    body: str
    status: str
    created_at: str
    delivered_at: str | None
    read_at: str | None


class EventPublic(BaseModel):
    seq: int
    channel: str
    type: str
    data: dict
    created_at: str


class PollResponse(BaseModel):
    events: list[EventPublic]
    cursor: int
    # The protocol's epoch (docs/realtime.md): optional here, so the documents describe it both
    # before and after the server sends it.
    epoch: str | None = None


class PollQuery(QueryModel):
    channels: str = Field(min_length=1, max_length=10_000)
    since: int | None = Field(None, ge=0)
    timeout: float = Field(30, ge=0, le=60)


class StreamQuery(QueryModel):
    channels: str = Field(min_length=1, max_length=10_000)
    since: int | None = Field(None, ge=0)
