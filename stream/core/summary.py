"""The JSON shape of DESIGN.md section 5, built from summed counters (pure logic).

The API, `funnel replay` and `funnel report` all go through ``summarise``, so
the same counters always give the same document.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from stream.core import money
from stream.core.engine import OTHER
from stream.core.funnels import Funnel

Sums = dict[tuple[str, int, str, str], int]


def ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def _steps(funnel: Funnel, sums: Sums, metric: str, dim: str, value: str) -> list[dict]:
    names = funnel.step_names
    reached = [sums.get((metric, i, dim, value), 0) for i in range(len(names))]
    steps = []
    for i, name in enumerate(names):
        prev = reached[i - 1] if i else reached[0]
        conv = ratio(reached[i], prev)
        row: dict[str, Any] = {
            "name": name,
            "reached": reached[i],
            "conversion": conv,
            "drop_off": None if conv is None else round(1 - conv, 6),
        }
        if funnel.mode == "pipeline":
            for extra in ("skipped", "moved_back", "lost"):
                row[extra] = sums.get((extra, i, dim, value), 0)
        steps.append(row)
    return steps


def _figures(
    funnel: Funnel,
    sums: Sums,
    metric: str,
    dim: str,
    value: str,
    spend: money.Sums | None = None,
) -> dict[str, Any]:
    steps = _steps(funnel, sums, metric, dim, value)
    first, last = steps[0]["reached"], steps[-1]["reached"]
    later = [s for s in steps[1:] if s["conversion"] is not None]
    neck = min(later, key=lambda s: s["conversion"])["name"] if later else None
    if not dim:
        for i, step in enumerate(steps):
            step["avg_time_to_convert_s"] = _avg_time_to_convert(sums, i)
    out: dict[str, Any] = {
        "steps": steps,
        "overall_conversion": ratio(last, first),
        "narrow_neck": neck,
    }
    if funnel.mode == "pipeline":
        lost = sum(s["lost"] for s in steps)
        out.update(
            leads=first,
            won=last,
            lost=lost,
            closing_rate=ratio(last, first),
            win_rate=ratio(last, last + lost),
            moved_back=sum(s["moved_back"] for s in steps),
            skipped=sum(s["skipped"] for s in steps),
        )
        if not dim:
            reasons: Counter[str] = Counter()
            for (metric_name, _, d, _v), n in sums.items():
                if metric_name.startswith("lost:") and d == "":
                    reasons[metric_name[5:]] += n
            out["lost_reasons"] = dict(reasons.most_common())
            out["unmatched_stage_events"] = sum(
                n for (m, _, d, _v), n in sums.items() if m == "unmatched" and d == ""
            )
        out.update(money.deal_figures(funnel, sums, dim, value))
        customers = last
    else:
        out.update(money.order_figures(funnel, sums, dim, value))
        customers = out["customers"]
    if spend is not None and (not dim or dim in money.SPEND_DIMS):
        paid = money.amounts(spend, "spend", dim, value)
        out.update(money.spend_figures(paid, out["revenue"], first, customers))
    return out


def _avg_time_to_convert(sums: Sums, step: int) -> float | None:
    """Mean seconds from the previous step to this one (None for step 1 or no data)."""
    count = sum(n for (m, i, d, _v), n in sums.items() if i == step and not d and m[:4] == "ttc:")
    total_ms = sums.get(("ttc_ms", step, "", ""), 0)
    return round(total_ms / count / 1000, 3) if count else None


def summarise(
    funnel: Funnel,
    sums: Sums,
    window: str,
    start: str | None,
    end: str | None,
    view: str = "period",
    breakdown: str | None = None,
    spend: money.Sums | None = None,
) -> dict[str, Any]:
    """``spend``: the spend ledger's sums over the same range (money.spend_sums);
    without it the document has no spend, cost per lead, CAC or ROMI."""
    metric = "reached" if view == "period" else "cohort"
    doc: dict[str, Any] = {
        "funnel": funnel.name,
        "mode": funnel.mode,
        "window": window,
        "from": start,
        "to": end,
        "view": view,
        **_figures(funnel, sums, metric, "", "", spend),
    }
    if breakdown:
        doc["breakdown"] = {breakdown: _breakdown(funnel, sums, metric, breakdown, spend)}
    return doc


def _breakdown(
    funnel: Funnel, sums: Sums, metric: str, dim: str, spend: money.Sums | None
) -> dict[str, Any]:
    merged = capped_values(funnel, sums, metric, dim)
    values = {v for (_, _, d, v) in merged if d == dim}
    if spend is not None:
        spend, shown = _capped_spend(funnel, spend, dim, values - {OTHER})
        values |= shown
    ordered = sorted(values, key=lambda v: (v == OTHER, v))
    return {v: _figures(funnel, merged, metric, dim, v, spend) for v in ordered}


def _capped_spend(funnel: Funnel, spend: Sums, dim: str, kept: set[str]) -> tuple[Sums, set[str]]:
    """Spend of one dimension under the funnel's shown values. A value with spend
    but no entries is shown by name (money spent for nothing is what ROMI is
    for) while there is room in the top N, by cost; the rest is `other`."""
    by_value: Counter[str] = Counter()
    for (_m, _step, d, v), n in spend.items():
        if d == dim and v not in kept:
            by_value[v] += n
    room = max(0, funnel.top_n - len(kept))
    shown = set(kept) | {v for v, _ in by_value.most_common(room) if v != OTHER}
    out: Counter = Counter()
    for (m, step, d, v), n in spend.items():
        if d == dim:
            out[(m, step, d, v if v in shown else OTHER)] += n
    return dict(out), {v for (_m, _s, _d, v) in out}


def capped_values(funnel: Funnel, sums: Sums, metric: str, dim: str) -> Sums:
    """One dimension's sums with only its top N values by step-1 count; the rest `other`."""
    # Ranked by step-1 entries; a value with none in the range (its revenue or a
    # later step came from attempts that entered before) still gets a place.
    entering: Counter[str] = Counter({v: 0 for (_m, _s, d, v) in sums if d == dim})
    entering.update(
        {v: n for (m, step, d, v), n in sums.items() if m == metric and step == 0 and d == dim}
    )
    top = [v for v, _ in sorted(entering.items(), key=lambda kv: (-kv[1], kv[0]))]
    keep = set(top[: funnel.top_n]) - {OTHER}
    merged: Counter[tuple[str, int, str, str]] = Counter()
    for (m, step, d, v), n in sums.items():
        if d == dim:
            merged[(m, step, d, v if v in keep else OTHER)] += n
    return dict(merged)


