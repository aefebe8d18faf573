"""An entity's events and the attempts they make (DESIGN.md section 4): pure
functions of a journey's events in time order, shared by the engine and its
compaction. Each attempt remembers ``i0``, the index of the event that began it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from stream.core.funnels import Funnel

UNKNOWN = "unknown"


# A journey holds its events themselves, in time order (``in_order``): an event
# struct has its time (``ts``) and ``event_id``. (A wrapper object per held event
# was 64 bytes of every journey's memory; issue #22.)
Item = Any


def in_order(event: Any) -> tuple[float, str]:
    """Where an event goes in its journey: by time, then by id (the same second)."""
    return event.ts, event.event_id


class Held(NamedTuple):
    """An event of a restored journey dropped without being decoded: its time
    and id, enough to delete its record."""

    ts: float
    event_id: str


@dataclass(slots=True)
class Carry:
    """What a journey's dropped (settled) events still decide for the events kept
    (core/compaction.py): the chain of orders (when the journey began, its latest
    event, orders so far and their ids) and the latest dropped attempt (when it
    began, its first touch), which a later order without a visit belongs to."""

    began: float = float("-inf")
    prev: float = float("-inf")
    k: int = 0
    seen: set[str] = field(default_factory=set)
    t0: float | None = None
    attr: dict[str, str] | None = None


@dataclass(slots=True)
class Journey:
    items: list[Item] = field(default_factory=list)
    # What its events count now. None: not kept (restored, or a sequence journey
    # whose events all came in order) until a change needs them (core/engine.py).
    contributions: Counter | None = field(default_factory=Counter)
    newest: float = 0.0
    carry: Carry | None = None  # set once settled events were dropped
    checked: float = float("-inf")  # the horizon compaction last looked behind
    # Not stored: where the events a new *last* event can change begin (the last
    # attempt's first event), the carry there, and (pipelines) what the events
    # from there count (core/compaction.py, ``append_cut``). 0: the first event.
    tail_from: int = 0
    tail_carry: Carry | None = None
    tail: Counter | None = None


# A journey of one event that keeps nothing else (no contributions, carry or
# tail: a sequence journey whose event came in order, the common one-visit
# visitor) is held as that event itself, not as a ``Journey`` and a list of one:
# 160 of a worker's ~800 bytes per such journey (issue #22). ``packed`` and
# ``unpacked`` turn one form into the other without losing anything.
HeldJourney = Journey | Item


def packed(journey: Journey) -> HeldJourney:
    """The journey as held: its only event when nothing else is kept."""
    items = journey.items
    if (
        len(items) == 1
        and journey.contributions is None
        and journey.carry is None
        and journey.tail_from == 0
        and journey.tail_carry is None
        and journey.tail is None
        and journey.checked == float("-inf")
        and journey.newest == items[0].ts
    ):
        return items[0]
    return journey


def unpacked(held: HeldJourney) -> Journey:
    """The journey a held one stands for (itself, or a fresh one of its only event)."""
    if isinstance(held, Journey):
        return held
    return Journey(items=[held], contributions=None, newest=held.ts)


def newest_of(held: HeldJourney) -> float:
    """A held journey's newest event time, without unpacking it."""
    return held.newest if isinstance(held, Journey) else held.ts


def attribution(event: Any, dims: Iterable[str]) -> dict[str, str]:
    return {d: (getattr(event, d, None) or UNKNOWN) for d in dims}


def sequence_attempts(funnel: Funnel, items: list[Item]) -> list[dict[str, Any]]:
    """Attempts of one entity from its events in time order (section 4, sequence)."""
    attempts: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    steps = funnel.steps
    last = len(steps) - 1
    for i, ev in enumerate(items):
        if current is not None:
            open_ = ev.ts <= current["t0"] + funnel.window and current["level"] < last
            if open_:
                nxt = current["level"] + 1
                if steps[nxt].matches(ev) and ev.ts >= current["times"][-1]:
                    current["level"] = nxt
                    current["times"].append(ev.ts)
                continue
            current = None
        if steps[0].matches(ev):
            current = {
                "i0": i,
                "t0": ev.ts,
                "level": 0,
                "times": [ev.ts],
                "attr": attribution(ev, funnel.breakdowns),
            }
            attempts.append(current)
    return attempts


