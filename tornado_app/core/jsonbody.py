"""JSON objects from clients (request bodies, WebSocket messages), parsed strictly and bounded."""

import json

from .errors import ApiError

MAX_JSON_DEPTH = 32
MAX_JSON_ARRAY = 1000


def _reject_duplicate_keys(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _check_shape(value) -> None:
    """Bounds what a body may make the server walk: nesting depth and array length."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if level > MAX_JSON_DEPTH:
            raise ApiError(400, "invalid_json", f"the body is nested deeper than {MAX_JSON_DEPTH}")
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            if len(item) > MAX_JSON_ARRAY:
                raise ApiError(400, "invalid_json",
                               f"an array in the body has more than {MAX_JSON_ARRAY} items")
            stack.extend((child, level + 1) for child in item)


def parse_json_object(raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, object_pairs_hook=_reject_duplicate_keys,
                          parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid UTF-8") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    _check_shape(body)
    return body
