"""Notification and realtime query models."""

from pydantic import Field

from .common import QueryInt, QueryModel, QueryNumber, RequestModel, ResponseModel


class NotificationCreate(RequestModel):
    user_id: str = Field(min_length=1, max_length=64)
    title: str = Field(min_length=1, max_length=200)
    body: str = Field(min_length=1, max_length=5000)


class NotificationAccepted(ResponseModel):
    id: str
    status: str


class NotificationPublic(ResponseModel):
    id: str
    user_id: str
    title: str
    body: str
    status: str
    created_at: str
    delivered_at: str | None
    read_at: str | None


class EventPublic(ResponseModel):
    seq: int
    channel: str
    type: str
    data: dict
    created_at: str


class PollResponse(ResponseModel):
    events: list[EventPublic]
    cursor: int
    epoch: str = Field(description="The event log's epoch: send it back with the cursor")


EPOCH = Field(None, min_length=1, max_length=64,
              description="The epoch the cursor is from: another epoch is 410 cursor_expired")


class PollQuery(QueryModel):
    channels: str = Field(min_length=1, max_length=10_000)
    since: QueryInt | None = None
    epoch: str | None = EPOCH
    timeout: QueryNumber = Field(30, ge=0, le=60)


class StreamQuery(QueryModel):
    channels: str = Field(min_length=1, max_length=10_000)
    since: QueryInt | None = None
    epoch: str | None = EPOCH
