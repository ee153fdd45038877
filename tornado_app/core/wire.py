"""Numbers from the wire (headers, query strings, WebSocket ops), parsed one strict way.

`str.isdigit()` and `int()` accept far more than ASCII digits ('²', '١٢', ' 5', '+5', '5_0'),
and an integer of 2**63 or more cannot be stored (BSON) nor used as an index (islice). So every
number a client sends goes through here: ASCII decimal digits only, bounded.
"""

# The largest integer BSON stores, and so the largest seq, version or cursor a client may name.
MAX_INT = 2**63 - 1


def is_decimal(text) -> bool:
    """Whether `text` is one or more ASCII decimal digits, and nothing else."""
    return isinstance(text, str) and text.isascii() and text.isdigit()


def parse_decimal(text, maximum: int = MAX_INT) -> int | None:
    """The non-negative integer `text` spells in ASCII decimal digits; None when it is anything
    else or over `maximum`."""
    if not is_decimal(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(maximum)):
        return None  # too large, and int() is not asked to read a megabyte of digits
    value = int(digits)
    return value if value <= maximum else None


def bounded_int(value, minimum: int = 0, maximum: int = MAX_INT) -> bool:
    """Whether a JSON value is an integer (not a bool) within [minimum, maximum]."""
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum
