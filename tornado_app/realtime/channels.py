"""Channel names and who may read them."""

import re

from ..core.errors import ApiError, forbidden, unauthorized

_CHANNEL = re.compile(r"posts|products|post:[0-9a-f]{24}|user:[0-9a-f]{24}")


def check_channels(names, max_count: int) -> list[str]:
    """Validates a list of channel names: each known, no more than `max_count`."""
    if not isinstance(names, list) or not names:
        raise ApiError(422, "validation_error", "channels must be a non-empty list of names")
    if len(names) > max_count:
        raise ApiError(422, "validation_error", f"at most {max_count} channels per connection")
    for name in names:
        if not isinstance(name, str) or not _CHANNEL.fullmatch(name):
            raise ApiError(422, "validation_error", f"unknown channel {str(name)[:80]!r}: expected "
                           "posts, products, post:{id} or user:{id}")
    return list(dict.fromkeys(names))


def check_access(user: dict | None, channels: list[str]) -> None:
    """user:{id} channels are private to that user and to admins."""
    for name in channels:
        if name.startswith("user:"):
            if user is None:
                raise unauthorized(f"{name} needs authentication")
            if user["role"] != "admin" and str(user["_id"]) != name[5:]:
                raise forbidden(f"{name} belongs to another user")


def parse_channel_list(value: str | None, max_count: int) -> list[str]:
    """The `channels=a,b` query parameter of long-poll and SSE."""
    if not value:
        raise ApiError(422, "validation_error", "the request is not valid",
                       details=[{"loc": ["query", "channels"], "msg": "field required"}])
    names = [part.strip() for part in value.split(",") if part.strip()]
    try:
        return check_channels(names, max_count)
    except ApiError as exc:
        raise ApiError(422, "validation_error", "the request is not valid",
                       details=[{"loc": ["query", "channels"], "msg": exc.message}]) from None


def disallowed(user: dict | None, channels) -> tuple[str, list[str]]:
    """The private channels among `channels` that `user` (None: nobody) may not read, and the
    error code that says why: `unauthorized` without a user, `forbidden` with one."""
    names = sorted(name for name in channels if name.startswith("user:"))
    if user is None:
        return "unauthorized", names
    if user["role"] == "admin":
        return "forbidden", []
    own = "user:" + str(user["_id"])
    return "forbidden", [name for name in names if name != own]
