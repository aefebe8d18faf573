"""An independent, deliberately simple batch implementation of DESIGN.md section 4.

Written separately from stream/engine.py (no shared code but the event
decoder and the funnel definitions): it sorts all accepted events by time and
walks each entity's events once. The engine must give the same counters.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from stream.funnels import Funnel


def accepted_events(events: list[Any], lateness: float) -> tuple[list[Any], list[Any]]:
    """De-duplicate by event_id (first arrival wins) and split off late arrivals."""
    seen: set[str] = set()
    newest = float("-inf")
    kept, late = [], []
    for ev in events:
        if ev.event_id in seen:
            continue
        seen.add(ev.event_id)
        if ev.ts < newest - lateness:
            late.append(ev)
            continue
        newest = max(newest, ev.ts)
        kept.append(ev)
    return kept, late


def step_matches(step, ev) -> bool:
    for field, allowed in step.match.items():
        actual = ev.type if field == "type" else getattr(ev, field, None)
        if actual is None or str(actual) not in allowed:
            return False
    return True


# Time-to-convert bins (seconds), written out here rather than imported from
# the engine so the oracle stays independent.
TTC_BINS = [60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400]


def oracle_counts(funnels: list[Funnel], events: list[Any], bucket: int, lateness: float):
    kept, _ = accepted_events(events, lateness)
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
        for evs in by_entity.values():
            paths = sequence_paths(f, evs) if f.mode == "sequence" else pipeline_paths(f, evs)
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
    return counts


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
            }
            paths.append(path)
            at = 0
        elif path["lost"] or len(path["reached"]) == top + 1:
            continue
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
        if ev.status == "lost":
            path["lost"] = (at, ev.lost_reason or "unknown", ev.ts)
    return paths
