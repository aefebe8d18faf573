"""Money, sales and forecast figures from summed counters (pure logic).

Marketing asks which channel, campaign and keyword brought the money and
what it cost; sales managers ask who closes and how fast they call back.
Everything here is read from the same summed counters as the conversion
figures (stream/core/engine.py writes them), so it is as exact as they are and
the API, the page and the replay agree.

Amounts are counted in cents per currency (metric ``revenue:EUR`` and so on);
figures in different currencies are never added up.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from stream.core.engine import CENTS, LEAD_RESPONSE_BOUNDS
from stream.core.funnels import Funnel

Sums = dict[tuple[str, int, str, str], float]
DAY = 86400
# Dimensions that ad spend is reported by: only these breakdowns get spend figures.
SPEND_DIMS = ("channel", "campaign")
FORECAST_DAYS = 7


def ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def amounts(sums: Sums, prefix: str, dim: str = "", value: str = "") -> dict[str, float]:
    """``{currency: amount}`` of one money metric (``revenue``, ``spend``, ...)."""
    out: Counter[str] = Counter()
    for (metric, _, d, v), n in sums.items():
        if d == dim and v == value and metric.startswith(prefix + ":"):
            out[metric[len(prefix) + 1 :]] += n
    return {cur: round(n / CENTS, 2) for cur, n in sorted(out.items()) if n}


def total(sums: Sums, metric: str, dim: str = "", value: str = "") -> int:
    key = (dim, value)
    return int(sum(n for (m, _, d, v), n in sums.items() if m == metric and (d, v) == key))


def stage_cents(sums: Sums, prefix: str, step: int) -> dict[str, float]:
    """``{currency: cents}`` of one money metric at one stage, totals only (zeros kept)."""
    return {
        metric[len(prefix) + 1 :]: n
        for (metric, s, d, _v), n in sorted(sums.items())
        if s == step and not d and metric.startswith(prefix + ":")
    }


def reached(sums: Sums, step: int, dim: str, value: str) -> float:
    """Entries at a step in whichever view the sums are of (period or cohort)."""
    return sums.get(("reached", step, dim, value), sums.get(("cohort", step, dim, value), 0))


def per(money: dict[str, float], count: float) -> dict[str, float]:
    return {cur: round(amount / count, 2) for cur, amount in money.items()} if count else {}


def cart_step(funnel: Funnel) -> int | None:
    """The step of adding to a cart (for the abandoned cart rate), if the funnel has one."""
    for i, step in enumerate(funnel.steps):
        if step.match.get("type") == {"cart"} and "add" in step.match.get("action", ()):
            return i
    return None


def order_figures(funnel: Funnel, sums: Sums, dim: str, value: str) -> dict[str, Any]:
    """Shop figures of a sequence funnel: orders are its last step's events."""
    revenue = amounts(sums, "revenue", dim, value)
    orders = total(sums, "orders", dim, value)
    customers = total(sums, "customers", dim, value)
    repeat = total(sums, "repeat_customers", dim, value)
    out: dict[str, Any] = {
        "orders": orders,
        "revenue": revenue,
        "average_order_value": per(revenue, orders),
        "customers": customers,
        "revenue_per_customer": per(revenue, customers),
        "repeat_customers": repeat,
        "repeat_purchase_rate": ratio(repeat, customers),
        "repeat_revenue": amounts(sums, "repeat_revenue", dim, value),
    }
    cart = cart_step(funnel)
    if cart is not None:
        carts = reached(sums, cart, dim, value)
        bought = reached(sums, len(funnel.steps) - 1, dim, value)
        out["abandoned_cart_rate"] = None if not carts else round(1 - bought / carts, 6)
    return out


def deal_figures(funnel: Funnel, sums: Sums, dim: str, value: str) -> dict[str, Any]:
    """Won revenue and lead response of a pipeline (lead -> first answered call)."""
    revenue = amounts(sums, "revenue", dim, value)
    won = reached(sums, len(funnel.stages) - 1, dim, value)
    answered = total(sums, "lr", dim, value)
    return {
        "revenue": revenue,
        "average_deal_size": per(revenue, won),
        "lead_response": {
            "leads_answered": answered,
            "avg_s": round(total(sums, "lr_ms", dim, value) / answered / 1000, 3)
            if answered
            else None,
        },
    }


def spend_figures(
    spend: dict[str, float], revenue: dict[str, float], leads: int, customers: int
) -> dict[str, Any]:
    """Cost per lead, customer acquisition cost and ROMI = (revenue - spend) / spend."""
    return {
        "spend": spend,
        "cost_per_lead": per(spend, leads),
        "cac": per(spend, customers),
        "romi": {
            cur: round((revenue.get(cur, 0.0) - cost) / cost, 6)
            for cur, cost in spend.items()
            if cost
        },
    }


def lead_response_histogram(sums: Sums) -> tuple[list[tuple[str, int]], float]:
    """Cumulative ``(le, count)`` buckets and the sum in seconds, for Prometheus."""
    buckets, cumulative = [], 0
    for bound in (*LEAD_RESPONSE_BOUNDS, "inf"):
        cumulative += int(sums.get((f"lr:{bound}", 0, "", ""), 0))
        buckets.append(("+Inf" if bound == "inf" else str(float(bound)), cumulative))
    return buckets, total(sums, "lr_ms") / 1000


