"""Dropping a journey's settled events, so an entity that never goes quiet
(a bot, a shared anonymous id, a customer who visits every day) holds only the
events that a new event can still change, not all it ever sent.

An event at ``before`` (the funnel's late bound: the watermark minus the
lateness minus the window) or later is the oldest the engine still applies.
The events before the *cut* are settled: every attempt they make closed before
``before`` (completed, or its window ended), so a new event can neither join
nor re-order them, and the events kept make, from a fresh start, exactly the
attempts they made after the cut. What the dropped events count stays in the
counters (as an expired entity's does); what they still decide for later
events (the chain of orders, the first touch of a later order without a visit)
is carried in ``Journey.carry``.

Calls are not compacted: a call's latest state merges all its events (a call
has a handful). Spend keeps only its newest report, the only one it counts.

The same cut, taken for an event that lands after every other event of its
entity (the common case), lets the engine recompute only the last attempt
(``append_cut``): a customer with hundreds of orders in the window cost a
recount of all of them, and of their hundreds of counter keys, per event.
"""

from __future__ import annotations

import bisect

from stream.core.funnels import Funnel
from stream.core.journeys import Carry, Item, orders, pipeline_attempts, sequence_attempts


def settled_cut(funnel: Funnel, items: list[Item], before: float) -> int:
    """How many of the first ``items`` (time order) no event at ``before`` or later can change."""
    if funnel.mode == "spend":
        return max(len(items) - 1, 0)
    if funnel.mode not in ("sequence", "pipeline"):
        return 0
    n = bisect.bisect_left(items, before, key=lambda item: item.ts)
    if n == 0:
        return 0
    prefix = items[:n]
    if funnel.mode == "sequence":
        attempts = sequence_attempts(funnel, prefix)
        completed = bool(attempts) and attempts[-1]["level"] == len(funnel.steps) - 1
    else:
        attempts = pipeline_attempts(funnel, prefix)
        completed = False  # a closed deal still takes its lead's first answered call
    if attempts and not completed and attempts[-1]["t0"] + funnel.window >= before:
        return attempts[-1]["i0"]  # still open to a new event: keep it whole
    return n


def append_cut(funnel: Funnel, items: list[Item]) -> int:
    """Where the events that a new event *after all of them* can change begin: the
    last attempt's first event (every earlier attempt is closed), or the end when
    no attempt has begun. Only for sequences and pipelines."""
    if funnel.mode == "sequence":
        attempts = sequence_attempts(funnel, items)
    else:
        attempts = pipeline_attempts(funnel, items)
    return attempts[-1]["i0"] if attempts else len(items)


def carry_after(funnel: Funnel, dropped: list[Item], carry: Carry | None) -> Carry | None:
    """The carry once ``dropped`` (the events before a cut) are gone."""
    if funnel.mode != "sequence":
        return None
    _, chain = orders(funnel, dropped, carry)
    attempts = sequence_attempts(funnel, dropped)
    if attempts:
        chain.t0, chain.attr = attempts[-1]["t0"], attempts[-1]["attr"]
    return chain
