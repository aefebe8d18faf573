"""Rejection reasons reach logs, the dead-letter headers and metrics: they name
the field and what it allows, never the value (a phone number or an e-mail put
in the wrong field must not land in the logs)."""

from __future__ import annotations

import orjson
import pytest

from stream.core.events import EVENT_TYPES, Rejection, decode

VALID = {
    "visit": {"visitor_id": "v1"},
    "signup": {"visitor_id": "v1", "user_id": "u1", "method": "account"},
    "cart": {"visitor_id": "v1", "action": "add", "value": 1.5, "currency": "EUR"},
    "call": {"call_id": "c1", "tracking_number": "+15555550100", "direction": "inbound"},
    "deal_stage": {"deal_id": "d1", "stage": "lead", "status": "open"},
    "spend": {"channel": "ads", "day": "2026-11-01", "cost": 3.0, "currency": "EUR"},
}
PERSONAL = ["+79161234567", "jane.doe@example.com", "Jane Doe, 12 Main St"]


def rejection_of(doc: dict) -> Rejection | None:
    try:
        decode(orjson.dumps(doc), now=2e9)
    except Rejection as rejection:
        return rejection
    return None


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
@pytest.mark.parametrize("value", PERSONAL)
def test_a_personal_value_in_any_field_is_not_repeated_in_the_rejection(
    kind: str, value: str
) -> None:
    base = {"type": kind, "event_id": "e1", "occurred_at": "2026-11-01T10:00:00Z", **VALID[kind]}
    assert rejection_of(base) is None
    rejected = 0
    for field in [*base, "schema_version"]:
        for bad in (value, [value], {"x": value}):
            rejection = rejection_of({**base, field: bad})
            if rejection is None:
                continue  # a free-text field: valid there
            rejected += 1
            assert value not in str(rejection), (field, str(rejection))
            assert value not in rejection.message
    assert rejected >= len(base)  # every field rejects at least a list


def test_an_unknown_enum_value_says_what_is_allowed() -> None:
    base = {"type": "cart", "event_id": "e1", "occurred_at": "2026-11-01T10:00:00Z"}
    rejection = rejection_of({**base, **VALID["cart"], "action": PERSONAL[0]})
    assert rejection is not None and rejection.field == "action"
    assert rejection.message == "field `action`: not one of add, remove, checkout, purchase"
    rejection = rejection_of({**base, "type": PERSONAL[1]})
    assert rejection is not None and rejection.reason == "unknown_type"
    assert "visit, signup, cart, call, deal_stage, spend" in rejection.message