def pipeline_attempts(funnel: Funnel, items: list[Item]) -> list[dict[str, Any]]:
    """One deal's paths through the pipeline stages (section 4, pipeline).

    A deal is a lead at its first event; events after its window (from the
    lead) make it a lead again, as a re-opened deal, so old deals need no state.
    """
    stages = {name: i for i, name in enumerate(funnel.stages)}
    last = len(funnel.stages) - 1
    attempts: list[dict[str, Any]] = []
    deal: dict[str, Any] | None = None
    for i, ev in enumerate(items):
        if ev.type == "call":
            # Calls of the deal (keyed with it): the first answered one after the
            # lead, within its window, gives the lead response time.
            if (
                deal is not None
                and ev.answered
                and deal["first_answer"] is None
                and ev.ts <= deal["t0"] + funnel.window
            ):
                deal["first_answer"] = ev.ts
            continue
        if deal is None or ev.ts > deal["t0"] + funnel.window:
            deal = {
                "i0": i,
                "t0": ev.ts,
                "times": [ev.ts],  # reached times by stage index; lead = index 0
                "position": 0,
                "skipped": [],
                "moved_back": [],
                "lost": None,
                "unmatched": 0,
                "attr": attribution(ev, funnel.breakdowns),
                "amount": None,  # (amount, currency): the newest one known
                "won_at": None,
                "first_answer": None,
            }
            attempts.append(deal)
        elif deal["lost"] is not None or len(deal["times"]) - 1 == last:
            continue  # closed (lost or won) within its window
        if ev.amount is not None:
            deal["amount"] = (ev.amount, ev.currency or funnel.currency)
        if ev.status == "won":
            target = last
        elif ev.stage in stages:
            target = stages[ev.stage]
        else:
            deal["unmatched"] += 1
            target = None
        if target is not None:
            reached = len(deal["times"]) - 1
            if target > reached:
                deal["skipped"] += list(range(reached + 1, target))
                deal["times"] += [ev.ts] * (target - reached)
            elif target < deal["position"]:
                deal["moved_back"].append(deal["position"])
            deal["position"] = target
        if ev.status == "lost":
            deal["lost"] = (deal["position"], ev.lost_reason or UNKNOWN, ev.ts)
        elif len(deal["times"]) - 1 == last:
            deal["won_at"] = ev.ts
    return attempts


def orders(
    funnel: Funnel, items: list[Item], carry: Carry | None = None
) -> tuple[list[tuple[int, Item, float]], Carry]:
    """A sequence funnel's last-step events (purchases), once per order_id, each
    with its number among the entity's orders and when its journey began; and
    the chain of orders after ``items`` (to carry past dropped events).

    A journey ends after more than the funnel's window without an event (the
    engine forgets the entity then), so a customer who comes back later starts
    again at order 0 and with a new first touch.
    """
    chain = Carry() if carry is None else replace(carry, seen=set(carry.seen))
    last = funnel.steps[-1]
    out = []
    for item in items:
        if item.ts - chain.prev > funnel.window:
            chain.began, chain.k = item.ts, 0
            chain.seen.clear()
        chain.prev = item.ts
        if not last.matches(item):
            continue
        order_id = getattr(item, "order_id", None)
        if order_id is not None:
            if order_id in chain.seen:
                continue
            chain.seen.add(order_id)
        out.append((chain.k, item, chain.began))
        chain.k += 1
    return out, chain


def order_touch(
    funnel: Funnel,
    order: tuple[int, Item, float],
    starts: list[float],
    attempts: list[dict[str, Any]],
    carry: Carry | None,
) -> dict[str, str]:
    """The first touch an order counts under: the latest attempt opened at or before
    it in its journey (``starts``: the attempts' first times), else the latest one of
    the dropped events (carried), else the order's own attribution."""
    _, item, began = order
    i = bisect.bisect_right(starts, item.ts) - 1
    if i >= 0 and starts[i] >= began:
        return attempts[i]["attr"]
    if i < 0 and carry is not None and carry.t0 is not None and carry.t0 >= began:
        return carry.attr or {}
    return attribution(item, funnel.breakdowns)


def call_state(items: list[Item]) -> dict[str, Any]:
    """One call from its events in time order: later non-empty fields win."""
    merged: dict[str, Any] = {}
    for item in items:
        for name in item.__struct_fields__:
            value = getattr(item, name)
            if value is not None:
                merged[name] = value
    return merged
