"""The one base handler: request ids, JSON in and out, the current user, and every error."""

import asyncio
import functools
import itertools
import json
import logging
import os
import re
import sys
import time
import uuid

from pydantic import ValidationError
import tornado
from tornado import httputil, web
from tornado.escape import utf8

from tornado_app.storage.db import is_out_of_storage, is_unavailable
from tornado_app.core.errors import (ApiError, forbidden, insufficient_storage, service_unavailable,
                                     unauthorized)
from tornado_app.storage.outbox import OutcomeUnknown
from tornado_app.realtime.position import HEADERS as POSITION_HEADERS, is_positioned
from tornado_app.core.etags import etag, matches, parse_etag_list
from tornado_app.storage.idempotency import (KEY_HEADER, REPLAYED_HEADERS, Answer, address_scope,
                                             check_key, is_final, user_scope)
from tornado_app.core.jsonbody import parse_json_object
from tornado_app.runtime.logs import request_id_var
from tornado_app.realtime.channels import check_access, parse_channel_list
from tornado_app.schemas.common import validation_failed
from tornado_app.web.context import AppContext
from tornado_app.web.openapi import METHODS
from tornado_app.web.tornado_private import (finished, headers_written, read_to_end,
                                             reset_response, response_headers, written)
from tornado_app.core.wire import is_decimal, parse_decimal

log = logging.getLogger("tornado_app.request")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Response headers a page on another origin may read: the stream position too, since a client
# subscribes with since=<Event-Seq> after a GET.
CORS_EXPOSED = ", ".join(("X-Request-ID", "ETag", "Location", "Retry-After", "Idempotent-Replayed",
                          *POSITION_HEADERS))
CORS_ALLOWED_HEADERS = ("Authorization, Content-Type, If-Match, If-None-Match, X-Request-ID, "
                        "Last-Event-ID, Idempotency-Key")


# Generated ids: a random prefix per process and a counter, as unique as uuid4 for this purpose
# (tracing) without reading the kernel's random source on every request.
_id_prefix = uuid.uuid4().hex[:20]
_id_counter = itertools.count()


def _new_id_prefix() -> None:
    global _id_prefix
    _id_prefix = uuid.uuid4().hex[:20]  # a forked worker must not repeat its parent's ids


os.register_at_fork(after_in_child=_new_id_prefix)


def next_request_id() -> str:
    return "%s%012x" % (_id_prefix, next(_id_counter))


def request_id_of(request) -> str:
    """The client's X-Request-ID when it is sane, else a generated one; fixed per request."""
    rid = getattr(request, "request_id", None)
    if rid is None:
        sent = request.headers.get("X-Request-ID", "")
        rid = sent if _SANE_REQUEST_ID.fullmatch(sent) else next_request_id()
        request.request_id = rid
    return rid


def _authenticated(method, auth: str):
    """`method`, run only for the user its @operation(auth=...) requires: the one place where
    "bearer" (401 without a valid token) and "admin" (then 403 for another role) are enforced.
    The method finds the user in self.user; ownership (author or admin) is the domain's."""
    admin = auth == "admin"

    @functools.wraps(method)  # keeps __operation__
    async def run(self, *args, **kwargs):
        await (self.require_admin() if admin else self.require_user())
        result = method(self, *args, **kwargs)
        if result is not None:
            await result
    return run


def _idempotent(method):
    """A POST method that runs once per Idempotency-Key (see BaseHandler.run_idempotent)."""
    @functools.wraps(method)  # keeps __operation__, which the OpenAPI document reads
    async def post(self, *args, **kwargs):
        values = self.request.headers.get_list(KEY_HEADER)
        if not values or self._capturing:  # (a subclass's post calling super().post())
            return await method(self, *args, **kwargs)
        await self.run_idempotent(check_key(values), method, args, kwargs)
    return post


def render_error(handler: web.RequestHandler, error: ApiError) -> None:
    """Answers with the contract's one error shape (also used before a WebSocket upgrade)."""
    handler.set_status(error.status)
    for name, value in error.headers.items():
        handler.set_header(name, value)
    handler.set_header("Content-Type", "application/json; charset=utf-8")
    handler.finish(json.dumps(error.body(), separators=(",", ":")))


