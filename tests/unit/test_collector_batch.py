"""POST /v1/batch's pure parts: limits, per-event rejections, write keys, touch rules."""

from __future__ import annotations

import orjson
import pytest

from stream.collector.batch import (
    MAX_EVENT,
    MAX_REQUEST,
    BadRequest,
    Forbidden,
    Record,
    Rejected,
    completed,
    events_of,
    prepare_all,
)
from stream.collector.touch import touch_of, with_touch
from stream.collector.write_keys import (
    OPEN,
    Source,
    WriteKeysError,
    key_of,
    parse_write_keys,
    source_of,
)
from stream.config import INPUT_TOPICS

TOPICS = dict(INPUT_TOPICS)
SHOP = Source("shop-web", "k" * 16, frozenset({"visit", "signup", "cart"}))
T = "2026-11-01T10:00:00+00:00"


def visit(**fields):
    return {"type": "visit", "visitor_id": "v1", "occurred_at": T, **fields}


def test_valid_events_are_accepted_and_bad_ones_rejected_by_index():
    events = [
        visit(event_id="e1"),
        {"type": "cart", "visitor_id": "v1", "action": "fly", "occurred_at": T},
        "not an object",
        visit(event_id="e4", occurred_at="2026-11-01T10:00:00"),  # no offset
        {"type": "signup", "visitor_id": "v1", "user_id": "u1", "occurred_at": T},
    ]
    records, rejected = prepare_all(events, SHOP, TOPICS)
    assert [r.index for r in records] == [0, 4]
    assert all(isinstance(r, Record) for r in records)
    assert records[0].topic == "shop.visits" and records[0].key == b"v1"
    assert [(r.index, r.reason) for r in rejected] == [
        (1, "invalid_field"),
        (2, "not_object"),
        (3, "invalid_timestamp"),
    ]
    assert all(isinstance(r, Rejected) and r.message for r in rejected)
    assert "action" in rejected[0].message


def test_an_oversize_event_is_rejected_alone():
    big = visit(url="https://shop.example/?q=" + "x" * 2000, referrer="r" * 2000)
    huge = {**big, "keyword": "k" * 200, "padding": "p" * MAX_EVENT}
    records, rejected = prepare_all([huge, visit()], SHOP, TOPICS)
    assert [r.reason for r in rejected] == ["oversize"] and len(records) == 1


def test_body_limits_and_shape_are_400_or_413():
    with pytest.raises(BadRequest) as exc:
        events_of(b"x" * (MAX_REQUEST + 1))
    assert exc.value.status == 413
    for body in (b"{not json", b'{"events": []}', b'"batch"'):
        with pytest.raises(BadRequest) as exc:
            events_of(body)
        assert exc.value.status == 400
    assert events_of(b'{"batch": [1, 2]}') == [1, 2]
    assert events_of(b"[1]") == [1]


def test_a_type_the_key_may_not_send_is_forbidden():
    deal = {"type": "deal_stage", "deal_id": "d1", "stage": "lead", "occurred_at": T}
    with pytest.raises(Forbidden, match="may not send 'deal_stage'"):
        prepare_all([visit(), deal], SHOP, TOPICS)
    records, _ = prepare_all([deal], OPEN, TOPICS)
    assert records[0].topic == "crm.deal-stages"


def test_event_id_is_derived_from_content_so_a_resent_batch_counts_once():
    a = completed(visit(), SHOP)
    b = completed(visit(), SHOP)
    c = completed(visit(visitor_id="v2"), SHOP)
    assert a["event_id"] == b["event_id"] != c["event_id"]
    other_source = completed(visit(), Source("other", "o" * 16, SHOP.types))
    assert other_source["event_id"] != a["event_id"]
    # Without a time of its own an event gets the arrival time and a fresh id.
    no_time = {"type": "visit", "visitor_id": "v1"}
    assert completed(no_time, SHOP)["event_id"] != completed(no_time, SHOP)["event_id"]
    assert completed(no_time, SHOP)["occurred_at"].endswith("+00:00")
    assert completed(visit(event_id="mine"), SHOP)["event_id"] == "mine"


