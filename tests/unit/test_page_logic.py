"""Pure parts of the live page: drop flags, trend ranges, the SVG chart, the served files."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from stream.api import assets as page
from stream.api import query as api
from stream.core.chart import funnel_svg
from stream.core.funnels import load_funnels
from stream.core.summary import flag_drops, summarise

SHOP = next(f for f in load_funnels() if f.name == "shop")


def doc(reached: list[int], by_channel: dict[str, list[int]] | None = None) -> dict:
    sums = {("reached", i, "", ""): n for i, n in enumerate(reached)}
    for value, counts in (by_channel or {}).items():
        sums.update({("reached", i, "channel", value): n for i, n in enumerate(counts)})
    return summarise(SHOP, sums, "5m", None, None, breakdown="channel" if by_channel else None)


def test_a_step_far_below_its_baseline_is_flagged_and_only_that_step():
    now = doc([1000, 500, 250, 125, 6])  # purchase 6/125 = 4.8 % of checkouts
    before = doc([1000, 500, 250, 125, 100])  # 80 % before
    flag_drops(now, before, drop=0.5, min_volume=100)
    flags = {s["name"]: s["flagged"] for s in now["steps"]}
    assert flags == {"visit": False, "signup": False, "cart": False, "checkout": False,
                     "purchase": True}  # fmt: skip
    assert now["flagged_steps"] == ["purchase"]
    assert now["steps"][4]["baseline_conversion"] == 0.8


@pytest.mark.parametrize(
    ("now", "before", "why"),
    [
        ([1000, 500, 250, 125, 60], [1000, 500, 250, 125, 100], "48% of 80% is not below half"),
        ([100, 50, 25, 12, 0], [1000, 500, 250, 125, 100], "12 checkouts: below min volume"),
        ([1000, 500, 250, 125, 6], [0, 0, 0, 0, 0], "no baseline"),
        ([0, 0, 0, 0, 0], [1000, 500, 250, 125, 100], "no traffic now"),
    ],
)
def test_no_flag_without_a_real_drop(now, before, why):
    shown = flag_drops(doc(now), doc(before), drop=0.5, min_volume=100)
    assert shown["flagged_steps"] == [], why


def test_breakdown_values_are_compared_with_their_own_baseline():
    now = doc([2000, 1000, 500, 250, 106], {"google": [1000, 500, 250, 125, 6],
                                             "email": [1000, 500, 250, 125, 100]})  # fmt: skip
    before = doc([2000, 1000, 500, 250, 200], {"google": [1000, 500, 250, 125, 100],
                                                "email": [1000, 500, 250, 125, 100]})  # fmt: skip
    flag_drops(now, before, drop=0.5, min_volume=100)
    channels = now["breakdown"]["channel"]
    assert channels["google"]["flagged_steps"] == ["purchase"]
    assert channels["email"]["flagged_steps"] == []
    assert now["flagged_steps"] == []  # 106/250 = 42 % vs 80 %: not below half overall


def test_baseline_is_the_long_window_before_the_shown_one():
    query = api.parse_query({"window": "5m"}, SHOP, now=10_000.0)
    assert api.baseline_range(query, 3600) == (10_000.0 - 300 - 3600, 10_000.0 - 300)


def test_trend_ranges_are_contiguous_whole_buckets_ending_with_now():
    ranges = api.trend_ranges({"hours": "6", "points": "24"}, now=100_030.0, bucket=60)
    assert len(ranges) == 24
    assert all(b - a == 900 for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(23))
    assert ranges[-1][0] <= 100_030.0 < ranges[-1][1] and ranges[-1][1] % 60 == 0


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"hours": "x"}, "hours"), ({"hours": "0"}, "hours"), ({"points": "1000"}, "points")],
)
def test_trend_bad_parameters_name_the_parameter(params, parameter):
    with pytest.raises(api.BadQuery) as exc:
        api.trend_ranges(params, now=0.0, bucket=60)
    assert exc.value.parameter == parameter


def test_chart_is_valid_svg_with_counts_neck_and_flag():
    shown = doc([1000, 500, 250, 125, 6])
    flag_drops(shown, doc([1000, 500, 250, 125, 100]), drop=0.5, min_volume=100)
    svg = funnel_svg(shown)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag.endswith("svg")
    text = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
    for name, count in [("visit", "1,000"), ("checkout", "125"), ("purchase", "6")]:
        assert name in text and count in text
    assert "sudden drop" in text and "#dc2626" in svg  # the flagged step in red
    assert "overall conversion 0.6%" in text


def test_chart_marks_the_narrow_neck_and_says_when_empty():
    svg = funnel_svg(doc([1000, 100, 90, 80, 70]))
    assert "narrow neck" in svg and "#f59e0b" in svg
    assert "no events in this window yet" in funnel_svg(doc([0, 0, 0, 0, 0]))


def test_page_files_are_served_by_name_only():
    html, kind = page.asset("index.html")
    assert kind == "text/html" and b'src="/static/page.js"' in html
    assert page.asset("page.js")[1] == "text/javascript"
    assert page.asset("page.css")[1] == "text/css"
    for bad in ["../config.py", "web/page.js", "missing.js", "funnels.toml", ""]:
        assert page.asset(bad) is None, bad


def test_abandoned_cart_query_defaults_and_bad_parameters():
    assert api.parse_cart_query({}) == (24.0, 100)
    assert api.parse_cart_query({"hours": "2.5", "limit": "7"}) == (2.5, 7)
    for params, parameter in (
        ({"hours": "0"}, "hours"),
        ({"hours": "x"}, "hours"),
        ({"hours": str(24 * 36)}, "hours"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "many"}, "limit"),
    ):
        with pytest.raises(api.BadQuery) as err:
            api.parse_cart_query(params)
        assert err.value.parameter == parameter


def test_funnel_parameter_picks_among_the_candidates():
    shop, sales = load_funnels()
    assert api.pick_funnel({}, [sales], "a pipeline") is sales
    assert api.pick_funnel({"funnel": "shop"}, [shop, sales], "any") is shop
    with pytest.raises(api.BadQuery) as err:
        api.pick_funnel({"funnel": "shop"}, [sales], "a pipeline broken down by manager")
    assert err.value.parameter == "funnel" and "['sales']" in str(err.value)
    with pytest.raises(api.BadQuery):
        api.pick_funnel({}, [], "a pipeline")
