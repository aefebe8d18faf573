"""The funnel engine (DESIGN.md section 4): plain Python, no Kafka or Faust.

Per funnel and entity it keeps the entity's relevant events in event-time
order and the counter contributions they currently make. An event that lands
after every other event of its entity (the common case) adds only what it
counts (``_append``): it can change nothing counted before. Any other event is
inserted in order and the entity's attempts are recomputed from its events;
only the difference to the previous contributions is applied to the counters.
So an event that arrives out of order (within the allowed lateness) gives
exactly the counts it would have given in time order, and counts are visible
at once, without waiting for a watermark.

Counters are keyed ``(funnel, metric, step, bucket, dim, value)``:
``metric`` is ``reached`` (period view: bucket of the moment the step was
reached) or ``cohort`` (bucket of the attempt's step-1 time), and for
pipelines also ``skipped``, ``moved_back``, ``lost``, ``lost:<reason>``;
``dim``/``value`` is ``("", "")`` for the total or a breakdown dimension and
the attempt's first-touch value of it.

Event time (DESIGN.md section 4): ``watermark`` is the stream's watermark,
given by the caller (``advance``): the minimum over the input sources of the
newest event time each delivered (core/watermark.py). An event is late only
when it cannot be applied exactly any more: older than the watermark minus the
allowed lateness minus the window of a funnel it belongs to, or in a bucket
past retention. An entity whose newest event is older than the watermark minus
the lateness minus *two* windows is dropped: every event still accepted is then
more than a window after all of its events, so it cannot join, block or
re-open any of its attempts (a fresh entity gives the same counts). Its
contributions stay in the counters.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from stream.core.compaction import append_cut, carry_after, settled_cut
from stream.core.funnels import Funnel, Step
from stream.core.journeys import (
    UNKNOWN,
    Carry,
    Held,
    HeldJourney,
    Item,
    Journey,
    attribution,
    call_state,
    in_order,
    newest_of,
    order_touch,
    orders,
    packed,
    pipeline_attempts,
    sequence_attempts,
    unpacked,
)

Key = tuple[str, str, int, int, str, str]
OTHER = "other"
# Distinct raw values kept per breakdown dimension before new ones become
# `other` at ingest (top-N by count is applied when reading).
INGEST_CAP_FACTOR = 10
# Upper bounds (seconds) of the time-to-convert histogram bins: the time from
# reaching the previous step to reaching this one.
TTC_BOUNDS = (60, 300, 900, 3600, 21600, 86400, 604800)
# Upper bounds (seconds) of the lead response histogram: lead -> first answered call.
LEAD_RESPONSE_BOUNDS = (60, 300, 900, 3600, 14400, 86400)
RETENTION = 35 * 86400
# Money is counted in hundredths (cents), so sums over events and workers stay
# exact integers like every other counter.
CENTS = 100

# Ledgers: per-entity state like a funnel's, but counting calls (per call, its
# latest state) and ad spend (per channel, campaign, day and currency, the
# newest report). Their names cannot clash with a funnel's (those start with a
# letter). The API reads them with ``sums("_calls", ...)`` like a funnel.
CALLS = Funnel(
    name="_calls",
    mode="calls",
    entity="call_id",
    window=86400,
    breakdowns=("manager", "channel", "source", "campaign", "keyword"),
)
SPEND = Funnel(
    name="_spend",
    mode="spend",
    entity="spend_key",
    window=RETENTION,
    breakdowns=("channel", "campaign"),
)
LEDGERS = (CALLS, SPEND)
LEDGER_TYPES = {"calls": "call", "spend": "spend"}  # ledger mode -> the events it counts
# Entities are expired at most once per bucket, or per this fraction of the
# funnel's window if longer: they are kept a little (1 %) past two windows.
EXPIRE_STEPS = 100
# A journey longer than this many events drops its settled ones (core/compaction.py).
COMPACT_AT = 64
# A pipeline journey longer than this many events recomputes only its last attempt
# when an event lands after all of its others (shorter ones recompute whole:
# cheaper). A sequence journey adds what such an event counts (``_append``).
TAIL_AT = 8

# Attributions whose capped breakdown groups are remembered (``Engine._groups``).
GROUP_MEMO_SIZE = 4096

EntityItem = tuple[str, str, Item]  # (funnel, entity, event)


class Stored(Protocol):
    """A restored journey not decoded yet (core/state.py ``StoredJourney``)."""

    @property
    def newest(self) -> float: ...

    def load(self) -> Journey: ...

    def item_ids(self) -> list[tuple[float, str]]: ...


@dataclass
class Changes:
    """What changed since the caller last persisted (``Engine.take_changes``)."""

    journeys: dict[tuple[str, str], Journey | None]  # None: the entity was dropped
    added: list[EntityItem]  # events now held (not dropped again since)
    dropped: list[EntityItem]  # events no longer held (compacted, or their entity expired)
    counters: dict[Key, int]
    values: dict[tuple[str, str], list[str]]  # (funnel, dimension) -> every value kept raw


def ttc_metric(delay: float, prefix: str = "ttc", bounds: tuple[int, ...] = TTC_BOUNDS) -> str:
    """The histogram bin of a delay: ``ttc:<upper bound>`` or ``ttc:inf``."""
    for bound in bounds:
        if delay <= bound:
            return f"{prefix}:{bound}"
    return f"{prefix}:inf"


def _takes(funnel: Funnel, steps: tuple[Step, ...] | None, event: Any) -> bool:
    """Whether ``event``, of a type ``funnel`` may count in, counts in it
    (``steps``: the sequence steps its type may match; None when its type alone
    matches one)."""
    if funnel.mode in LEDGER_TYPES:
        return True
    if getattr(event, funnel.entity, None) is None:
        return False
    if funnel.mode == "pipeline":
        return event.type == "call" or funnel.pipeline in (None, event.pipeline)
    return steps is None or any(step.matches(event) for step in steps)


def cents(amount: float) -> int:
    return round(amount * CENTS)


def day_start(day: str) -> float:
    """'2026-11-23' -> epoch seconds of its midnight UTC."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()