def test_write_keys_file_errors_name_the_file_and_field():
    good = '[[source]]\nname = "web"\nkey = "0123456789abcdef"\ntypes = ["visit"]\n'
    (web,) = parse_write_keys(good, "keys.toml")
    assert web.types == {"visit"}
    bad = {
        'name = "x"': "needs at least one [[source]]",
        '[[source]]\nname = "w"\nkey = "short"\ntypes = ["visit"]': "field `key`",
        '[[source]]\nname = "w"\nkey = "0123456789abcdef"\ntypes = ["page"]': "field `types`",
        '[[source]]\nname = "w"\nkey_env = "NOPE"\ntypes = ["visit"]': "NOPE is not set",
        good + good: "share a name or a key",
    }
    for text, message in bad.items():
        with pytest.raises(WriteKeysError, match="keys.toml") as exc:
            parse_write_keys(text, "keys.toml", env={})
        assert message in str(exc.value)
    from_env = '[[source]]\nname = "w"\nkey_env = "K"\ntypes = ["cart"]\n'
    assert parse_write_keys(from_env, "k", env={"K": "x" * 20})[0].key == "x" * 20


def test_a_key_comes_from_the_bearer_header_or_the_query():
    assert key_of("Bearer abc", "") == "abc"
    assert key_of("", "q") == "q"
    assert source_of([SHOP], SHOP.key) is SHOP
    assert source_of([SHOP], "wrong") is None
    assert source_of([], "") is OPEN


@pytest.mark.parametrize(
    "url, referrer, expected",
    [
        (
            "https://shop.example/?utm_source=google&utm_medium=cpc&utm_campaign=winter&utm_term=boots",
            "",
            {
                "channel": "paid",
                "source": "google",
                "medium": "cpc",
                "campaign": "winter",
                "keyword": "boots",
            },
        ),
        (
            "https://shop.example/?gclid=abc",
            "",
            {"channel": "paid", "source": "google", "medium": "cpc"},
        ),
        (
            "https://shop.example/?yclid=1&utm_campaign=c",
            "",
            {"channel": "paid", "source": "yandex", "medium": "cpc", "campaign": "c"},
        ),
        (
            "https://shop.example/?fbclid=x",
            "",
            {"channel": "social", "source": "facebook", "medium": "social"},
        ),
        (
            "https://shop.example/?utm_source=news&utm_medium=email",
            "",
            {"channel": "email", "source": "news", "medium": "email"},
        ),
        ("https://shop.example/?utm_source=partner", "", {"channel": "other", "source": "partner"}),
        (
            "https://shop.example/",
            "https://www.google.com/search?q=x",
            {"channel": "search", "source": "google", "medium": "organic"},
        ),
        (
            "https://shop.example/",
            "https://t.co/abc",
            {"channel": "social", "source": "twitter", "medium": "social"},
        ),
        (
            "https://shop.example/",
            "https://blog.example.org/post",
            {"channel": "referral", "source": "blog.example.org", "medium": "referral"},
        ),
        (
            "https://shop.example/a",
            "https://shop.example/b",
            {"channel": "direct", "source": "direct", "medium": "none"},
        ),
        ("https://shop.example/", "", {"channel": "direct", "source": "direct", "medium": "none"}),
    ],
)
def test_touch_rules(url, referrer, expected):
    assert touch_of(url, referrer) == expected


def test_a_sender_s_own_attribution_is_kept_whole():
    mine = visit(url="https://shop.example/?utm_source=google&utm_medium=cpc", channel="tv")
    assert with_touch(mine) == mine
    filled = with_touch(visit(url="https://shop.example/?gclid=1"))
    assert filled["channel"] == "paid" and filled["visitor_id"] == "v1"
    assert with_touch({"type": "cart", "url": "https://x/?gclid=1"}).get("channel") is None


def test_accepted_values_are_what_the_worker_decodes():
    records, _ = prepare_all(
        [visit(url="https://shop.example/?utm_source=a&utm_medium=cpc")], SHOP, TOPICS
    )
    doc = orjson.loads(records[0].value)
    assert doc["channel"] == "paid" and doc["event_id"].startswith("c-")
