"""Property tests: the decoder never raises anything but Rejection, and agrees with the schemas."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import INPUT_TOPICS
from stream.core.events import REASONS, TIMESTAMP_PATTERN, Rejection, decode, encode
from tests.unit.test_schemas import MANIFEST, NOW, TOPIC_TYPE, schema_errors

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
VALID = [(c["topic"], json.loads((EXAMPLES / c["file"]).read_text())) for c in MANIFEST["valid"]]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)
timestamps = st.one_of(
    st.text(max_size=40),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),
    st.from_regex(TIMESTAMP_PATTERN, fullmatch=True),
)


@st.composite
def mutated_events(draw):
    topic, event = draw(st.sampled_from(VALID))
    event = dict(event)
    keys = sorted(event)
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "set", "timestamp", "add", "retype"]))
        if action == "drop" and event:
            event.pop(draw(st.sampled_from(sorted(event))), None)
        elif action == "set":
            event[draw(st.sampled_from(keys))] = draw(json_values)
        elif action == "timestamp":
            event["occurred_at"] = draw(timestamps)
        elif action == "add":
            event[draw(st.text(max_size=12))] = draw(json_values)
        elif action == "retype":
            event["type"] = draw(st.sampled_from([*INPUT_TOPICS, "x", ""]))
    topic = draw(st.sampled_from([topic, *INPUT_TOPICS.values()]))
    return topic, event


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300), st.sampled_from(sorted(INPUT_TOPICS)))
def test_arbitrary_bytes_only_ever_reject(raw, expected_type):
    try:
        decode(raw, expected_type, now=NOW)
    except Rejection as exc:
        assert exc.reason in REASONS


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_events())
def test_mutated_events_reject_cleanly_and_agree_with_the_schema(case):
    topic, event = case
    raw = orjson.dumps(event)
    errors = schema_errors(topic, raw)
    try:
        decoded = decode(raw, TOPIC_TYPE[topic], now=NOW)
    except Rejection as exc:
        assert exc.reason in REASONS
        assert exc.message
        # Where the decoder says no and the schema says yes, it must be a
        # rule JSON Schema cannot express.
        if not errors:
            assert exc.reason in ("invalid_timestamp", "future_timestamp"), exc.message
        return
    assert errors == [], f"decoder accepted what the schema rejects: {errors}"
    # What was accepted survives a round trip unchanged.
    again = decode(encode(decoded), TOPIC_TYPE[topic], now=NOW)
    assert again == decoded


@settings(max_examples=300)
@given(st.binary(min_size=1, max_size=50), st.integers(0, 400))
def test_bytes_spliced_into_valid_events_only_ever_reject(noise, at):
    topic, event = VALID[at % len(VALID)]
    raw = orjson.dumps(event)
    raw = raw[: at % len(raw)] + noise + raw[at % len(raw) :]
    try:
        decode(raw, TOPIC_TYPE[topic], now=NOW)
    except Rejection as exc:
        assert exc.reason in REASONS


near_timestamps = st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt _][0-9]{2}:[0-9]{2}(:[0-9]{2})?([.,][0-9]{0,12})?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{0,2})?\Z"
)


@settings(max_examples=1500)
@given(st.one_of(timestamps, near_timestamps))
def test_timestamps_decoder_and_schema_agree(stamp):
    event = {"event_id": "e", "type": "visit", "occurred_at": stamp, "visitor_id": "v"}
    raw = orjson.dumps(event)
    errors = schema_errors("shop.visits", raw)
    try:
        decode(raw, "visit", now=float("inf"))
    except Rejection as exc:
        assert exc.reason in ("invalid_timestamp", "invalid_field"), exc.message
        return
    assert errors == [], f"decoder accepted {stamp!r}, the schema did not: {errors}"