class Engine:
    """Exact funnel counters for one stream partition (or one offline replay)."""

    def __init__(
        self,
        funnels: list[Funnel],
        bucket: int = 60,
        lateness: float = 600.0,
        retention: float = RETENTION,
        compact_at: int = COMPACT_AT,
        tail_at: int = TAIL_AT,
    ) -> None:
        self.funnels = [*funnels, *LEDGERS]
        self.bucket = bucket
        self.lateness = lateness
        self.retention = retention
        self.compact_at = compact_at
        self.tail_at = tail_at
        self.counters: Counter[Key] = Counter()
        # The counters' keys by bucket: a window's sums and retention read only
        # their buckets (a scrape summed every counter two dozen times: 5 s at
        # 12 days of history), not every counter.
        self.buckets: dict[int, set[Key]] = {}
        self.keys_swept = float("-inf")  # retention last dropped interned keys behind this
        # Per funnel and entity, its journey as held (core/journeys.py ``packed``).
        self.journeys: dict[str, dict[str, HeldJourney]] = {f.name: {} for f in self.funnels}
        # Restored journeys not decoded yet (``restore``): moved to ``journeys`` when
        # first touched.
        self.stored: dict[str, dict[str, Stored]] = {f.name: {} for f in self.funnels}
        # Per (funnel, dimension), the raw values kept so far (``_value``); stored with
        # the state, so a restored engine caps exactly as before and can recompute
        # a journey's contributions instead of storing them.
        self.seen_values: dict[tuple[str, str], set[str]] = {}
        self.group_memo: dict[tuple, list[tuple[str, str]]] = {}  # ``_groups``
        self.dirty_values: set[tuple[str, str]] = set()
        # One shared tuple per counter key: every journey holds the keys it
        # contributes to, and thousands of journeys contribute to the same ones
        # (half a journey's memory was these tuples, repeated).
        self.keys: dict[Key, Key] = {}
        self.watermark = float("-inf")  # the stream's watermark (``advance``)
        self.newest = float("-inf")  # highest event time applied
        self.retained_from = float("-inf")  # counters of older buckets are dropped
        # Per funnel, the horizon entities were last expired behind (one scan a step).
        self.expired_to: dict[str, float] = {}
        self.late: Counter[str] = Counter()
        self._by_type: dict[str, list[tuple[Funnel, tuple[Step, ...] | None]]] = {}
        # What changed since the caller last persisted (see ``take_changes``).
        self.dirty_journeys: set[tuple[str, str]] = set()
        self.dirty_counters: set[Key] = set()
        self.added: list[EntityItem] = []
        self.dropped: list[EntityItem] = []

    def bucket_of(self, ts: float) -> int:
        return int(ts // self.bucket) * self.bucket

    # ---- ingest ---------------------------------------------------------------

    def retained_after(self) -> float:
        """Counter buckets before this one are past retention (dropped, never changed)."""
        if self.watermark == float("-inf"):
            return float("-inf")
        return self.bucket_of(self.watermark - self.retention)

    def advance(self, watermark: float) -> None:
        """Move the stream's watermark forward (it never moves back)."""
        self.watermark = max(self.watermark, watermark)

    def late_before(self, funnel: Funnel) -> float:
        """Events of ``funnel`` older than this can no longer be applied exactly."""
        return self.watermark - self.lateness - funnel.window

    def is_late(self, event: Any) -> bool:
        """Whether the event is late for any funnel it belongs to, or past retention."""
        return self._late_in(event.ts, self._relevant_funnels(event))

    def _late_in(self, ts: float, relevant: list[Funnel]) -> bool:
        if ts < self.watermark - self.retention:
            return bool(relevant)
        return any(ts < self.late_before(f) for f in relevant)

    def relevant_funnels(self, event: Any) -> list[str]:
        return [f.name for f in self._relevant_funnels(event)]

    def process(self, event: Any, replace: bool = False) -> bool:
        """Apply one valid, de-duplicated event; False if it is late (then applied nowhere).

        All or nothing, so a late event on the dead-letter topic can be sent
        again later without counting twice in the funnels that took it.
        ``replace``: the event corrects one applied before with the same
        ``event_id`` (a deal re-attributed once its call is known): that one is
        taken out first, so the journey holds what it would have held had the
        corrected event come in the first place.
        """
        ts = event.ts
        relevant = self._relevant_funnels(event)
        if self._late_in(ts, relevant):
            for funnel in relevant:
                self.late[funnel.name] += 1
            return False
        self.newest = max(self.newest, ts)
        for funnel in relevant:
            self._apply_to(funnel, event, replace)
        return True

    def _apply_to(self, funnel: Funnel, event: Any, replace: bool) -> None:
        """One funnel's part of ``process``.

        A sequence journey that has only had events land after all of its others
        keeps no contributions (``None``: half of its memory): ``_append`` adds
        what each counts. Before any other change they are computed from its
        events, and then kept (an entity whose events come out of order, as in a
        backlog, would otherwise compute them twice per event).
        """
        ts, entity = event.ts, getattr(event, funnel.entity, None)
        journeys = self.journeys[funnel.name]
        held = journeys.get(entity)
        if held is None:
            held = self._unstored(funnel.name, entity)
        if held is None:
            lazy = funnel.mode == "sequence"
            journey = Journey(contributions=None if lazy else Counter())
        else:
            journey = unpacked(held)
        appends = not replace and (not journey.items or journey.items[-1].ts < ts)
        if journey.contributions is None and not (appends and funnel.mode == "sequence"):
            journey.contributions = self._counted(funnel, journey.items, journey.carry)
        if replace:
            self._take_out(funnel.name, entity, journey, event.event_id)
        if appends and journey.items:  # the common case: after every other event
            journey.items.append(event)
        elif appends:
            journey.items = [event]  # a list of one (an append makes room for four)
        else:
            bisect.insort(journey.items, event, key=in_order)
        self.added.append((funnel.name, entity, event))
        journey.newest = max(journey.newest, ts)
        # Strictly after every other event: one at the same time may sort after an
        # order of the same second and still open the attempt that order belongs to.
        if appends and funnel.mode == "sequence":
            self._append(funnel, journey, event)
        elif appends and len(journey.items) > max(self.tail_at, 1) and funnel.mode == "pipeline":
            self._recompute_tail(funnel, journey)
        else:
            self._recompute(funnel, journey)
        if len(journey.items) > self.compact_at:
            self._compact(funnel, entity, journey)
        journeys[entity] = packed(journey)
        self.dirty_journeys.add((funnel.name, entity))

    def _take_out(self, funnel: str, entity: str, journey: Journey, event_id: str) -> None:
        """Remove the journey's event with ``event_id``, if it holds one."""
        for i, held in enumerate(journey.items):
            if held.event_id == event_id:
                del journey.items[i]
                self.dropped.append((funnel, entity, held))
                return

    def _unstored(self, funnel: str, entity: str) -> HeldJourney | None:
        """A restored journey, decoded now that it is needed; None if none is stored."""
        stored = self.stored[funnel].pop(entity, None)
        if stored is None:
            return None
        held = self.journeys[funnel][entity] = packed(stored.load())
        return held

    def unstore_all(self, funnel: str) -> None:
        """Decode every restored journey of ``funnel`` (a reader that looks at all)."""
        for entity in list(self.stored[funnel]):
            self._unstored(funnel, entity)

    def held(self, funnel: str) -> int:
        """Journeys held for ``funnel``, restored ones not decoded yet included."""
        return len(self.journeys[funnel]) + len(self.stored[funnel])

    def _compact(self, funnel: Funnel, entity: str, journey: Journey) -> None:
        """Drop the journey's settled events (at most once per bucket of watermark)."""
        before = self.late_before(funnel)
        if before < journey.checked + self.bucket and funnel.mode != "spend":
            return
        journey.checked = before
        cut = settled_cut(funnel, journey.items, before)
        if cut <= 0:
            return
        dropped, journey.items = journey.items[:cut], journey.items[cut:]
        journey.carry = carry_after(funnel, dropped, journey.carry)
        # What the dropped events count stays in the counters; the journey now
        # answers only for what its kept events count.
        if journey.contributions is not None:
            journey.contributions = self._counted(funnel, journey.items, journey.carry)
        journey.tail_from, journey.tail_carry, journey.tail = 0, None, None
        self.dropped.extend((funnel.name, entity, item) for item in dropped)

    def _relevant(self, funnel: Funnel, event: Any) -> bool:
        """Whether ``event`` counts in ``funnel``."""
        return any(f is funnel for f in self._relevant_funnels(event))

    def _relevant_funnels(self, event: Any) -> list[Funnel]:
        """The funnels ``event`` counts in, in the engine's order. What its type
        alone decides is worked out once per type (``_by_type``): asking every
        step of every funnel was a tenth of a replay (issue #22)."""
        candidates = self._by_type.get(event.type)
        if candidates is None:
            candidates = self._by_type[event.type] = self._candidates(event.type)
        return [f for f, steps in candidates if _takes(f, steps, event)]

    def _candidates(self, kind: str) -> list[tuple[Funnel, tuple[Step, ...] | None]]:
        """The funnels an event of type ``kind`` may count in, each with the
        sequence steps it may match (``_takes``)."""
        out = []
        for funnel in self.funnels:
            steps: tuple[Step, ...] | None = ()
            if funnel.mode in LEDGER_TYPES:
                may = kind == LEDGER_TYPES[funnel.mode]
            elif funnel.mode == "pipeline":  # a call of the deal: lead response time
                may = kind == "deal_stage" or (kind == "call" and funnel.entity == "deal_id")
            else:
                steps = tuple(step for step in funnel.steps if step.may_match(kind))
                may = bool(steps)
                if any(step.match.keys() == {"type"} for step in steps):
                    steps = None  # its type is enough
            if may:
                out.append((funnel, steps))
        return out

    def _append(self, funnel: Funnel, journey: Journey, item: Item) -> None:
        """A sequence event after every other of its journey: add what it counts.

        What was counted stays: the event can only reach the last attempt's next
        step or open an attempt, and be an order (under the last attempt's touch).
        The scan starts at the last attempt (``tail_from``, core/compaction.py).
        """
        start = journey.tail_from
        carry = journey.tail_carry if start else journey.carry
        items = journey.items[start:]
        attempts = sequence_attempts(funnel, items)
        added: Counter[Key] = Counter()
        if attempts and attempts[-1]["times"][-1] == item.ts:  # only this event has its time
            attempt = attempts[-1]
            groups = self._groups(funnel, attempt["attr"])
            self._step_keys(funnel.name, attempt, len(attempt["times"]) - 1, groups, added)
        # Only an event of the last step can be a new order: the others need no scan.
        found = orders(funnel, items, carry)[0] if funnel.steps[-1].matches(item) else ()
        if found and found[-1][1] is item:
            starts = [a["t0"] for a in attempts]
            touch = order_touch(funnel, found[-1], starts, attempts, carry)
            self._order_keys(funnel, found[-1], touch, added)
        self._add_all(journey.contributions, added)
        self._advance_tail(funnel, journey, attempts[-1]["i0"] if attempts else len(items))

    def _add_all(self, whole: Counter[Key] | None, added: Counter[Key]) -> None:
        """Add ``added`` to the counters and to a journey's contributions (``whole``,
        where it keeps them)."""
        shared = self.keys.setdefault
        self._apply([(shared(key, key), n) for key, n in added.items() if n], whole)

    def _recompute(self, funnel: Funnel, journey: Journey) -> None:
        new = self._contributions(funnel, journey.items, journey.carry)
        journey.contributions = self._move(journey.contributions, new)
        journey.tail_from, journey.tail_carry, journey.tail = 0, None, None

    def _recompute_tail(self, funnel: Funnel, journey: Journey) -> None:
        """After an event landed last: recompute from the last attempt's first event
        on; what the events before count cannot change (core/compaction.py)."""
        start = journey.tail_from
        if start == 0:
            self._recompute(funnel, journey)
        else:
            new = self._contributions(funnel, journey.items[start:], journey.tail_carry)
            journey.tail = self._move(journey.tail, new, journey.contributions)
        if self._advance_tail(funnel, journey, append_cut(funnel, journey.items[start:])):
            kept = journey.items[journey.tail_from :]
            journey.tail = self._counted(funnel, kept, journey.tail_carry)

    def _advance_tail(self, funnel: Funnel, journey: Journey, cut: int) -> bool:
        """Move ``tail_from`` ``cut`` events on (to the last attempt's first event),
        carrying what the events passed decide; whether it moved."""
        if cut <= 0:
            return False
        start = journey.tail_from
        carry = journey.tail_carry if start else journey.carry
        journey.tail_carry = carry_after(funnel, journey.items[start : start + cut], carry)
        journey.tail_from = start + cut
        return True

    def _move(
        self, old: Counter[Key], new: Counter[Key], whole: Counter | None = None
    ) -> Counter[Key]:
        """Move the counters by ``new - old`` (and ``whole``, the journey's total,
        when ``old`` and ``new`` are only its tail); ``new`` with the engine's shared
        keys. ``old`` is used up."""
        shared = self.keys.setdefault
        out: Counter[Key] = Counter()
        changes = []
        for key, n in new.items():
            key = shared(key, key)
            out[key] = n
            delta = n - old.pop(key, 0)
            if delta:
                changes.append((key, delta))
        changes += [(key, -was) for key, was in old.items() if was]  # no longer counted
        self._apply(changes, whole)
        return out

    def _apply(self, changes: list[tuple[Key, int]], whole: Counter | None) -> None:
        """Add each (shared key, delta) to the counters, except in buckets past
        retention (they stay dropped), and to ``whole`` where given. One loop, not
        a call per key: those calls were a tenth of a replay (issue #22)."""
        horizon = self.retained_after()
        counters, buckets, dirty = self.counters, self.buckets, self.dirty_counters
        for key, delta in changes:
            if whole is not None:
                whole[key] += delta
            if key[3] < horizon:
                continue
            held = counters.get(key)
            if held is None:
                buckets.setdefault(key[3], set()).add(key)
                counters[key] = delta
            elif held + delta:
                counters[key] = held + delta
            else:
                del counters[key]
                buckets[key[3]].discard(key)
            dirty.add(key)

    def _counted(self, funnel: Funnel, items: list[Item], carry: Carry | None) -> Counter[Key]:
        """What ``items`` count, with the engine's one shared tuple per key."""
        return self._shared(self._contributions(funnel, items, carry))

    def _shared(self, contributions: Counter[Key]) -> Counter[Key]:
        shared = self.keys.setdefault
        return Counter({shared(k, k): n for k, n in contributions.items()})

    def _value(self, funnel: Funnel, dim: str, raw: str) -> str:
        seen = self.seen_values.get((funnel.name, dim))
        if seen is None:
            seen = self.seen_values[(funnel.name, dim)] = set()
        elif raw in seen:
            return raw
        if len(seen) < funnel.top_n * INGEST_CAP_FACTOR:
            seen.add(raw)
            self.dirty_values.add((funnel.name, dim))
            return raw
        return OTHER

    def _groups(self, funnel: Funnel, attr: dict[str, str]) -> list[tuple[str, str]]:
        """The total plus one (dimension, capped value) per breakdown.

        Remembered per attribution: a raw value, once capped or kept, stays so
        (``seen_values`` only grows), and every recompute asks again."""
        memo_key = (funnel.name, *attr.items())
        groups = self.group_memo.get(memo_key)
        if groups is None:
            if len(self.group_memo) >= GROUP_MEMO_SIZE:
                self.group_memo.clear()
            groups = [("", "")] + [(d, self._value(funnel, d, v)) for d, v in attr.items()]
            self.group_memo[memo_key] = groups
        return groups

    def _contributions(
        self, funnel: Funnel, items: list[Item], carry: Carry | None = None
    ) -> Counter[Key]:
        if funnel.mode == "calls":
            return self._call_contributions(funnel, items)
        if funnel.mode == "spend":
            return self._spend_contributions(funnel, items)
        out: Counter[Key] = Counter()
        name = funnel.name
        b = self.bucket_of
        if funnel.mode == "sequence":
            attempts = sequence_attempts(funnel, items)
            self._order_contributions(funnel, items, attempts, carry, out)
        else:
            attempts = pipeline_attempts(funnel, items)
        for attempt in attempts:
            groups = self._groups(funnel, attempt["attr"])
            cohort = b(attempt["t0"])
            for step in range(len(attempt["times"])):
                self._step_keys(name, attempt, step, groups, out)
            for dim, value in groups:
                if funnel.mode == "pipeline":
                    for step in attempt["skipped"]:
                        out[(name, "skipped", step, b(attempt["times"][step]), dim, value)] += 1
                    for step in attempt["moved_back"]:
                        out[(name, "moved_back", step, cohort, dim, value)] += 1
                    if attempt["lost"] is not None:
                        step, reason, at = attempt["lost"]
                        out[(name, "lost", step, b(at), dim, value)] += 1
                        out[(name, f"lost:{reason}", step, b(at), dim, value)] += 1
            if attempt.get("unmatched"):
                out[(name, "unmatched", 0, cohort, "", "")] += attempt["unmatched"]
            if funnel.mode == "pipeline":
                self._deal_money(funnel, attempt, groups, out)
        return out

    def _step_keys(
        self, name: str, attempt: dict, step: int, groups: list, out: Counter[Key]
    ) -> None:
        """What reaching ``step`` in ``attempt`` counts: reached (period view) and
        cohort per group, and the time to convert from the step before."""
        b = self.bucket_of
        times = attempt["times"]
        at, cohort = b(times[step]), b(attempt["t0"])
        if step:
            delay = times[step] - times[step - 1]
            out[(name, ttc_metric(delay), step, at, "", "")] += 1
            out[(name, "ttc_ms", step, at, "", "")] += round(delay * 1000)
        for dim, value in groups:
            out[(name, "reached", step, at, dim, value)] += 1
            out[(name, "cohort", step, cohort, dim, value)] += 1

    def _order_contributions(
        self,
        funnel: Funnel,
        items: list[Item],
        attempts: list[dict],
        carry: Carry | None,
        out: Counter[Key],
    ) -> None:
        """Orders, revenue, customers and repeat purchases of one entity.

        An order belongs to the entity's latest attempt opened at or before it
        (its first-touch attribution); the entity's first order makes it a
        customer, its second a repeat customer (within the journey's lifetime).
        Attempts whose events were dropped are carried: their latest one is the
        latest opened before every kept event.
        """
        starts = [a["t0"] for a in attempts]
        for order in orders(funnel, items, carry)[0]:
            touch = order_touch(funnel, order, starts, attempts, carry)
            self._order_keys(funnel, order, touch, out)

    def _order_keys(
        self, funnel: Funnel, order: tuple[int, Item, float], attr: dict, out: Counter[Key]
    ) -> None:
        """What one order counts: the ``k``-th of its journey, with ``attr``'s touch."""
        k, ev, _ = order
        name, last = funnel.name, len(funnel.steps) - 1
        at = self.bucket_of(ev.ts)
        value = getattr(ev, "value", None)
        money = f"{ev.currency or funnel.currency}" if value is not None else None
        for dim, v in self._groups(funnel, attr):
            out[(name, "orders", last, at, dim, v)] += 1
            if money:
                out[(name, f"revenue:{money}", last, at, dim, v)] += cents(value)
            if k == 0:
                out[(name, "customers", last, at, dim, v)] += 1
                continue
            if k == 1:
                out[(name, "repeat_customers", last, at, dim, v)] += 1
            out[(name, "repeat_orders", last, at, dim, v)] += 1
            if money:
                out[(name, f"repeat_revenue:{money}", last, at, dim, v)] += cents(value)

    def _deal_money(
        self, funnel: Funnel, deal: dict, groups: list[tuple[str, str]], out: Counter[Key]
    ) -> None:
        """Won revenue, open deals (for the forecast) and lead response of one deal."""
        name, b = funnel.name, self.bucket_of
        last = len(funnel.stages) - 1
        amount = deal["amount"]
        cohort = b(deal["t0"])
        answer = deal["first_answer"]
        if answer is not None:
            delay = answer - deal["t0"]
            out[(name, ttc_metric(delay, "lr", LEAD_RESPONSE_BOUNDS), 0, b(answer), "", "")] += 1
        for dim, v in groups:
            if deal["won_at"] is not None and amount is not None:
                out[(name, f"revenue:{amount[1]}", last, b(deal["won_at"]), dim, v)] += cents(
                    amount[0]
                )
            elif deal["won_at"] is None and deal["lost"] is None:
                out[(name, "open", deal["position"], cohort, dim, v)] += 1
                if amount is not None:
                    key = (name, f"open_amount:{amount[1]}", deal["position"], cohort, dim, v)
                    out[key] += cents(amount[0])
            if answer is not None:
                out[(name, "lr", 0, b(answer), dim, v)] += 1
                out[(name, "lr_ms", 0, b(answer), dim, v)] += round((answer - deal["t0"]) * 1000)

    def _call_contributions(self, funnel: Funnel, items: list[Item]) -> Counter[Key]:
        """One call counted once, as its latest state says, at its first event's time."""
        out: Counter[Key] = Counter()
        call = call_state(items)
        at = self.bucket_of(items[0].ts)
        attr = {d: call.get(d) or UNKNOWN for d in funnel.breakdowns}
        inbound = call.get("direction", "inbound") == "inbound"
        answered = bool(call.get("answered"))
        for dim, v in self._groups(funnel, attr):
            key = (funnel.name, "calls", 0, at, dim, v)
            out[key] += 1
            out[(funnel.name, "inbound" if inbound else "outbound", 0, at, dim, v)] += 1
            if answered:
                out[(funnel.name, "answered", 0, at, dim, v)] += 1
                out[(funnel.name, "talk_s", 0, at, dim, v)] += round(call.get("duration_s", 0))
            elif inbound:
                out[(funnel.name, "missed", 0, at, dim, v)] += 1
        return out

    def _spend_contributions(self, funnel: Funnel, items: list[Item]) -> Counter[Key]:
        """The newest report of one channel/campaign/day/currency, in that day's bucket."""
        out: Counter[Key] = Counter()
        ev = items[-1]
        at = self.bucket_of(day_start(ev.day))
        for dim, v in self._groups(funnel, attribution(ev, funnel.breakdowns)):
            out[(funnel.name, f"spend:{ev.currency}", 0, at, dim, v)] += cents(ev.cost)
        return out

    def expire(self) -> int:
        """Drop entities that can no longer change and buckets past retention.

        Returns how many entities were dropped.
        """
        if self.watermark == float("-inf"):
            return 0  # no watermark yet (a source has delivered nothing): nothing is old
        horizon = self.retained_after()
        if horizon > self.retained_from:  # at most once per bucket
            self.retained_from = horizon
            for bucket in [b for b in self.buckets if b < horizon]:
                for key in self.buckets.pop(bucket):
                    del self.counters[key]
                    self.dirty_counters.add(key)
            if horizon >= self.keys_swept + 3600:  # every key is read: once an hour
                self.keys_swept = horizon
                for key in [k for k in self.keys if k[3] < horizon]:
                    del self.keys[key]  # journeys still holding it keep their own reference
        dropped = 0
        for funnel in self.funnels:
            horizon = self.late_before(funnel) - funnel.window
            step = max(self.bucket, funnel.window / EXPIRE_STEPS)
            if horizon < self.expired_to.get(funnel.name, float("-inf")) + step:
                continue  # not every entity on every batch (a tenth of a backlog's time)
            self.expired_to[funnel.name] = horizon
            journeys = self.journeys[funnel.name]
            old = [e for e, j in journeys.items() if newest_of(j) < horizon]
            for entity in old:
                gone = unpacked(journeys.pop(entity))
                self.dropped.extend((funnel.name, entity, item) for item in gone.items)
                self.dirty_journeys.add((funnel.name, entity))
            dropped += len(old) + self._expire_stored(funnel.name, horizon)
        return dropped

    def _expire_stored(self, funnel: str, horizon: float) -> int:
        """Drop restored journeys older than ``horizon`` without decoding them: their
        events' records are deleted by ``(ts, event_id)``."""
        stored = self.stored[funnel]
        old = [e for e, j in stored.items() if j.newest < horizon]
        for entity in old:
            ids = stored.pop(entity).item_ids()
            self.dropped.extend((funnel, entity, Held(ts, id_)) for ts, id_ in ids)
            self.dirty_journeys.add((funnel, entity))
        return len(old)

    def _journey(self, funnel: str, entity: str) -> Journey | None:
        held = self.journeys[funnel].get(entity)
        return None if held is None else unpacked(held)

    def take_changes(self) -> Changes:
        """Journeys, their events and counter values changed since the last call."""
        journeys = {(f, e): self._journey(f, e) for f, e in self.dirty_journeys}
        counters = {k: self.counters.get(k, 0) for k in self.dirty_counters}
        # By journey too: one event is held by each funnel it counts in.
        gone = {(f, e, id(item)) for f, e, item in self.dropped}
        added = [x for x in self.added if (x[0], x[1], id(x[2])) not in gone]
        values = {fd: sorted(self.seen_values[fd]) for fd in self.dirty_values}
        changes = Changes(journeys, added, self.dropped, counters, values)
        self.dirty_journeys, self.dirty_counters, self.dirty_values = set(), set(), set()
        self.added, self.dropped = [], []
        return changes

    def restore(
        self,
        journeys: Iterable[tuple[str, str, Journey | Stored]],
        counters: Iterable[tuple[Key, int]],
        watermark: float,
        values: dict[tuple[str, str], list[str]] | None = None,
    ) -> None:
        """Load persisted state (e.g. from recovered tables) into an empty engine.

        A journey without contributions gets them computed when it is next touched,
        with ``values`` (the raw values kept per funnel and dimension) capping as
        they did; state written before values were stored takes them from the counters.
        """
        for funnel, entity, journey in journeys:
            if funnel not in self.journeys:
                continue
            if not isinstance(journey, Journey):
                self.stored[funnel][entity] = journey  # decoded when first touched
                continue
            if journey.contributions is not None:
                journey.contributions = self._shared(journey.contributions)
            self.journeys[funnel][entity] = packed(journey)
        for key, n in counters:
            self.counters[key] = n
            self.buckets.setdefault(key[3], set()).add(key)
            if key[4] and not values:
                self.seen_values.setdefault((key[0], key[4]), set()).add(key[5])
        for funnel_dim, kept in (values or {}).items():
            self.seen_values[funnel_dim] = set(kept)
        self.group_memo.clear()
        self.watermark = watermark

    # ---- read -----------------------------------------------------------------

    def abandoned_carts(
        self, funnel: Funnel, cart_step: int, since: float, limit: int
    ) -> list[dict[str, Any]]:
        """Entities whose latest attempt reached ``cart_step`` at or after ``since``
        and not the last step: carts to win back (newest first, at most ``limit``).

        Only entities still in the engine (within the funnel's window plus the
        allowed lateness) can be listed: older ones can no longer buy in that
        attempt anyway.
        """
        last = len(funnel.steps) - 1
        cart = funnel.steps[cart_step]
        out = []
        self.unstore_all(funnel.name)
        for entity, held in self.journeys[funnel.name].items():
            journey = unpacked(held)
            attempts = sequence_attempts(funnel, journey.items)
            if not attempts:
                continue
            attempt = attempts[-1]
            if not cart_step <= attempt["level"] < last or attempt["times"][cart_step] < since:
                continue
            adds = [ev for ev in journey.items if ev.ts >= attempt["t0"] and cart.matches(ev)]
            values: Counter[str] = Counter()
            for ev in adds:
                if getattr(ev, "value", None) is not None:
                    values[ev.currency or funnel.currency] += cents(ev.value)
            out.append(
                {
                    "entity": entity,
                    "added_at": attempt["times"][cart_step],
                    "last_event_at": journey.newest,
                    "step_reached": funnel.steps[attempt["level"]].name,
                    "cart_id": getattr(adds[-1], "cart_id", None) if adds else None,
                    "value": {c: v / CENTS for c, v in sorted(values.items())},
                    **attempt["attr"],
                }
            )
        out.sort(key=lambda c: (-c["added_at"], c["entity"]))
        return out[:limit]

    def sums(
        self, funnel: str, start: float, end: float, view: str = "period"
    ) -> dict[tuple[str, int, str, str], int]:
        """Counters of one funnel summed over buckets in [start, end)."""
        out: Counter[tuple[str, int, str, str]] = Counter()
        counters = self.counters
        for bucket in [b for b in self.buckets if start <= b < end]:
            for key in self.buckets[bucket]:
                name, metric, step, _, dim, value = key
                if name != funnel:
                    continue
                if metric == "reached" and view != "period":
                    continue
                if metric == "cohort" and view != "cohort":
                    continue
                out[(metric, step, dim, value)] += counters[key]
        return dict(out)
