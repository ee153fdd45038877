"""Shared pieces of the request models, and the translation of validation errors."""

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ..core.errors import ApiError
from ..core.wire import MAX_INT, is_decimal, parse_decimal


class RequestModel(BaseModel):
    """A JSON body: unknown fields are refused, and types are not coerced ("5" is no integer)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ResponseModel(BaseModel):
    """A response body: exactly these fields. The OpenAPI document says so (additionalProperties
    false), and tests/unit/test_response_models.py runs every builder of a body against its model."""

    model_config = ConfigDict(extra="forbid")


class QueryModel(BaseModel):
    """Query-string parameters: they arrive as text, so numbers and booleans are parsed."""

    model_config = ConfigDict(extra="ignore")


def _decimal_text(value):
    """A query-string integer: ASCII digits only (pydantic alone takes ' 5', '+5', '5_0', '5.0')
    and at most MAX_INT, so it can reach BSON and islice."""
    if isinstance(value, str):
        parsed = parse_decimal(value)
        if parsed is None:
            raise ValueError("must be a non-negative decimal integer"
                             + (f" of at most {MAX_INT}" if is_decimal(value) else ""))
        return parsed
    return value


def _decimal_fraction_text(value):
    """A query-string number such as a timeout: ASCII digits with an optional fraction
    (no exponent, sign, inf or nan)."""
    if isinstance(value, str):
        whole, dot, fraction = value.partition(".")
        if not is_decimal(whole) or (dot and not is_decimal(fraction)) or len(value) > 32:
            raise ValueError("must be a non-negative decimal number")
        return float(value)
    return value


def query_int(minimum: int = 0, maximum: int = MAX_INT):
    """The type of an integer in a query string; always bounded, so that it can be stored or
    used as an index."""
    return Annotated[int, Field(ge=minimum, le=maximum), BeforeValidator(_decimal_text)]


QueryInt = query_int()
QueryNumber = Annotated[float, BeforeValidator(_decimal_fraction_text)]

Limit = query_int(1, 100)


class PageQuery(QueryModel):
    limit: Limit = 20
    cursor: str | None = Field(None, max_length=512)


T = TypeVar("T")


class Page(ResponseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


class HealthStatus(ResponseModel):
    status: str
    database: str | None = None
    redis: str | None = None


class ErrorDetail(ResponseModel):
    loc: list[str | int]
    msg: str


class ErrorBody(ResponseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorResponse(ResponseModel):
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