def spend_ranges(start: float, end: float) -> list[tuple[float, float, float]]:
    """Day ranges whose spend falls in [start, end), each with the share of it that does.

    Spend is reported per day and spread evenly over it, so a trailing hour
    carries 1/24 of the day's cost. Whole days inside the range come as one
    range with share 1; the partial days at either edge each as their own.
    """
    if start == float("-inf") or end == float("inf"):
        return [(start if start == float("-inf") else start // DAY * DAY, end, 1.0)]
    first, last = start // DAY * DAY, (end - 1e-9) // DAY * DAY
    if first == last:
        return [(first, first + DAY, (end - start) / DAY)]
    out = [(first, first + DAY, (first + DAY - start) / DAY)]
    if last > first + DAY:
        out.append((first + DAY, last, 1.0))
    out.append((last, last + DAY, (end - last) / DAY))
    return out


def prorated(parts: list[tuple[Sums, float]]) -> Sums:
    """Spend sums of ``spend_ranges``' day ranges, each scaled by its share, added up."""
    out: Counter = Counter()
    for got, share in parts:
        for key, n in got.items():
            out[key] += n * share
    return dict(out)


def spend_in(read: Callable[[float, float], Sums], start: float, end: float) -> Sums:
    """Spend counters (cents) for [start, end), days prorated; ``read(start, end)``
    gives the spend ledger's sums (engine.sums("_spend", ...) offline)."""
    return prorated([(read(lo, hi), share) for lo, hi, share in spend_ranges(start, end)])


async def spend_sums(read: Callable, start: float, end: float) -> tuple[Sums, list[int]]:
    """``spend_in`` over all workers: ``read`` is async and returns ``(sums,
    partitions not answered)``, as the worker's cluster query does."""
    parts, missing = [], set()
    for lo, hi, share in spend_ranges(start, end):
        got, lost = await read(lo, hi)
        missing.update(lost)
        parts.append((got, share))
    return prorated(parts), sorted(missing)


def forecast(
    funnel: Funnel, cohort: Sums, recent: Sums, range_name: str, days: int = FORECAST_DAYS
) -> dict[str, Any]:
    """Weighted pipeline value and expected leads and wins of the next ``days``.

    ``cohort``: cohort-view sums over the forecast range (the open deals and
    the stage-to-won rates observed on the deals that entered in it);
    ``recent``: period-view sums over the last ``days`` (current lead flow).
    A stage's probability is the configured one or else the observed share of
    deals that reached the stage and were won.
    """
    names = funnel.stages
    last = len(names) - 1
    won = cohort.get(("cohort", last, "", ""), 0)
    stages, weighted, expected = [], Counter(), 0.0
    for k, name in enumerate(names[:-1]):
        open_k = int(cohort.get(("open", k, "", ""), 0))
        open_amount = {
            cur: round(n / CENTS, 2) for cur, n in stage_cents(cohort, "open_amount", k).items()
        }
        configured = funnel.probabilities[k] if funnel.probabilities else None
        reached = cohort.get(("cohort", k, "", ""))
        # Weighted with the exact share; only the figure shown is rounded (weighting
        # with the rounded share was off by a cent or more on large pipelines).
        p = configured if configured is not None else (won / reached if reached else None)
        if p is not None:
            expected += open_k * p
            for cur, amount in open_amount.items():
                weighted[cur] += amount * p
        stages.append(
            {
                "name": name,
                "open": open_k,
                "open_amount": open_amount,
                "probability": p if configured is not None else ratio(won, reached or 0),
                "probability_from": "config" if configured is not None else "observed",
            }
        )
    leads = cohort.get(("cohort", 0, "", ""), 0)
    recent_leads = recent.get(("reached", 0, "", ""), 0)
    closing = ratio(won, leads)
    return {
        "range": range_name,
        "open_deals": sum(s["open"] for s in stages),
        "stages": stages,
        "weighted_value": {cur: round(v, 2) for cur, v in sorted(weighted.items())},
        "expected_wins": round(expected, 3),
        "next_period": {
            "days": days,
            "expected_leads": recent_leads,
            "expected_wins": None if closing is None else round(recent_leads * closing, 3),
        },
    }


def manager_rows(calls: Sums, deals: Sums, funnel: Funnel) -> list[dict[str, Any]]:
    """Per manager: calls made and answered, missed inbound, talk time, lead
    response, deals, closing rate and revenue (``calls``: the calls ledger's
    sums; ``deals``: a pipeline's, both with the ``manager`` breakdown)."""
    names = {v for (_, _, d, v) in calls if d == "manager"}
    names |= {v for (_, _, d, v) in deals if d == "manager"}
    last = len(funnel.stages) - 1
    rows = []
    for name in sorted(names):
        leads = deals.get(("reached", 0, "manager", name), 0)
        won = deals.get(("reached", last, "manager", name), 0)
        lost = total(deals, "lost", "manager", name)
        rows.append(
            {
                "manager": name,
                "calls": total(calls, "calls", "manager", name),
                "outbound_calls": total(calls, "outbound", "manager", name),
                "answered_calls": total(calls, "answered", "manager", name),
                "missed_inbound_calls": total(calls, "missed", "manager", name),
                "talk_time_s": total(calls, "talk_s", "manager", name),
                "leads": leads,
                "won": won,
                "lost": lost,
                "closing_rate": ratio(won, leads),
                "win_rate": ratio(won, won + lost),
                **deal_figures(funnel, deals, "manager", name),
            }
        )
    return rows
