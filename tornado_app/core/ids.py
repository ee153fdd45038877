"""Resource ids: ObjectId hex strings on the wire. A malformed id simply names nothing."""

from bson import ObjectId
from bson.errors import InvalidId


def parse_id(value) -> ObjectId | None:
    if not isinstance(value, str) or len(value) != 24:
        return None
    try:
        return ObjectId(value)
    except (InvalidId, TypeError):
        return None
