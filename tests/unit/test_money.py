"""Money, sales and forecast figures == a plain batch computation over the same events.

The generated business is simple enough to compute by hand per entity (each
visitor's events fall in one funnel window; each deal is a lead, some stages,
then won, lost or still open), so the oracle here is a few sums and divisions
over the raw event list; the stream side is the engine on a shuffled,
duplicated arrival order, then stream/core/summary.py and stream/core/money.py.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core import money
from stream.core.engine import Engine
from stream.core.events import decode
from stream.core.funnels import parse_funnels
from stream.core.summary import summarise

FUNNELS = parse_funnels(
    """
[[funnel]]
name = "shop"
window = "1d"
currency = "EUR"
breakdowns = ["channel", "campaign", "region"]
steps = [
  { name = "visit",    match = { type = "visit" } },
  { name = "cart",     match = { type = "cart", action = "add" } },
  { name = "purchase", match = { type = "cart", action = "purchase" } },
]

[[funnel]]
name = "sales"
mode = "pipeline"
window = "30d"
currency = "EUR"
breakdowns = ["channel", "campaign", "manager"]
stages = ["lead", "qualified", "proposal", "won"]
probabilities = { proposal = 0.5 }
"""
)
SHOP, SALES = FUNNELS
BASE = 1_795_000_000.0  # 2026-11-18
LATENESS = 600.0
CHANNELS = {"paid": ["brand", "generic"], "social": ["video"], "email": [None]}


def event(doc: dict, ts: float):
    doc = {k: v for k, v in doc.items() if v is not None}
    doc["occurred_at"] = datetime.fromtimestamp(ts, UTC).isoformat()
    return decode(orjson.dumps(doc), now=float("inf"))


def business(seed: int, visitors: int, deals: int) -> tuple[list, dict]:
    """Events in time order, and what happened, written down as it is generated."""
    rng = random.Random(seed)
    events, truth = [], defaultdict(list)
    n = 0

    def emit(doc: dict, ts: float) -> None:
        nonlocal n
        n += 1
        events.append(event({"event_id": f"e{n}", **doc}, ts))

    for i in range(visitors):
        channel = rng.choice(sorted(CHANNELS))
        campaign = rng.choice(CHANNELS[channel])
        vid, t = f"v{i}", BASE + rng.uniform(0, 3 * 86400)
        touch = {"visitor_id": vid, "channel": channel, "campaign": campaign}
        emit({"type": "visit", **touch, "region": rng.choice(["north", "south"])}, t)
        truth["visitors"].append((vid, channel, campaign))
        if rng.random() < 0.6:
            t += rng.uniform(10, 600)
            emit({"type": "cart", "visitor_id": vid, "action": "add", "value": 10}, t)
            truth["carts"].append(vid)
            for k in range(rng.choice([0, 0, 1, 1, 2, 3])):
                t += rng.uniform(10, 3600)
                value = rng.choice([9.99, 25, 100.5])
                order = {"type": "cart", "visitor_id": vid, "action": "purchase", "value": value}
                emit({**order, "order_id": f"o{i}-{k}"}, t)
                truth["orders"].append((vid, channel, campaign, value))
                if rng.random() < 0.2:  # the shop re-sends the order under a new event id
                    emit({**order, "order_id": f"o{i}-{k}"}, t + 1)
    for day in range(4):
        for channel, campaigns in CHANNELS.items():
            for campaign in campaigns:
                date = datetime.fromtimestamp(BASE + day * 86400, UTC).date().isoformat()
                cost = round(rng.uniform(0, 200), 2)
                spend = {"type": "spend", "channel": channel, "campaign": campaign, "day": date}
                reported = BASE + (day + 1) * 86400 + rng.uniform(0, 600)
                emit({**spend, "cost": cost * 3, "currency": "EUR"}, reported)
                emit({**spend, "cost": cost, "currency": "EUR"}, reported + 60)  # correction
                truth["spend"].append((channel, campaign, cost))
    for i in range(deals):
        channel = rng.choice(sorted(CHANNELS))
        campaign = rng.choice(CHANNELS[channel])
        manager = rng.choice(["ann", "bob", "cid"])
        did, t = f"d{i}", BASE + rng.uniform(0, 3 * 86400)
        attr = {"deal_id": did, "channel": channel, "campaign": campaign, "manager": manager}
        amount = rng.choice([500, 1200, 3000])
        emit({"type": "deal_stage", **attr, "stage": "lead", "amount": amount}, t)
        truth["leads"].append((did, manager))
        if rng.random() < 0.8:
            delay = rng.uniform(30, 7200)
            call = {"type": "call", "call_id": f"c{i}", "tracking_number": "+15550100"}
            call |= {"deal_id": did, "manager": manager, "direction": "outbound"}
            emit({**call, "answered": True, "duration_s": 120}, t + delay)
            truth["responses"].append((manager, delay))
            truth["calls"].append((manager, True, "outbound", 120))
        stage = rng.choice(["lead", "qualified", "proposal"])
        if stage != "lead":
            t += 3600
            emit({"type": "deal_stage", "deal_id": did, "stage": stage}, t)
        end = rng.choice(["open", "won", "lost"])
        if end == "won":
            emit({"type": "deal_stage", "deal_id": did, "stage": "won", "status": "won"}, t + 60)
            truth["won"].append((did, channel, campaign, manager, amount))
        elif end == "lost":
            lost = {"type": "deal_stage", "deal_id": did, "stage": stage, "status": "lost"}
            emit(lost, t + 60)
            truth["lost"].append(manager)
        else:
            truth["open"].append((stage, amount))
        truth["reached"].append(stage if end != "won" else "won")
    for i in range(deals // 2):  # inbound calls to managers, some missed
        manager = rng.choice(["ann", "bob", "cid"])
        answered = rng.random() < 0.7
        call = {"type": "call", "call_id": f"in{i}", "tracking_number": "+15550199"}
        call |= {"manager": manager, "direction": "inbound", "answered": answered}
        emit({**call, "duration_s": 60 if answered else 0}, BASE + rng.uniform(0, 3 * 86400))
        truth["calls"].append((manager, answered, "inbound", 60 if answered else 0))
    events.sort(key=lambda e: e.ts)
    return events, truth


def arrival(events: list, seed: int) -> list:
    """Shuffled within the allowed lateness, with re-sent duplicates."""
    rng = random.Random(seed)
    copies = events + rng.sample(events, len(events) // 10)
    return sorted(copies, key=lambda e: e.ts + rng.uniform(0, LATENESS))


def stream_docs(events: list) -> dict:
    engine = Engine(FUNNELS, bucket=60, lateness=LATENESS)
    seen: set[str] = set()
    for ev in events:
        if ev.event_id not in seen:
            seen.add(ev.event_id)
            assert engine.process(ev)
    everything = (float("-inf"), float("inf"))
    spend = engine.sums("_spend", *everything)
    docs = {}
    for f in FUNNELS:
        sums = engine.sums(f.name, *everything)
        docs[f.name] = summarise(f, sums, "all", None, None, "period", None, spend)
        for dim in ("channel", "campaign"):
            doc = summarise(f, sums, "all", None, None, "period", dim, spend)
            docs[f"{f.name}/{dim}"] = doc["breakdown"][dim]
    cohort = engine.sums("sales", *everything, view="cohort")
    docs["forecast"] = money.forecast(SALES, cohort, engine.sums("sales", *everything), "all")
    docs["managers"] = money.manager_rows(engine.sums("_calls", *everything), sums, SALES)
    docs["abandoned"] = engine.abandoned_carts(SHOP, money.cart_step(SHOP), float("-inf"), 10**6)
    return docs


def close(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and abs(a - b) <= 0.011)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**9), visitors=st.integers(1, 60), deals=st.integers(1, 30))
def test_money_figures_equal_a_batch_computation(seed, visitors, deals):
    events, truth = business(seed, visitors, deals)
    docs = stream_docs(arrival(events, seed))
    shop, sales = docs["shop"], docs["sales"]

    # Shop: revenue, AOV, customers, repeat rate, abandoned carts.
    revenue = sum(v for *_, v in truth["orders"])
    orders_by = Counter(vid for vid, *_ in truth["orders"])
    assert shop["orders"] == len(truth["orders"])
    assert close(shop["revenue"].get("EUR"), round(revenue, 2) or None)
    assert shop["customers"] == len(orders_by)
    assert shop["repeat_customers"] == sum(1 for n in orders_by.values() if n >= 2)
    want_repeat = (
        sum(1 for n in orders_by.values() if n >= 2) / len(orders_by) if orders_by else None
    )
    assert close(shop["repeat_purchase_rate"], want_repeat)
    if truth["carts"]:
        bought = len({vid for vid in orders_by})
        assert close(shop["abandoned_cart_rate"], 1 - bought / len(truth["carts"]))
    # The remarketing list: exactly the visitors who added to a cart and never bought.
    listed = {c["entity"]: c for c in docs["abandoned"]}
    assert set(listed) == set(truth["carts"]) - set(orders_by)
    touch = {vid: (channel, campaign) for vid, channel, campaign in truth["visitors"]}
    for vid, cart in listed.items():
        assert (cart["channel"], cart["campaign"]) == (touch[vid][0], touch[vid][1] or "unknown")
        assert cart["value"] == {"EUR": 10.0} and cart["step_reached"] == "cart"
    if truth["orders"]:
        assert close(shop["average_order_value"]["EUR"], revenue / len(truth["orders"]))

    # Spend, ROMI and CAC per channel and campaign (first touch = the visit's).
    for dim, index in (("channel", 0), ("campaign", 1)):
        spend_by, revenue_by, customers_by = Counter(), Counter(), defaultdict(set)
        for channel, campaign, cost in truth["spend"]:
            spend_by[(channel, campaign)[index] or "unknown"] += cost
        for vid, channel, campaign, value in truth["orders"]:
            key = (channel, campaign)[index] or "unknown"
            revenue_by[key] += value
            customers_by[key].add(vid)
        got = docs[f"shop/{dim}"]
        for value, cost in spend_by.items():
            figures = got[value]
            assert close(figures["spend"].get("EUR", 0.0), cost), (dim, value)
            if cost >= 0.01:
                want = (revenue_by[value] - cost) / cost
                assert figures["romi"]["EUR"] == pytest.approx(want, abs=1e-4), (dim, value)
                if customers_by[value]:
                    assert close(figures["cac"]["EUR"], cost / len(customers_by[value]))
    total_spend = sum(c for *_, c in truth["spend"])
    if total_spend >= 0.01:
        assert shop["romi"]["EUR"] == pytest.approx((revenue - total_spend) / total_spend, abs=1e-4)
        assert close(shop["cost_per_lead"]["EUR"], total_spend / len(truth["visitors"]))

    # Sales: won revenue, ROMI on won amounts, lead response, per manager.
    won_revenue = sum(a for *_, a in truth["won"])
    assert close(sales["revenue"].get("EUR", 0.0), won_revenue)
    if total_spend >= 0.01:
        want = (won_revenue - total_spend) / total_spend
        assert sales["romi"]["EUR"] == pytest.approx(want, abs=1e-4)
        if truth["won"]:
            assert close(sales["cac"]["EUR"], total_spend / len(truth["won"]))
    responses = [d for _, d in truth["responses"]]
    assert sales["lead_response"]["leads_answered"] == len(responses)
    if responses:
        assert sales["lead_response"]["avg_s"] == pytest.approx(
            sum(responses) / len(responses), abs=0.01
        )
    rows = {r["manager"]: r for r in docs["managers"]}
    for manager in {m for m, *_ in truth["calls"]} | {m for _, m in truth["leads"]}:
        row = rows[manager]
        calls = [c for c in truth["calls"] if c[0] == manager]
        assert row["calls"] == len(calls)
        assert row["outbound_calls"] == sum(1 for c in calls if c[2] == "outbound")
        assert row["answered_calls"] == sum(1 for c in calls if c[1])
        assert row["missed_inbound_calls"] == sum(
            1 for c in calls if c[2] == "inbound" and not c[1]
        )
        assert row["talk_time_s"] == sum(c[3] for c in calls if c[1])
        leads = sum(1 for _, m in truth["leads"] if m == manager)
        won = sum(1 for w in truth["won"] if w[3] == manager)
        assert (row["leads"], row["won"]) == (leads, won)
        assert close(row["closing_rate"], won / leads if leads else None)
        assert close(
            row["revenue"].get("EUR", 0.0), sum(w[4] for w in truth["won"] if w[3] == manager)
        )
        mine = [d for m, d in truth["responses"] if m == manager]
        if mine:
            assert row["lead_response"]["avg_s"] == pytest.approx(sum(mine) / len(mine), abs=0.01)

    # Forecast: open deals weighted by configured (proposal) or observed won share.
    forecast = docs["forecast"]
    stages = ["lead", "qualified", "proposal", "won"]
    won_n = len(truth["won"])
    weighted, expected = 0.0, 0.0
    for stage, amount in truth["open"]:
        k = stages.index(stage)
        if stage == "proposal":
            p = 0.5
        else:
            reached_k = sum(1 for r in truth["reached"] if stages.index(r) >= k)
            p = won_n / reached_k
        weighted += amount * p
        expected += p
    assert forecast["open_deals"] == len(truth["open"])
    assert close(forecast["weighted_value"].get("EUR", 0.0), weighted)
    assert forecast["expected_wins"] == pytest.approx(expected, abs=1e-3)


def test_spend_is_spread_evenly_over_its_day():
    day = 1_795_046_400.0  # a UTC midnight
    assert day % 86400 == 0
    assert money.spend_ranges(day + 3600, day + 7200) == [(day, day + 86400, 1 / 24)]
    three = money.spend_ranges(day + 43200, day + 2 * 86400 + 21600)
    assert three == [
        (day, day + 86400, 0.5),
        (day + 86400, day + 2 * 86400, 1.0),
        (day + 2 * 86400, day + 3 * 86400, 0.25),
    ]
    assert money.spend_ranges(float("-inf"), float("inf")) == [(float("-inf"), float("inf"), 1.0)]


def test_a_corrected_spend_report_replaces_the_first_whatever_the_arrival_order():
    spend = {"type": "spend", "channel": "paid", "day": "2026-11-20", "currency": "EUR"}
    first = event({"event_id": "s1", **spend, "cost": 500}, BASE + 86400 * 3)
    fixed = event({"event_id": "s2", **spend, "cost": 120}, BASE + 86400 * 3 + 60)
    for order in ([first, fixed], [fixed, first]):
        engine = Engine(FUNNELS, bucket=60, lateness=LATENESS)
        for ev in order:
            engine.process(ev)
        got = engine.sums("_spend", float("-inf"), float("inf"))
        assert money.amounts(got, "spend") == {"EUR": 120.0}
        assert money.amounts(got, "spend", "channel", "paid") == {"EUR": 120.0}
