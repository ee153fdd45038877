"""Shared pieces of the request models, and the translation of validation errors."""

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ApiError


class RequestModel(BaseModel):
    """A JSON body: unknown fields are refused, and types are not coerced ("5" is no integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class QueryModel(BaseModel):
    """Query-string parameters: they arrive as text, so numbers and booleans are parsed."""

    model_config = ConfigDict(extra="ignore")


Limit = Annotated[int, Field(ge=1, le=100)]


class PageQuery(QueryModel):
    limit: Limit = 20
    cursor: str | None = Field(None, max_length=512)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class HealthStatus(BaseModel):
    status: str
    database: str | None = None
    redis: str | None = None


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def validation_failed(exc: ValidationError, where: str) -> ApiError:
    details = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        details.append({"loc": [where, *err["loc"]], "msg": msg})
    return ApiError(422, "validation_error", "the request is not valid", details=details)


def patch_changes(model: BaseModel) -> dict:
    """The fields a PATCH sets; null is refused (a field cannot be unset), and so is nothing."""
    changes = model.model_dump(exclude_unset=True)
    nulls = [{"loc": ["body", name], "msg": "may not be null"}
             for name, value in changes.items() if value is None]
    if nulls:
        raise ApiError(422, "validation_error", "the request is not valid", details=nulls)
    if not changes:
        raise ApiError(422, "validation_error", "the request is not valid",
                       details=[{"loc": ["body"], "msg": "at least one field is required"}])
    return changes
