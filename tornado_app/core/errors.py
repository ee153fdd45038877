"""The one error type the API raises; handlers render it in the contract's error shape."""

from http import HTTPStatus

# The contract's error code for each status a handler can answer with.
CODE_FOR_STATUS = {
    400: "invalid_json",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "cursor_expired",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
    507: "insufficient_storage",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str | None = None, message: str | None = None,
                 details: list | None = None, headers: dict | None = None):
        self.status = status
        self.code = code or CODE_FOR_STATUS.get(status, "internal_error" if status >= 500 else "bad_request")
        self.message = message or HTTPStatus(status).phrase
        self.details = details
        self.headers = headers or {}
        super().__init__(f"{status} {self.code}: {self.message}")

    def body(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def forbidden(message: str = "you are not allowed to do this") -> ApiError:
    return ApiError(403, "forbidden", message)


def unauthorized(message: str = "authentication required") -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def validation_error(loc: list, msg: str) -> ApiError:
    return ApiError(422, "validation_error", "the request is not valid",
                    details=[{"loc": loc, "msg": msg}])


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


def precondition_failed() -> ApiError:
    return ApiError(412, "precondition_failed", "If-Match does not match the current version")


def insufficient_storage() -> ApiError:
    return ApiError(507, "insufficient_storage", "the database cannot store changes right now "
                    "(its disk is full or failing); nothing was changed, try again later",
                    headers={"Retry-After": "30"})


def service_unavailable(message: str = "the database is unreachable, try again shortly") -> ApiError:
    return ApiError(503, "service_unavailable", message, headers={"Retry-After": "5"})