def flag_drops(
    doc: dict[str, Any], baseline: dict[str, Any], drop: float, min_volume: int
) -> dict[str, Any]:
    """Mark steps whose conversion fell below ``(1 - drop)`` of the same step's baseline.

    The page's red step: the same test as the FunnelDropOffSpike alert
    (FUNNEL_ALERT_DROP, FUNNEL_ALERT_MIN_VOLUME), applied to the shown window
    against the baseline period before it. A step needs ``min_volume`` attempts
    at the previous step in the shown window, so a quiet minute is not a spike.
    Breakdown values are compared with the same value's baseline.
    """
    _flag_figures(doc, baseline, drop, min_volume)
    for dim, values in doc.get("breakdown", {}).items():
        base_values = baseline.get("breakdown", {}).get(dim, {})
        for value, figures in values.items():
            _flag_figures(figures, base_values.get(value, {}), drop, min_volume)
    return doc


def _flag_figures(
    figures: dict[str, Any], baseline: dict[str, Any], drop: float, min_volume: int
) -> None:
    base_steps = {s["name"]: s for s in baseline.get("steps", [])}
    steps = figures["steps"]
    for i, step in enumerate(steps):
        base = base_steps.get(step["name"], {}).get("conversion")
        step["baseline_conversion"] = base
        step["flagged"] = bool(
            i > 0
            and base
            and step["conversion"] is not None
            and steps[i - 1]["reached"] >= min_volume
            and step["conversion"] < (1 - drop) * base
        )
    figures["flagged_steps"] = [s["name"] for s in steps if s["flagged"]]
