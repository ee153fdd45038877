"""The OpenAPI 3.1 document, generated from the route table and the handlers' declared models.

Each handler method declares its operation with `@operation(...)`: the same request models the
handler validates with (BaseHandler.json_body() and query() read them from there), and the
response models. Nothing here is written by hand, so the document cannot drift from the code.
"""

import re
from dataclasses import dataclass, field

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from ..storage.idempotency import KEY_HEADER
from ..realtime.position import HEADERS as POSITION_HEADERS, is_positioned
from ..schemas.common import ErrorResponse

_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")
METHODS = ("get", "post", "put", "patch", "delete")

ERROR_TEXT = {
    400: "Body is not valid JSON or not a JSON object (invalid_json)",
    401: "Missing, malformed, expired, revoked or tampered token (unauthorized)",
    403: "Authenticated but not allowed (forbidden)",
    404: "No such resource (not_found)",
    409: "Unique value taken (conflict) or stock would go below zero (insufficient_stock)",
    410: "Cursor older than the retained events, ahead of the log's newest event, or from "
         "another epoch of the log (cursor_expired); details carry epoch and oldest_seq",
    412: "If-Match does not match the current version (precondition_failed)",
    413: "Body over MAX_BODY_BYTES (payload_too_large)",
    415: "Wrong Content-Type (unsupported_media_type)",
    422: "Body or query fails validation (validation_error)",
    426: "Not a WebSocket upgrade (upgrade_required)",
    429: "Too many attempts (rate_limited); see Retry-After",
    503: "The database is unreachable (service_unavailable); see Retry-After",
}

# Every POST accepts Idempotency-Key (handlers/base.py): its parameter and its own errors.
IDEMPOTENCY_KEY = {
    "name": KEY_HEADER, "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
    "description": "Makes the POST safe to retry: the same key from the same user (or client "
                   "address, when anonymous) within 24 h answers with the first request's "
                   "status, body and Location (marked `Idempotent-Replayed: true`) and does "
                   "nothing again. 1 to 255 printable ASCII characters.",
}
REPLAYED_HEADER = {"description": "`true` on an answer replayed for an Idempotency-Key",
                   "schema": {"type": "string", "enum": ["true"]}}
# A POST's 409 and 422 texts: alone, or after the operation's own (see _error_text).
IDEMPOTENCY_ERRORS = {
    409: "A request with the same Idempotency-Key is still running (request_in_progress); "
         "see Retry-After",
    422: "Body, query or Idempotency-Key fails validation (validation_error), or the "
         "Idempotency-Key was used with a different request (idempotency_key_reused)",
}


@dataclass(frozen=True)
class Operation:
    summary: str
    body: type[BaseModel] | None = None
    form: bool = False
    query: type[BaseModel] | None = None
    responses: dict = field(default_factory=dict)  # status -> model, or None for no body
    auth: str | None = None  # None, "optional", "bearer" or "admin"
    errors: tuple[int, ...] = ()
    if_match: bool = False
    if_none_match: bool = False
    stream: bool = False  # text/event-stream instead of JSON
    tag: str = "api"
    description: str = ""


def operation(**kwargs):
    def mark(method):
        method.__operation__ = Operation(**kwargs)
        return method
    return mark


def path_template(pattern: str) -> str:
    return _GROUP.sub(lambda m: "{" + m.group(1) + "}", pattern)


def _operations(routes):
    for pattern, handler, *_ in routes:
        for method in METHODS:
            func = getattr(handler, method, None)
            spec = getattr(func, "__operation__", None)
            if spec is not None:
                yield path_template(pattern), method, spec, _GROUP.findall(pattern)