# One encoder for every JSON answer: json.dumps with arguments builds a new JSONEncoder on each
# call, half the cost of encoding a post (17.7 µs with dumps, 8.7 µs with this; timeit).
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

_fixed_by_class: dict[type, dict[str, str]] = {}
_date = [0, ""]


def _fixed_headers(cls) -> dict[str, str]:
    fixed = _fixed_by_class.get(cls)
    if fixed is None:
        fixed = {"Server": f"TornadoServer/{tornado.version}",
                 "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store",
                 "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
                 "Referrer-Policy": "no-referrer", "Content-Security-Policy": cls.csp}
        _fixed_by_class[cls] = fixed
    return fixed


def _http_date() -> str:
    now = int(time.time())
    if _date[0] != now:
        _date[:] = [now, httputil.format_timestamp(now)]
    return _date[1]


@web.stream_request_body
class BaseHandler(web.RequestHandler):
    """Streams the body in so its size is enforced as it arrives, never buffered past the limit."""

    route_name = "unknown"
    ctx: AppContext  # this process's services, set from the application's settings
    # JSON answers never need to load anything or be framed.
    csp = "default-src 'none'; frame-ancestors 'none'"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        for name in METHODS:
            spec = getattr(cls.__dict__.get(name), "__operation__", None)
            if spec is not None and spec.auth in ("bearer", "admin"):
                setattr(cls, name, _authenticated(cls.__dict__[name], spec.auth))
        # Every POST accepts Idempotency-Key, including POSTs added later. Around the auth
        # check, where the hand-placed checks were: a keyed request is scoped by its user
        # first (401 before the key is claimed), and an admin-only 403 is the key's answer.
        if "post" in cls.__dict__:
            cls.post = _idempotent(cls.__dict__["post"])

    def initialize(self, **kwargs) -> None:
        self.ctx = self.application.settings["ctx"]
        self.user = None
        self.token_family = None
        self.token_expires = None  # the access token's exp, for connections that outlive it
        # With an Idempotency-Key: the id the stores create this request's resource under, the
        # same on every retry of the key (see tornado_app/storage/idempotency.py).
        self.op_id = None
        self._capturing = False
        self._captured: tuple[Answer, object] | None = None
        self._chunks: list[bytes] = []
        self._received = 0
        self._too_large = False
        self._counted = False

    @property
    def request_id(self) -> str:
        return request_id_of(self.request)

    def clear(self) -> None:
        """Tornado's clear() with our default headers. They are fixed strings, so they are copied
        from one dict per class rather than checked by set_header on every request, and the
        Date is formatted once a second: a tenth of a small request's CPU otherwise. Then, as
        Tornado's does, the set_default_headers() hook (no measurable cost: 175.7 against
        181.3 µs of server CPU per /health request without it, median of 6 paired wrk runs)."""
        headers = httputil.HTTPHeaders(_fixed_headers(type(self)))
        headers["Date"] = _http_date()
        headers["X-Request-ID"] = self.request_id  # either checked by _SANE_REQUEST_ID or ours
        reset_response(self, headers)
        self.set_default_headers()

    def set_default_headers(self) -> None:
        """CORS headers for an allowed Origin (a subclass that overrides this calls super())."""
        origin = self.request.headers.get("Origin")
        if origin is None or not self._origin_allowed(origin):
            return
        self.set_header("Access-Control-Allow-Origin", origin)
        self.set_header("Access-Control-Expose-Headers", CORS_EXPOSED)
        self.add_header("Vary", "Origin")

    def _origin_allowed(self, origin: str) -> bool:
        # Runs from set_default_headers, which Tornado calls before initialize().
        allowed = self.application.settings["ctx"].settings.allowed_origins
        return "*" in allowed or origin.rstrip("/").lower() in allowed

    def allowed_methods(self) -> list[str]:
        return [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
                if getattr(type(self), m.lower()) is not getattr(web.RequestHandler, m.lower())]

    async def head(self, *args, **kwargs) -> None:
        """HEAD is GET without the body (Tornado drops the body of a HEAD answer and keeps its
        Content-Length), for every route that has a GET."""
        if type(self).get is web.RequestHandler.get:
            raise web.HTTPError(405)
        result = self.get(*args, **kwargs)
        if result is not None:
            await result

    def options(self, *args, **kwargs) -> None:
        """CORS preflight: allowed origins get the methods and headers they may use."""
        origin = self.request.headers.get("Origin")
        if origin is None or not self._origin_allowed(origin):
            raise ApiError(403, "forbidden", "this Origin is not allowed")
        self.set_header("Access-Control-Allow-Methods", ", ".join(self.allowed_methods()))
        self.set_header("Access-Control-Allow-Headers", CORS_ALLOWED_HEADERS)
        self.set_header("Access-Control-Max-Age", "600")
        self.send_empty(204)

    def prepare(self) -> None:
        request_id_var.set(self.request_id)
        self._counted = True
        self.ctx.inflight += 1
        if self.request.method in ("GET", "HEAD") and is_positioned(self.route_name):
            # Taken before the read (tornado_app/realtime/position.py).
            hub = self.ctx.hub
            self.set_header("Event-Seq", str(hub.last_seq))
            self.set_header("Event-Epoch", hub.log.epoch or "")
        limit = self.ctx.settings.max_body_bytes
        length = self.request.headers.get("Content-Length")
        if length is not None:
            if not is_decimal(length):
                raise ApiError(400, "invalid_json", "invalid Content-Length")
            if parse_decimal(length, maximum=limit) is None:
                raise ApiError(413, "payload_too_large", f"the body is over {limit} bytes")

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._received += len(chunk)
        if self._received > self.ctx.settings.max_body_bytes:
            # A chunked body with no length up front: answer now, keep nothing, and let the
            # connection close rather than read the rest.
            self._too_large = True
            self._chunks = []
            self.send_error(413, exc_info=(ApiError, ApiError(
                413, "payload_too_large",
                f"the body is over {self.ctx.settings.max_body_bytes} bytes"), None))
            return
        self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        if self._too_large:
            raise ApiError(413, "payload_too_large", "the body is too large")
        return b"".join(self._chunks)

    # --- input -------------------------------------------------------------------------------

    def _require_content_type(self, expected: str) -> None:
        ctype = self.request.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != expected:
            raise ApiError(415, "unsupported_media_type", f"Content-Type must be {expected}")

    def declared(self):
        """The @operation of the method serving this request (its models validate the input)."""
        name = "get" if self.request.method == "HEAD" else self.request.method.lower()
        return getattr(getattr(type(self), name, None), "__operation__", None)

    def json_body(self, model=None):
        """The body validated against its model: 415, 400 or 422 when it is not right."""
        model = model or self.declared().body
        self._require_content_type("application/json")
        data = parse_json_object(self.body)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise validation_failed(exc, "body") from None

    def form_body(self, model=None):
        model = model or self.declared().body
        self._require_content_type("application/x-www-form-urlencoded")
        fields = {}
        try:
            parsed = httputil.parse_qs_bytes(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_json", "the form is not valid UTF-8") from None
        for name, values in parsed.items():
            fields[name] = values[-1].decode("utf-8", errors="replace")
        try:
            return model.model_validate(fields)
        except ValidationError as exc:
            raise validation_failed(exc, "body") from None

    def no_body(self) -> None:
        """For endpoints that take no body: anything sent must at least be JSON."""
        if self.body.strip():
            self._require_content_type("application/json")
            parse_json_object(self.body)

    def query(self, model=None):
        model = model or self.declared().query
        values = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        try:
            return model.model_validate(values)
        except ValidationError as exc:
            raise validation_failed(exc, "query") from None

    def if_match(self):
        return parse_etag_list(self.request.headers.get("If-Match"), weak=False)

    # --- auth --------------------------------------------------------------------------------

    def bearer_token(self) -> str | None:
        header = self.request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthorized("Authorization must be 'Bearer <token>'")
        return token.strip()

    async def require_user(self) -> dict:
        if self.user is None:
            token = self.bearer_token()
            if token is None:
                raise unauthorized()
            self.user, claims = await self.ctx.auth.authenticate_claims(token)
            self.token_family, self.token_expires = claims.fam, claims.exp
        return self.user

    async def require_admin(self) -> dict:
        user = await self.require_user()
        if user["role"] != "admin":
            raise forbidden("admin role required")
        return user

    def flush(self, include_footers: bool = False):
        if not headers_written(self) and not read_to_end(self.request.connection):
            # Answered before the request was read to its end (an unknown method, an error in
            # prepare, a body over the limit): Tornado then closes the connection without
            # saying so, and a client that pipelined its next request would lose it.
            self.set_header("Connection", "close")
        return super().flush(include_footers)

    def on_finish(self) -> None:
        self._uncount()

    def on_connection_close(self) -> None:
        self._uncount()
        super().on_connection_close()

    def _uncount(self) -> None:
        if self._counted:
            self._counted = False
            self.ctx.inflight -= 1

    def compute_etag(self):
        # Versioned resources set their own ETag; nothing else gets one computed from the body.
        return None

    async def readable_channels(self, names: str) -> list[str]:
        """The `channels=a,b` parameter of long-poll and SSE, checked against the current user."""
        channels = parse_channel_list(names, self.ctx.settings.ws_max_subscriptions)
        if any(name.startswith("user:") for name in channels):
            await self.require_user()
        check_access(self.user, channels)
        return channels

    # --- safe retries ------------------------------------------------------------------------

    async def run_idempotent(self, key: str, method, args, kwargs) -> None:
        """Runs `method` once for this key and scope, or answers as its first run did.

        The answer is held back until it is stored, so a client that has seen it gets the same
        one on every retry; a 5xx is not stored and lets the next retry run again.
        """
        store = self.ctx.idempotency
        scope = await self._idempotency_scope()
        fingerprint = store.fingerprint(self.request.method, self.request.uri, self.body)
        outcome = await store.begin(scope, key, fingerprint)
        if isinstance(outcome, Answer):
            self._replay(outcome)
            return
        self.op_id = outcome.op_id
        self._capturing = True
        try:
            await method(self, *args, **kwargs)
            if self._captured is None:
                self.finish()  # the handler wrote no answer: the empty one Tornado would send
        except OutcomeUnknown:
            # No answer at all (the connection is closed, as Tornado's handling does below).
            # The retry runs again under the same op_id, which finds that write if it was made.
            self._capturing = False
            await self._settle(store.release, outcome)
            raise
        except Exception as exc:
            # Rendered as Tornado would, but into the captured answer.
            self.log_exception(*sys.exc_info())
            if self._captured is None:
                status = exc.status_code if isinstance(exc, web.HTTPError) else 500
                self.send_error(status, exc_info=sys.exc_info())
        except BaseException:
            # Cancelled (shutdown): Tornado answers it. The record keeps its lease, which runs
            # out, and a retry then takes it over.
            self._capturing = False
            raise
        self._capturing = False
        answer, chunk = self._captured
        if is_final(answer.status):
            await self._settle(store.finish, outcome, answer)
        else:
            await self._settle(store.release, outcome)
        super().finish(chunk)

    async def _settle(self, step, *args) -> None:
        try:
            await step(*args)
        except Exception as exc:
            # Answered all the same (the change, if any, is made). A retry finds the record
            # unsettled, takes it over once its lease runs out and finds the change by op_id.
            log.warning("could not settle an Idempotency-Key: %s", exc,
                        extra={"request_id": self.request_id})

    async def _idempotency_scope(self) -> str:
        """Keys are per user; anonymous requests (register, login) are per client address."""
        spec = self.declared()
        auth = spec.auth if spec is not None else None
        if auth in ("bearer", "admin") or (auth == "optional"
                                           and "Authorization" in self.request.headers):
            return user_scope((await self.require_user())["_id"])
        return address_scope(self.request.remote_ip)

    def _replay(self, answer: Answer) -> None:
        self.set_status(answer.status)
        for name, value in answer.headers.items():
            self.set_header(name, value)
        self.set_header("Idempotent-Replayed", "true")
        super().finish(answer.body or None)

    def finish(self, chunk=None):
        if not self._capturing:
            return super().finish(chunk)
        if self._captured is None:
            body = written(self) + (utf8(chunk) if chunk is not None else b"")
            sent = response_headers(self)
            headers = {name: sent[name] for name in REPLAYED_HEADERS if name in sent}
            self._captured = (Answer(self.get_status(), body, headers), chunk)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    # --- output ------------------------------------------------------------------------------

    def send_json(self, payload, status: int = 200) -> None:
        self.set_status(status)
        self.finish(_encode_json(payload))

    def send_versioned(self, doc: dict, render, status: int = 200) -> None:
        """A versioned resource with its ETag; 304 when the client's If-None-Match matches."""
        self.set_header("ETag", etag(doc["version"]))
        wanted = parse_etag_list(self.request.headers.get("If-None-Match"))
        if self.request.method in ("GET", "HEAD") and matches(wanted, doc["version"]):
            self.send_empty(304)
        else:
            self.send_json(render(doc), status=status)

    def send_empty(self, status: int = 204) -> None:
        self.set_status(status)
        self.clear_header("Content-Type")
        self.finish()

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            error = exc
        elif exc is not None and is_unavailable(exc):
            error = service_unavailable()
        elif exc is not None and is_out_of_storage(exc):
            error = insufficient_storage()
        elif isinstance(exc, web.HTTPError) and "Invalid unicode" in (exc.log_message or ""):
            # A query or path argument that is not valid UTF-8.
            error = ApiError(422, "validation_error", "the request is not valid",
                             details=[{"loc": ["query"], "msg": "not valid UTF-8"}])
        elif isinstance(exc, web.HTTPError) and status_code < 500:
            error = ApiError(status_code, message=exc.log_message if status_code != 405 else
                             f"method {self.request.method} is not allowed here")
        else:
            error = ApiError(500, "internal_error", "internal server error")
        if error.status == 405:
            methods = self.allowed_methods()
            if "GET" in methods:
                methods.insert(1, "HEAD")  # CORS needs no HEAD (a simple method); Allow does
            self.set_header("Allow", ", ".join(methods + ["OPTIONS"]))
        render_error(self, error)

    def send_error(self, status_code: int = 500, **kwargs) -> None:
        if finished(self):
            # Already answered (an oversize body gets its 413 as soon as it passes the limit).
            return
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, OutcomeUnknown):
            # The change may or may not be stored and the database cannot say yet: a 503 would
            # claim nothing changed, so there is no answer, as if the network had failed. The
            # client retries with its Idempotency-Key (tornado_app/storage/outbox.py).
            self._uncount()
            self.request.connection.stream.close()
            return
        if isinstance(exc, ApiError):
            status_code = exc.status
        elif exc is not None and is_unavailable(exc):
            status_code = 503
        elif exc is not None and is_out_of_storage(exc):
            status_code = 507
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, (ApiError, web.HTTPError)):
            return
        if isinstance(value, OutcomeUnknown):
            log.warning("%s; the connection is closed unanswered", value,
                        extra={"request_id": self.request_id})
            return
        if value is not None and is_unavailable(value):
            if self.ctx.metrics is not None:
                self.ctx.metrics.db_errors.inc()
            log.warning("database unavailable: %s", value,
                        extra={"request_id": self.request_id})
            return
        if value is not None and is_out_of_storage(value):
            log.error("database cannot write to its storage: %s", value,
                      extra={"request_id": self.request_id})
            return
        log.error("unhandled error in %s %s", self.request.method, self.request.path,
                  exc_info=(typ, value, tb), extra={"request_id": self.request_id})


class NotFoundHandler(BaseHandler):
    """Tornado's default for unknown routes, in the contract's error shape.

    Answered from the method, not from prepare(): by then the request has been read to its end
    (a body is discarded as it streams in), so the connection stays open for the next one."""

    route_name = "not_found"

    def _no_route(self, *args, **kwargs) -> None:
        raise ApiError(404, "not_found", "no such route")

    get = head = post = put = patch = delete = options = _no_route
