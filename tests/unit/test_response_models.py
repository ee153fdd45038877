"""Every response body builder against the response model the OpenAPI document shows, without a
server: the builders (post_public, user_public, ...) and the models (PostPublic, UserPublic, ...)
are written apart, and the document is made from the models, so a field added to or dropped
from either side fails here rather than drifting unnoticed."""

import json
import typing
from datetime import datetime, timezone

import pytest
from bson import ObjectId
from pydantic import BaseModel

from tornado_app.accounts.auth import tokens_public
from tornado_app.accounts.security import TokenService
from tornado_app.accounts.users import user_public
from tornado_app.blog.posts import comment_public, post_public
from tornado_app.catalog.products import product_public
from tornado_app.core.errors import ApiError, service_unavailable, unauthorized, validation_error
from tornado_app.notifications.store import notification_accepted, notification_public
from tornado_app.realtime.log import event_public
from tornado_app.realtime.record import Record
from tornado_app.realtime.transports.parked_poll import poll_body
from tornado_app.schemas.common import ErrorResponse, HealthStatus, Page
from tornado_app.schemas.notifications import (EventPublic, NotificationAccepted,
                                               NotificationPublic, PollResponse)
from tornado_app.schemas.posts import AuthorRef, CommentPublic, PostPublic
from tornado_app.schemas.products import ProductPublic
from tornado_app.schemas.users import Tokens, UserPublic
from tornado_app.storage import pagination
from tornado_app.web.openapi import METHODS
from tornado_app.web.routes import ROUTES

# --- representative documents, as the stores keep them (with their internal fields) -----------

AT = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
USER = {"_id": ObjectId(), "username": "alice", "username_key": "alice",
        "email": "alice@example.com", "role": "user", "password_hash": "$2b$04$x",
        "created_at": AT}
POST = {"_id": ObjectId(), "title": "Hello", "content": "World", "tags": ["a", "b-c"],
        "author_id": USER["_id"], "author_username": "alice", "comment_count": 2, "version": 3,
        "created_at": AT, "updated_at": AT, "_outbox": [], "_counted": []}
COMMENT = {"_id": ObjectId(), "post_id": POST["_id"], "body": "Nice", "author_id": USER["_id"],
           "author_username": "alice", "created_at": AT, "_outbox": []}
PRODUCT = {"_id": ObjectId(), "sku": "SKU-1", "name": "Widget", "description": "", "category": "tools",
           "price_cents": 1999, "stock": 0, "version": 1, "created_at": AT, "updated_at": AT,
           "_outbox": []}
QUEUED = {"_id": ObjectId(), "user_id": USER["_id"], "title": "Hi", "body": "There",
          "status": "queued", "created_at": AT, "delivered_at": None, "read_at": None}
READ = {**QUEUED, "_id": ObjectId(), "status": "read", "delivered_at": AT, "read_at": AT,
        "_outbox": []}
EVENT = {"_id": 7, "channel": "posts", "type": "post.created", "data": post_public(POST),
         "created_at": AT}
TOKENS = TokenService("s" * 40, "tornado-app", "tornado-app-api", access_ttl=900,
                      refresh_ttl=86400)

# model -> [(builder, its arguments), ...]: every model a response shows, with what builds it.
BUILDERS = {
    UserPublic: [(user_public, (USER,)), (user_public, ({**USER, "role": "admin"},))],
    PostPublic: [(post_public, (POST,)), (post_public, ({**POST, "tags": []},))],
    CommentPublic: [(comment_public, (COMMENT,))],
    ProductPublic: [(product_public, (PRODUCT,))],
    NotificationPublic: [(notification_public, (QUEUED,)), (notification_public, (READ,))],
    NotificationAccepted: [(notification_accepted, (QUEUED,))],
    Tokens: [(tokens_public, (TOKENS, USER, "f" * 32, "j" * 32))],
    EventPublic: [(event_public, (EVENT,))],
    PollResponse: [
        (lambda *args: json.loads(poll_body(*args)), ([Record(event_public(EVENT))], 7, "e" * 32)),
        (lambda *args: json.loads(poll_body(*args)), ([], 0, "e" * 32)),
    ],
    ErrorResponse: [(ApiError.body, (error,)) for error in (
        ApiError(404, "not_found", "post not found"), unauthorized(), service_unavailable(),
        validation_error(["body", "title"], "field required"))],
}
# Answered by literal dicts in handlers/health.py; tests/test_openapi.py validates /health
# against the document, and tests/test_health.py checks both bodies field by field.
CHECKED_ON_THE_WIRE = {HealthStatus}

