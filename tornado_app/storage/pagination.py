"""Keyset pagination: an opaque cursor holds the sort key of the last item shown.

Paging on (sort field, _id), both immutable for a listing's order, never skips or repeats an
item however many are inserted meanwhile, unlike offsets.
"""

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from bson import ObjectId

from ..core.errors import validation_error
from ..core.ids import parse_id
from .outbox import LIVE


@dataclass(frozen=True)
class Page:
    items: list
    next_cursor: str | None

    def to_json(self, render) -> dict:
        return {"items": [render(item) for item in self.items], "next_cursor": self.next_cursor}


def _encode_value(value):
    if isinstance(value, datetime):
        return {"t": int(value.timestamp() * 1000)}
    return value


def _decode_value(value, field: str):
    """The sort value from a cursor, which must have the type of the field it pages on."""
    if field == "_id":
        return None
    if isinstance(value, dict) and set(value) == {"t"} and isinstance(value["t"], int):
        try:
            return datetime.fromtimestamp(value["t"] / 1000, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError("cursor time out of range") from None
    if field in TEXT_FIELDS and isinstance(value, str):
        return value
    if field in INT_FIELDS and isinstance(value, int) and not isinstance(value, bool) \
            and -2**63 <= value < 2**63:
        return value
    raise ValueError("bad cursor value")


def encode_cursor(order: str, value, oid: ObjectId) -> str:
    raw = json.dumps([order, _encode_value(value), str(oid)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


TEXT_FIELDS = {"name"}
INT_FIELDS = {"price_cents"}


def decode_cursor(cursor: str, order: str, field: str = "created_at"):
    """Returns (value, ObjectId) of the last item of the previous page, or raises a 422."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        kind, value, oid = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        oid = parse_id(oid)
        if kind != order or oid is None:
            raise ValueError("cursor from another listing")
        if field in TEXT_FIELDS | INT_FIELDS and isinstance(value, dict):
            raise ValueError("bad cursor value")
        return _decode_value(value, field), oid
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        raise validation_error(["query", "cursor"], "invalid cursor") from None


def keyset_filter(field: str, descending: bool, after) -> dict:
    """The Mongo filter for the items that come after `after` = (value, _id) in this order."""
    value, oid = after
    op = "$lt" if descending else "$gt"
    if field == "_id":
        return {"_id": {op: oid}}
    return {"$or": [{field: {op: value}}, {field: value, "_id": {op: oid}}]}


async def fetch_page(collection, query: dict, *, field: str, descending: bool, limit: int,
                     cursor: str | None, order: str) -> Page:
    # Never tombstones or fence placeholders (tornado_app/storage/outbox.py).
    query = {**query, **LIVE}
    if cursor:
        after = keyset_filter(field, descending, decode_cursor(cursor, order, field))
        query = {"$and": [query, after]} if query else after
    direction = -1 if descending else 1
    sort = [(field, direction)] if field == "_id" else [(field, direction), ("_id", direction)]
    docs = await collection.find(query).sort(sort).limit(limit + 1).to_list(limit + 1)
    next_cursor = None
    if len(docs) > limit:
        docs = docs[:limit]
        last = docs[-1]
        next_cursor = encode_cursor(order, last[field] if field != "_id" else None, last["_id"])
    return Page(docs, next_cursor)
