import pytest

from stream.worker import minute_bucket


@pytest.mark.parametrize(
    ("stamp", "bucket"),
    [
        ("2026-11-23T10:00:59Z", "2026-11-23T10:00:00+00:00"),
        ("2026-11-23T10:01:00.000+00:00", "2026-11-23T10:01:00+00:00"),
        # Offsets are honoured: 12:30:10+02:00 is 10:30 UTC.
        ("2026-11-23T12:30:10+02:00", "2026-11-23T10:30:00+00:00"),
    ],
)
def test_minute_bucket_is_utc_minute_of_event_time(stamp, bucket):
    assert minute_bucket(stamp) == bucket
