"""Times as the API writes them (tornado_app/core/clock.py): UTC, milliseconds, `Z`. No server."""

from datetime import datetime, timedelta, timezone

from bson.tz_util import utc as bson_utc

from tornado_app.core.clock import iso


def test_a_utc_time_is_written_with_milliseconds_and_z():
    assert iso(datetime(2025, 3, 4, 5, 6, 7, 89000, tzinfo=timezone.utc)) == "2025-03-04T05:06:07.089Z"


def test_microseconds_are_truncated_to_milliseconds_not_rounded():
    assert iso(datetime(2025, 1, 1, 0, 0, 59, 999999, tzinfo=timezone.utc)) == "2025-01-01T00:00:59.999Z"


def test_a_time_without_a_zone_is_taken_as_utc():
    assert iso(datetime(2025, 1, 1, 12, 0, 0)) == "2025-01-01T12:00:00.000Z"


def test_a_time_in_another_zone_is_converted_to_utc():
    zone = timezone(timedelta(hours=5, minutes=30))
    assert iso(datetime(2025, 1, 1, 5, 30, 0, 1000, tzinfo=zone)) == "2025-01-01T00:00:00.001Z"


def test_a_time_read_from_the_database_keeps_its_instant():
    # PyMongo (tz_aware) gives datetimes in bson's own UTC zone, not datetime.timezone.utc.
    assert iso(datetime(2024, 12, 31, 23, 59, 59, 500000, tzinfo=bson_utc)) == "2024-12-31T23:59:59.500Z"


def test_none_stays_none():
    assert iso(None) is None