def build_openapi(routes) -> dict:
    operations = list(_operations(routes))
    route_names = {path_template(pattern): getattr(handler, "route_name", "")
                   for pattern, handler, *_ in routes}
    inputs = {spec.body for *_, spec, _ in operations if spec.body}
    outputs = {model for *_, spec, _ in operations for model in spec.responses.values() if model}
    outputs.add(ErrorResponse)
    keys = [(m, "validation") for m in inputs] + [(m, "serialization") for m in outputs]
    refs, top = models_json_schema(keys, ref_template="#/components/schemas/{model}")
    schemas = top.get("$defs", {})

    def ref(model, mode):
        return refs[(model, mode)]

    error_ref = ref(ErrorResponse, "serialization")
    paths: dict = {}
    for path, method, spec, params in operations:
        op: dict = {"summary": spec.summary, "tags": [spec.tag],
                    "operationId": f"{method}_{path.strip('/').replace('/', '_')}"
                    .replace("{", "").replace("}", "")}
        if spec.description:
            op["description"] = spec.description
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": {"type": "string"}} for name in params]
        if spec.query is not None:
            query_schema = spec.query.model_json_schema(mode="validation")
            required = set(query_schema.get("required", []))
            for name, prop in query_schema.get("properties", {}).items():
                parameters.append({"name": name, "in": "query", "required": name in required,
                                   "schema": prop})
        if spec.if_match:
            parameters.append({"name": "If-Match", "in": "header", "required": False,
                               "schema": {"type": "string"},
                               "description": 'ETag "<version>" the change is conditional on'})
        if spec.if_none_match:
            parameters.append({"name": "If-None-Match", "in": "header", "required": False,
                               "schema": {"type": "string"}})
        if method == "post":
            parameters.append(IDEMPOTENCY_KEY)
        if parameters:
            op["parameters"] = parameters
        if spec.body is not None:
            media = ("application/x-www-form-urlencoded" if spec.form else "application/json")
            op["requestBody"] = {"required": True,
                                 "content": {media: {"schema": ref(spec.body, "validation")}}}
        responses = {}
        for status, model in spec.responses.items():
            entry = {"description": _status_text(status)}
            if model is not None:
                entry["content"] = {"application/json": {"schema": ref(model, "serialization")}}
            if method == "get" and is_positioned(route_names[path]) and status < 400:
                entry["headers"] = POSITION_HEADERS
            elif spec.stream and 200 <= status < 300:
                entry["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
            if method == "post" and 200 <= status < 300:
                entry["headers"] = {"Idempotent-Replayed": REPLAYED_HEADER}
            responses[str(status)] = entry
        errors = set(spec.errors) | {503}
        if spec.body is not None:
            errors |= {400, 413, 415, 422}
        if spec.query is not None:
            errors.add(422)
        if spec.auth in ("bearer", "admin", "optional"):
            errors.add(401)
        if spec.auth == "admin":
            errors.add(403)
        if params:
            errors.add(404)
        if spec.if_match:
            errors.add(412)
        if method == "post":
            errors |= set(IDEMPOTENCY_ERRORS)
        for status in sorted(errors):
            responses[str(status)] = {"description": _error_text(status, method, spec),
                                      "content": {"application/json": {"schema": error_ref}}}
        responses["default"] = {"description": "Any other error, in the one error shape",
                                "content": {"application/json": {"schema": error_ref}}}
        op["responses"] = responses
        if spec.auth in ("bearer", "admin"):
            op["security"] = [{"OAuth2PasswordBearer": []}]
        elif spec.auth == "optional":
            op["security"] = [{}, {"OAuth2PasswordBearer": []}]
        paths.setdefault(path, {})[method] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": "tornado-app API", "version": __version__,
                 "description": "Blog, product catalog and auth, with realtime delivery of "
                                "every change over WebSocket, long-poll and Server-Sent Events. "
                                "The realtime protocol is described in the AsyncAPI 3 document "
                                "at [/asyncapi.json](/asyncapi.json)."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "OAuth2PasswordBearer": {
                    "type": "oauth2",
                    "flows": {"password": {"tokenUrl": "/api/v1/auth/token", "scopes": {}}},
                },
            },
        },
    }


def _error_text(status: int, method: str, spec: Operation) -> str:
    if method != "post" or status not in IDEMPOTENCY_ERRORS:
        return ERROR_TEXT[status]
    if status == 409 and 409 in spec.errors:
        return f"{ERROR_TEXT[409]}; or {IDEMPOTENCY_ERRORS[409][0].lower()}{IDEMPOTENCY_ERRORS[409][1:]}"
    return IDEMPOTENCY_ERRORS[status]


def _status_text(status: int) -> str:
    from http import HTTPStatus
    return HTTPStatus(status).phrase
