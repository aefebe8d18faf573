"""An independent, deliberately simple batch implementation of DESIGN.md section 4.

Written separately from stream/core/engine.py (no shared code but the event
decoder and the funnel definitions): it sorts all accepted events by time and
walks each entity's events once. The engine must give the same counters.
"""

from __future__ import annotations

import calendar
from collections import Counter, defaultdict
from typing import Any

from stream.core.funnels import Funnel

CALL_WINDOW = 86400.0  # the calls ledger's window
RETENTION = 35 * 86400.0  # counter buckets kept; older events are late


def accepted_events(
    events: list[Any],
    lateness: float,
    funnels: list[Funnel],
    sources: list[str] | None = None,
) -> tuple[list[Any], list[Any]]:
    """De-duplicate by event_id (first arrival wins) and split off late arrivals.

    ``events`` in arrival order; ``sources[i]`` names the input source of event
    i (default: one source). The watermark before an event is the lowest newest
    event time among the sources with events still to come (a source that has
    not started holds it at -inf; when all are done, the newest of all). An
    event is late when it is older than that minus the lateness minus the
    shortest window of the funnels it belongs to, or older than retention.
    """
    sources = sources or ["all"] * len(events)
    last = {src: i for i, src in enumerate(sources)}
    newest: dict[str, float] = {}
    watermark = float("-inf")
    seen: set[str] = set()
    kept, late = [], []
    for i, ev in enumerate(events):
        if ev.event_id not in seen:
            seen.add(ev.event_id)
            windows = relevant_windows(funnels, ev)
            if windows and (
                ev.ts < watermark - lateness - min(windows) or ev.ts < watermark - RETENTION
            ):
                late.append(ev)
            else:
                kept.append(ev)
        newest[sources[i]] = max(newest.get(sources[i], float("-inf")), ev.ts)
        pending = [newest.get(src, float("-inf")) for src, j in last.items() if j > i]
        watermark = max(watermark, min(pending) if pending else max(newest.values()))
    return kept, late


def relevant_windows(funnels: list[Funnel], ev: Any) -> list[float]:
    """The windows of every funnel and ledger the event belongs to."""
    out = [f.window for f in funnels if belongs(f, ev)]
    if ev.type == "call":
        out.append(CALL_WINDOW)
    if ev.type == "spend":
        out.append(RETENTION)
    return out


def belongs(f: Funnel, ev: Any) -> bool:
    if getattr(ev, f.entity, None) is None:
        return False
    if f.mode == "sequence":
        return any(step_matches(s, ev) for s in f.steps)
    if ev.type == "call":
        return f.entity == "deal_id"
    return ev.type == "deal_stage" and (f.pipeline is None or ev.pipeline == f.pipeline)


def step_matches(step, ev) -> bool:
    for field, allowed in step.match.items():
        actual = ev.type if field == "type" else getattr(ev, field, None)
        if actual is None or str(actual) not in allowed:
            return False
    return True


# Time-to-convert bins (seconds), written out here rather than imported from
# the engine so the oracle stays independent.
TTC_BINS = [60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400]
LEAD_RESPONSE_BINS = [60, 300, 900, 3600, 4 * 3600, 86400]
CALL_DIMS = ["manager", "channel", "source", "campaign", "keyword"]


def in_cents(amount: float) -> int:
    return round(amount * 100)


