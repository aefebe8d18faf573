import pytest

from stream.core import dedup
from stream.core.event_counts import minute_bucket
from stream.core.events import parse_timestamp
from stream.net import redacted_url


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
    assert minute_bucket(parse_timestamp(stamp)) == bucket


def test_duplicate_only_within_horizon():
    assert not dedup.is_duplicate(None, 100.0, 60)
    assert dedup.is_duplicate(100.0, 100.0, 60)
    assert dedup.is_duplicate(100.0, 160.0, 60)
    assert not dedup.is_duplicate(100.0, 160.5, 60)
    # A resend that carries an earlier time is the same event too.
    assert dedup.is_duplicate(160.0, 100.0, 60)


def test_expiry_is_per_partition_watermark_and_skips_unowned_partitions():
    seen = [("0|a", 10.0), ("0|b", 95.0), ("1|c", 10.0), ("2|d", 0.0)]
    old = dedup.expired(seen, {0: 100.0, 1: 50.0}, horizon=60)
    assert old == {0: ["0|a"]}
    old = dedup.expired(seen, {0: 200.0, 1: 71.0}, horizon=60)
    assert old == {0: ["0|a", "0|b"], 1: ["1|c"]}


def test_json_log_lines_survive_non_string_keys_and_odd_values():
    import json
    import logging

    from stream.logs import JsonFormatter

    record = logging.makeLogRecord(
        {"msg": "batch", "levelno": 20, "levelname": "INFO", "ranges": {0: (1, 2)}, "obj": object()}
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "batch" and line["ranges"] == {"0": [1, 2]}


def test_redis_passwords_never_reach_the_logs():
    assert redacted_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redacted_url("rediss://user:pw@h/1") == "rediss://user:***@h/1"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_a_table_emptied_by_its_engines_gives_its_memory_back():
    import sys
    from collections import UserDict
    from types import SimpleNamespace

    from stream.worker.transactions import drop_keys, shrink

    keys = [f"0|{i}" for i in range(50_000)]
    store = UserDict(dict.fromkeys(keys, b"j"))  # as Faust's memory store: .data, .pop
    store._key_partition = dict.fromkeys(keys, 0)
    table = SimpleNamespace(data=store)
    drop_keys(table, keys[1:])  # what the engines took over; one journey stays
    full = sys.getsizeof(store.data) + sys.getsizeof(store._key_partition)
    shrink(table)
    assert store.data == {"0|0": b"j"} and store._key_partition == {"0|0": 0}
    assert sys.getsizeof(store.data) + sys.getsizeof(store._key_partition) < full / 100
