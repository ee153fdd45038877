"""JSON logs, one object per line; every request is logged with its id, route and timing."""

import json
import logging
import sys
import time
from contextvars import ContextVar

# The id of the request being served, for every log line written while serving it (each
# request runs in its own asyncio context, so concurrent requests do not mix).
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Tornado's own access log is replaced by log_request below.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)


access_log = logging.getLogger("tornado_app.access")


def log_request(metrics, handler) -> None:
    """Tornado's log_function (bound to this process's metrics by the app factory, so it needs
    nothing from the application)."""
    route = getattr(handler, "route_name", type(handler).__name__)
    status = handler.get_status()
    request = handler.request
    duration = request.request_time()
    if metrics is not None:
        metrics.observe(route, request.method, status, duration)
    if access_log.isEnabledFor(logging.INFO):
        user = getattr(handler, "user", None)
        log_access(route, request.method, request.path, status, duration,
                   getattr(request, "request_id", None), str(user["_id"]) if user else None)


def log_access(route: str, method: str, path: str, status: int, duration: float,
               request_id: str | None, user_id: str | None) -> None:
    """One access-log line; callers check `access_log.isEnabledFor(logging.INFO)` first, since
    gathering the fields costs more than the rest of a small request's logging."""
    access_log.info(
        "%s %s %s", method, path, status,
        extra={"request_id": request_id, "method": method, "path": path, "route": route,
               "status": status, "duration_ms": round(duration * 1000, 2), "user_id": user_id})
