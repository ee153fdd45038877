"""Logs on stderr, JSON (one object per line) or console lines for a person in a terminal; every
request is logged with its id, route and timing."""

import json
import logging
import os
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


class ConsoleFormatter(logging.Formatter):
    """`12:00:01.234 INFO  tornado_app.access  GET /api/v1/posts 200  request_id=… duration_ms=…`:
    the same fields as the JSON lines, for reading in a terminal."""

    COLORS = {"DEBUG": "\033[2m", "INFO": "\033[32m", "WARNING": "\033[33m",
              "ERROR": "\033[31m", "CRITICAL": "\033[1;31m"}
    DIM, RESET = "\033[2m", "\033[0m"

    def __init__(self, color: bool):
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        level = f"{record.levelname:<7}"
        extras = " ".join(f"{key}={value}" for key, value in vars(record).items()
                          if key not in _STANDARD and not key.startswith("_") and value is not None
                          and key not in ("method", "path", "status"))
        if self.color:
            level = self.COLORS.get(record.levelname, "") + level + self.RESET
            extras = extras and self.DIM + extras + self.RESET
        line = f"{stamp} {level} {record.name}  {record.getMessage()}"
        if extras:
            line += "  " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def use_color(stream) -> bool:
    """Colour on a terminal, or when FORCE_COLOR is set; never with NO_COLOR."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ConsoleFormatter(use_color(sys.stderr)) if fmt == "console"
                         else JsonFormatter())
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