def oracle_counts(
    funnels: list[Funnel],
    events: list[Any],
    bucket: int,
    lateness: float,
    sources: list[str] | None = None,
):
    kept, _ = accepted_events(events, lateness, funnels, sources)
    kept.sort(key=lambda e: (e.ts, e.event_id))
    counts: Counter = Counter()

    def bucket_of(ts: float) -> int:
        return int(ts // bucket) * bucket

    for f in funnels:
        by_entity: dict[str, list[Any]] = defaultdict(list)
        for ev in kept:
            if getattr(ev, f.entity, None) is None:
                continue
            if f.mode == "pipeline":
                if ev.type == "deal_stage" and (f.pipeline is None or ev.pipeline == f.pipeline):
                    by_entity[getattr(ev, f.entity)].append(ev)
            elif any(step_matches(s, ev) for s in f.steps):
                by_entity[getattr(ev, f.entity)].append(ev)
        for entity, evs in by_entity.items():
            paths = sequence_paths(f, evs) if f.mode == "sequence" else pipeline_paths(f, evs)
            if f.mode == "sequence":
                order_counts(f, evs, paths, counts, bucket_of)
            else:
                calls = (
                    [e for e in kept if e.type == "call" and e.deal_id == entity]
                    if f.entity == "deal_id"
                    else []
                )
                deal_counts(f, evs, paths, calls, counts, bucket_of)
            for path in paths:
                groups = [("", "")] + [
                    (d, getattr(path["first"], d, None) or "unknown") for d in f.breakdowns
                ]
                reached = path["reached"]
                for step in range(1, len(reached)):
                    delay = reached[step] - reached[step - 1]
                    bound = next((b for b in TTC_BINS if delay <= b), "inf")
                    at = bucket_of(reached[step])
                    counts[(f.name, f"ttc:{bound}", step, at, "", "")] += 1
                    counts[(f.name, "ttc_ms", step, at, "", "")] += round(delay * 1000)
                for dim, value in groups:
                    for step, ts in enumerate(path["reached"]):
                        counts[(f.name, "reached", step, bucket_of(ts), dim, value)] += 1
                        counts[(f.name, "cohort", step, bucket_of(path["start"]), dim, value)] += 1
                    for step, ts in path.get("skipped", []):
                        counts[(f.name, "skipped", step, bucket_of(ts), dim, value)] += 1
                    for step in path.get("moved_back", []):
                        counts[
                            (f.name, "moved_back", step, bucket_of(path["start"]), dim, value)
                        ] += 1
                    if path.get("lost"):
                        step, reason, ts = path["lost"]
                        counts[(f.name, "lost", step, bucket_of(ts), dim, value)] += 1
                        counts[(f.name, f"lost:{reason}", step, bucket_of(ts), dim, value)] += 1
                if path.get("unmatched"):
                    counts[(f.name, "unmatched", 0, bucket_of(path["start"]), "", "")] += path[
                        "unmatched"
                    ]
    ledger_counts(kept, counts, bucket_of)
    return counts


def groups_of(first: Any, dims: Any) -> list[tuple[str, str]]:
    return [("", "")] + [(d, getattr(first, d, None) or "unknown") for d in dims]


def order_counts(f: Funnel, evs: list[Any], paths: list[dict], counts: Counter, bucket_of) -> None:
    """Orders (last-step events, one per order_id) per journey: runs of the
    entity's events with no gap longer than the window."""
    journeys: list[list[Any]] = []
    for ev in evs:
        if not journeys or ev.ts - journeys[-1][-1].ts > f.window:
            journeys.append([])
        journeys[-1].append(ev)
    last = len(f.steps) - 1
    for journey in journeys:
        ids: set[str] = set()
        n = 0
        for ev in journey:
            if not step_matches(f.steps[-1], ev):
                continue
            if getattr(ev, "order_id", None):
                if ev.order_id in ids:
                    continue
                ids.add(ev.order_id)
            opened = [p for p in paths if journey[0].ts <= p["start"] <= ev.ts]
            first = opened[-1]["first"] if opened else ev
            at = bucket_of(ev.ts)
            cur = ev.currency or f.currency
            for dim, value in groups_of(first, f.breakdowns):
                counts[(f.name, "orders", last, at, dim, value)] += 1
                if ev.value is not None:
                    counts[(f.name, "revenue:" + cur, last, at, dim, value)] += in_cents(ev.value)
                if n == 0:
                    counts[(f.name, "customers", last, at, dim, value)] += 1
                else:
                    counts[(f.name, "repeat_orders", last, at, dim, value)] += 1
                    if ev.value is not None:
                        key = (f.name, "repeat_revenue:" + cur, last, at, dim, value)
                        counts[key] += in_cents(ev.value)
                if n == 1:
                    counts[(f.name, "repeat_customers", last, at, dim, value)] += 1
            n += 1


def deal_counts(
    f: Funnel, evs: list[Any], paths: list[dict], calls: list[Any], counts: Counter, bucket_of
) -> None:
    """Won revenue, open deals and lead response (first answered call) per deal."""
    top = len(f.stages) - 1
    for path in paths:
        dims = groups_of(path["first"], f.breakdowns)
        start = path["start"]
        answered = [
            c
            for c in calls
            if c.answered
            and (c.ts, c.event_id) >= (start, path["first"].event_id)
            and c.ts <= start + f.window
            and not any(
                (start, path["first"].event_id)
                < (p["start"], p["first"].event_id)
                <= (c.ts, c.event_id)
                for p in paths
            )
        ]
        if answered:
            when = answered[0].ts
            bound = next((b for b in LEAD_RESPONSE_BINS if when - start <= b), "inf")
            counts[(f.name, f"lr:{bound}", 0, bucket_of(when), "", "")] += 1
        for dim, value in dims:
            if path["won_at"] is not None and path["amount"] is not None:
                amount, cur = path["amount"]
                key = (f.name, "revenue:" + cur, top, bucket_of(path["won_at"]), dim, value)
                counts[key] += in_cents(amount)
            if path["won_at"] is None and not path["lost"]:
                counts[(f.name, "open", path["at"], bucket_of(start), dim, value)] += 1
                if path["amount"] is not None:
                    amount, cur = path["amount"]
                    key = (f.name, "open_amount:" + cur, path["at"], bucket_of(start), dim, value)
                    counts[key] += in_cents(amount)
            if answered:
                when = answered[0].ts
                counts[(f.name, "lr", 0, bucket_of(when), dim, value)] += 1
                counts[(f.name, "lr_ms", 0, bucket_of(when), dim, value)] += round(
                    (when - start) * 1000
                )


def ledger_counts(kept: list[Any], counts: Counter, bucket_of) -> None:
    """Calls (each once, its latest state) and ad spend (newest report per day)."""
    calls: dict[str, list[Any]] = defaultdict(list)
    spend: dict[tuple, Any] = {}
    for ev in kept:  # sorted by (ts, event_id)
        if ev.type == "call":
            calls[ev.call_id].append(ev)
        elif ev.type == "spend":
            spend[(ev.channel, ev.campaign, ev.day, ev.currency)] = ev  # the newest wins
    for evs in calls.values():
        state: dict[str, Any] = {}
        for ev in evs:
            for name in ("direction", "answered", "duration_s", *CALL_DIMS):
                if getattr(ev, name) is not None:
                    state[name] = getattr(ev, name)
        at = bucket_of(evs[0].ts)
        direction = state.get("direction", "inbound")
        for dim, value in [("", "")] + [(d, state.get(d) or "unknown") for d in CALL_DIMS]:
            counts[("_calls", "calls", 0, at, dim, value)] += 1
            counts[("_calls", direction, 0, at, dim, value)] += 1
            if state.get("answered"):
                counts[("_calls", "answered", 0, at, dim, value)] += 1
                counts[("_calls", "talk_s", 0, at, dim, value)] += round(state.get("duration_s", 0))
            elif direction == "inbound":
                counts[("_calls", "missed", 0, at, dim, value)] += 1
    for ev in spend.values():
        y, m, d = map(int, ev.day.split("-"))
        at = bucket_of(calendar.timegm((y, m, d, 0, 0, 0)))
        for dim, value in [
            ("", ""),
            ("channel", ev.channel),
            ("campaign", ev.campaign or "unknown"),
        ]:
            counts[("_spend", "spend:" + ev.currency, 0, at, dim, value)] += in_cents(ev.cost)


def sequence_paths(f: Funnel, evs: list[Any]) -> list[dict]:
    paths = []
    i = 0
    n = len(evs)
    while i < n:
        # Find the next step-1 event: it opens an attempt.
        if not step_matches(f.steps[0], evs[i]):
            i += 1
            continue
        start = evs[i].ts
        reached = [start]
        j = i + 1
        while j < n and evs[j].ts <= start + f.window and len(reached) < len(f.steps):
            if step_matches(f.steps[len(reached)], evs[j]) and evs[j].ts >= reached[-1]:
                reached.append(evs[j].ts)
            j += 1
        paths.append({"start": start, "reached": reached, "first": evs[i]})
        # The attempt is over at its last step or when its window ends; the
        # next attempt can only open at a later step-1 event.
        i = j
    return paths


def pipeline_paths(f: Funnel, evs: list[Any]) -> list[dict]:
    index = {s: k for k, s in enumerate(f.stages)}
    top = len(f.stages) - 1
    paths: list[dict] = []
    path: dict | None = None
    at = 0
    for ev in evs:
        if path is None or ev.ts > path["start"] + f.window:
            path = {
                "start": ev.ts,
                "reached": [ev.ts],
                "first": ev,
                "skipped": [],
                "moved_back": [],
                "lost": None,
                "unmatched": 0,
                "amount": None,
                "won_at": None,
                "at": 0,
            }
            paths.append(path)
            at = 0
        elif path["lost"] or len(path["reached"]) == top + 1:
            continue
        if ev.amount is not None:
            path["amount"] = (ev.amount, ev.currency or f.currency)
        target = top if ev.status == "won" else index.get(ev.stage)
        if target is None:
            path["unmatched"] += 1
        else:
            furthest = len(path["reached"]) - 1
            for k in range(furthest + 1, target + 1):
                path["reached"].append(ev.ts)
                if k < target:
                    path["skipped"].append((k, ev.ts))
            if target < at:
                path["moved_back"].append(at)
            at = target
        path["at"] = at
        if ev.status == "lost":
            path["lost"] = (at, ev.lost_reason or "unknown", ev.ts)
        elif len(path["reached"]) == top + 1:
            path["won_at"] = ev.ts
    return paths
