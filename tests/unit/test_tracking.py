"""Call tracking configuration and attribution rules (pure parts)."""

from __future__ import annotations

import pytest

from stream.core.tracking import (
    TrackingConfigError,
    fill,
    lease_request,
    load_tracking,
    parse_tracking,
)


def test_shipped_tracking_file_loads_with_a_pool_range_and_a_default_static_number():
    tracking = load_tracking()
    assert len(tracking.pool) == 2000 and tracking.pool[0] == "+15555552000"
    assert tracking.static_for("google") == "+15555550150"
    assert tracking.static_for("never-heard-of") == tracking.default_static == "+15555550152"
    assert not set(tracking.pool) & set(tracking.static)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[tracking]\nlease = "soon"', "field `lease`"),
        ('[tracking]\npool = ["12"]', "pool entry 1: '12' is not a phone number"),
        ('[tracking]\npool = ["+15550100..+15550099"]', "low to high"),
        ('[tracking]\npool = ["+15550100", "+15550100"]', "listed twice"),
        ('[tracking]\ncolour = "red"', "unknown field(s) ['colour']"),
        ('[[tracking.static]]\nnumber = "+15550100"', "needs a channel or source"),
        (
            '[[tracking.static]]\nnumber = "+15550100"\nsource = "a"\ndefault = true\n'
            '[[tracking.static]]\nnumber = "+15550101"\nsource = "b"\ndefault = true',
            "only one static number can be the default",
        ),
    ],
)
def test_bad_tracking_files_say_where_and_why(text, message):
    with pytest.raises(TrackingConfigError) as err:
        parse_tracking(text, "t.toml")
    assert str(err.value).startswith("t.toml: ") and message in str(err.value)


def test_lease_requests_are_checked_field_by_field():
    assert lease_request({"visitor_id": "v1", "campaign": "c", "junk": 1}) == {
        "visitor_id": "v1",
        "campaign": "c",
    }
    for body, field in (({}, "visitor_id"), ({"visitor_id": 5}, "visitor_id"), ([], "body")):
        with pytest.raises(ValueError, match=field):
            lease_request(body)
    with pytest.raises(ValueError, match="keyword"):
        lease_request({"visitor_id": "v", "keyword": "x" * 129})


def test_fill_never_overrides_what_the_event_says_itself():
    doc = {"type": "call", "channel": "phone", "campaign": None}
    touch = {"channel": "paid", "campaign": "spring", "visitor_id": "v1", "user_id": "u"}
    assert fill(doc, touch) == ["campaign", "visitor_id"]
    assert doc == {"type": "call", "channel": "phone", "campaign": "spring", "visitor_id": "v1"}
    assert fill(doc, None) == []