CASES = [pytest.param(model, builder, args, id=f"{model.__name__}-{i}")
         for model, built in BUILDERS.items() for i, (builder, args) in enumerate(built)]


def _response_models() -> set[type[BaseModel]]:
    """Every model a response of ROUTES is declared with (as the OpenAPI document shows)."""
    found = set()
    for _, handler, *_ in ROUTES:
        for method in METHODS:
            spec = getattr(getattr(handler, method, None), "__operation__", None)
            if spec is not None:
                found |= {model for model in spec.responses.values() if model is not None}
    return found


def _nested(model: type[BaseModel]) -> set[type[BaseModel]]:
    """`model` and every model among its fields' types, at any depth."""
    seen, todo = set(), [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for field in current.model_fields.values():
            types = [field.annotation]
            while types:
                tp = types.pop()
                if isinstance(tp, type) and issubclass(tp, BaseModel):
                    todo.append(tp)
                types.extend(typing.get_args(tp))
    return seen


def _item_model(model):
    """X for Page[X], else None."""
    meta = getattr(model, "__pydantic_generic_metadata__", None) or {}
    return meta["args"][0] if meta.get("origin") is Page else None


def _exactly(model, body: dict) -> None:
    """`body` is an instance of `model` as it stands: no extra field, no missing one, no value
    that needs converting."""
    parsed = model.model_validate(body, strict=True)
    assert parsed.model_dump(mode="json", exclude_unset=True) == body


def test_every_response_model_forbids_extra_fields():
    models = set().union(*map(_nested, _response_models()))
    assert {PostPublic, ErrorResponse, AuthorRef} <= models | _nested(ErrorResponse)
    for model in models | _nested(ErrorResponse):
        assert model.model_config.get("extra") == "forbid", model.__name__


def test_every_response_model_has_its_builder_checked_here():
    declared = {_item_model(model) or model for model in _response_models()} | {ErrorResponse}
    unchecked = declared - set(BUILDERS) - CHECKED_ON_THE_WIRE
    assert not unchecked, f"no builder checked for {sorted(m.__name__ for m in unchecked)}"


@pytest.mark.parametrize("model, builder, args", CASES)
def test_builder_makes_exactly_its_model(model, builder, args):
    _exactly(model, builder(*args))


@pytest.mark.parametrize("model", sorted((m for m in _response_models() if _item_model(m)),
                                         key=lambda m: m.__name__))
def test_pages_are_exactly_their_model(model):
    builder, args = BUILDERS[_item_model(model)][0]
    page = pagination.Page([args[0]] * 2, "next-cursor")
    _exactly(model, page.to_json(builder))
    _exactly(model, pagination.Page([], None).to_json(builder))


def test_a_field_the_model_does_not_have_is_refused():
    with pytest.raises(ValueError, match="extra"):
        _exactly(PostPublic, {**post_public(POST), "author_id": str(POST["author_id"])})


def test_a_missing_field_is_refused():
    body = post_public(POST)
    del body["comment_count"]
    with pytest.raises(ValueError, match="missing"):
        _exactly(PostPublic, body)


def test_a_value_of_another_type_is_refused():
    with pytest.raises(ValueError, match="valid integer"):
        _exactly(PostPublic, {**post_public(POST), "version": "3"})
