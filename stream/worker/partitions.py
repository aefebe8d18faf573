"""The partitions a worker actively owns: their engines, readiness and sums.

Engines are rebuilt from the tables after every rebalance, once recovery is
done; until then the worker is not ready (the API answers 503 and /metrics
leaves the funnel gauges out). Readers only look at partitions this worker
actively owns, so sums over workers stay exact.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from stream import heap
from stream.core import dedup, event_counts, money, state
from stream.core.engine import Engine
from stream.core.funnels import Funnel
from stream.core.watermark import SourceMarks
from stream.faust_fixes.rebalance_state import end_open_transactions, forget_uncommitted_state
from stream.worker import cut_batches
from stream.worker.context import Context
from stream.worker.transactions import (
    assignment_done,
    drop_keys,
    new_generation,
    records,
    shrink,
)

log = logging.getLogger("stream.worker")


def owned_partitions(ctx: Context) -> set[int]:
    return {
        tp.partition
        for tp in ctx.app.assignor.assigned_actives()
        if tp.topic == ctx.settings.events_topic
    }


def ready(ctx: Context) -> bool:
    """Joined the group, tables recovered, no rebalance under way: engines may be built.

    Before its first assignment a worker is neither rebalancing nor recovering,
    yet owns nothing: it is not ready until its first recovery completed.
    """
    recovery = ctx.app.tables.recovery
    return recovery.completed.is_set() and not ctx.app.rebalancing and not recovery.in_recovery


def phase(ctx: Context) -> str:
    """What a worker that is not ready is doing (for /health/ready and operators)."""
    recovery = ctx.app.tables.recovery
    if recovery.in_recovery:
        return "recovering"
    if ctx.app.rebalancing:
        return "rebalancing"
    if not recovery.completed.is_set():
        return "joining"
    return "ready"


def engine_for(ctx: Context, p: int) -> Engine:
    """The partition's engine, loaded from its tables after each (re)assignment.

    Once ready, every owned partition still without an engine is loaded with it,
    in one pass over the tables (each load scanned all of them: a sixth of a
    restarted worker's time to answer at 1M journeys)."""
    engine = ctx.engines.get(p)
    if engine is None:
        wanted = {p}
        if ready(ctx):
            wanted |= owned_partitions(ctx) - ctx.engines.keys()
        load_engines(ctx, wanted)
        engine = ctx.engines[p]
    return engine


def load_engines(ctx: Context, partitions: set[int]) -> None:
    with heap.bulk_load():
        journeys = state.by_partition(ctx.tables.journeys.data.keys(), partitions)
        counters = state.by_partition(ctx.tables.counters.data.keys(), partitions)
        seen = dedup.by_partition(records(ctx.tables.seen).keys(), partitions)
        for p in sorted(partitions):  # one at a time: each one's parsed keys are let go
            ctx.engines[p] = build_engine(ctx, p, journeys.pop(p), counters.pop(p))
            ctx.seen[p] = load_seen(ctx, p, seen.pop(p))
        if ctx.memory_store:
            shrink(ctx.tables.journeys)  # the engines hold them now (``build_engine``)
            shrink(ctx.tables.seen)


def load_seen(ctx: Context, p: int, own: list[str]) -> dedup.SeenIds:
    """Partition ``p``'s de-dup ids from its table keys; with the memory store the
    worker holds them from now on (``count.write_batch`` writes only the changelog)."""
    seen = dedup.restored(p, own, records(ctx.tables.seen))
    if ctx.memory_store:
        drop_keys(ctx.tables.seen, own)
    return seen


def build_engine(ctx: Context, p: int, own: list[str], own_counters: list[str]) -> Engine:
    """Partition ``p``'s engine from its journeys' and counters' records (their keys)."""
    settings, tables = ctx.settings, ctx.tables
    engine = Engine(
        ctx.funnels,
        bucket=settings.bucket,
        lateness=settings.lateness,
        retention=settings.retention,
    )
    data = records(tables.journeys)
    restored, orphans = state.load_journeys((key, data[key]) for key in own)
    if orphans:
        log.warning(
            "journey events without their journey", extra={"partition": p, "events": orphans}
        )
    if ctx.memory_store:
        # The engine holds the journeys now (a journey held twice was a third of
        # a worker's memory); every rebalance replays the changelogs anyway.
        drop_keys(tables.journeys, own)
    counters = records(tables.counters)
    parsed = ((state.parse_key(key), counters[key]) for key in own_counters)
    counts = [(tuple(key[1:]), value) for key, value in parsed if value]
    mark = tables.marks.data.get(str(p))
    values = {}
    for funnel in engine.funnels:
        for dim in funnel.breakdowns:
            kept = tables.marks.data.get(state.values_key(p, funnel.name, dim))
            if kept is not None:
                values[(funnel.name, dim)] = kept
    engine.restore(
        state.restored_entries(restored),
        counts,
        mark if mark is not None else float("-inf"),
        values,
    )
    sources = tables.marks.data.get(state.sources_key(p))
    ctx.marks[p] = SourceMarks.from_state(sources, engine.watermark)
    held = sum(len(by_entity) for by_entity in restored.values())
    log.info("partition engine loaded", extra=load_report(ctx, p, held, len(counts)))
    return engine


def marks_for(ctx: Context, p: int) -> SourceMarks:
    """The partition's source marks (loaded with its engine)."""
    engine_for(ctx, p)
    return ctx.marks[p]


def seen_for(ctx: Context, p: int) -> dedup.SeenIds:
    """The partition's de-dup ids (loaded with its engine)."""
    engine_for(ctx, p)
    return ctx.seen[p]


def load_report(ctx: Context, p: int, journeys: int, counters: int) -> dict[str, Any]:
    """What a loaded engine came from: per changelog its highwater and the last
    offset recovery read (``counters:0@6102 read 6101``), the next offset."""
    recovery = ctx.app.tables.recovery
    return {
        "partition": p,
        "journeys": journeys,
        "counters": counters,
        "next_offset": ctx.tables.marks.data.get(state.next_offset_key(p)),
        "rebalancing": ctx.app.rebalancing,
        "in_recovery": recovery.in_recovery,
        "changelogs": sorted(
            f"{tp.topic.rsplit('-', 2)[-2]}:{tp.partition}@{recovery.active_highwaters.get(tp)}"
            f" read {recovery.active_offsets.get(tp)}"
            for tp in ctx.app.assignor.assigned_actives()
            if tp.topic.endswith("-changelog") and tp.partition == p
        ),
    }


def owned_sums(
    ctx: Context, funnel: str, start: float, end: float, view: str = "period"
) -> Counter:
    """Sums over this worker's partitions; ranges are whole buckets, from the one
    holding ``start`` (so a 1m window with 1m buckets never shrinks to the current one)."""
    if start != float("-inf"):
        start = start // ctx.settings.bucket * ctx.settings.bucket
    sums: Counter = Counter()
    for p in owned_partitions(ctx):
        for key, n in engine_for(ctx, p).sums(funnel, start, end, view).items():
            sums[key] += n
    return sums


def owned_carts(ctx: Context, funnel: Funnel, since: float, limit: int) -> list[dict]:
    step = money.cart_step(funnel)
    carts = []
    for p in owned_partitions(ctx):
        carts += engine_for(ctx, p).abandoned_carts(funnel, step, since, limit)
    return carts


def owned_events_per_minute(ctx: Context) -> dict[str, dict[str, int]]:
    owned = owned_partitions(ctx)
    items = list(ctx.tables.events_per_minute.data.items())
    return event_counts.per_type_and_minute(items, owned)


def funnel_state(ctx: Context) -> dict | None:
    """What the metrics collector exports, or None while not ready."""
    if not ready(ctx):
        return None
    engines = {p: engine_for(ctx, p) for p in owned_partitions(ctx)}
    journeys: Counter = Counter()
    for engine in engines.values():
        journeys.update({name: engine.held(name) for name in engine.journeys})
    return {
        "funnels": ctx.funnels,
        "sums": lambda *args: owned_sums(ctx, *args),
        "newest": dict(ctx.newest_event),
        "windows": ctx.settings.metric_window_seconds,
        "journeys": dict(journeys),
        "watermarks": {p: engine.watermark for p, engine in engines.items()},
    }


def consumer_state(ctx: Context) -> dict:
    """Consumer lag of the input and events partitions, commit latency, rebalances."""
    app = ctx.app
    consumer, monitor = app.consumer, app.monitor
    lag = {}
    for tp in app.assignor.assigned_actives():
        if tp.topic.endswith("-changelog"):
            continue  # read only during recovery; its lag means nothing after
        try:
            end = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - not (or no longer) assigned in the client
            continue
        if end is not None:
            lag[(tp.topic, tp.partition)] = end - monitor.tp_committed_offsets.get(tp, 0)
    gate = getattr(consumer, "funnel_gate", None)
    return {
        "lag": lag,
        "commit_latency": list(monitor.commit_latency),
        "rebalances": app.rebalancing_count,
        "commit_gap": gate.longest_gap if gate is not None else 0.0,
        "commit_max": gate.longest_commit if gate is not None else 0.0,
        "commit_totals": (
            (gate.commits, gate.committing_s, gate.held_s) if gate is not None else (0, 0.0, 0.0)
        ),
        "commits_skipped": gate.skipped if gate is not None else 0,
    }


async def on_revoked(ctx: Context) -> None:
    """Commit what was processed before the rebalance moves the read positions.

    Faust only flushes here; the open transactions of partitions it keeps
    stay open while the consumer rewinds to the last committed offsets, so
    events were read twice against state that already held them. Committing
    first makes the rewind a no-op. Engines reload from the tables after.
    A batch the revoke cuts mid-write keeps this commit out (its writes are
    in the open transactions: worker/cut_batches.py); the aborts below end them.
    """
    log.info("partitions revoked", extra={"rebalances": ctx.app.rebalancing_count})
    new_generation()  # batches still running stop writing (transactions.check_not_revoked)
    if ctx.app.consumer.assignment():
        try:
            await ctx.app.consumer.commit()
            await end_open_transactions(ctx.app.producer)  # writes not committed: read again
            cut_batches.transactions_ended()
        except Exception:  # noqa: BLE001 - the rebalance must go on; state stays consistent
            log.warning("commit on revoke failed", exc_info=True)
    had_engines = bool(ctx.engines)
    ctx.engines.clear()
    ctx.seen.clear()
    ctx.marks.clear()
    ctx.source_next.clear()
    ctx.sent_marks.clear()
    if ctx.memory_store:
        forget_uncommitted_state(ctx.app, had_engines)


def on_assigned(ctx: Context) -> None:
    log.info("partitions assigned", extra={"owned": sorted(owned_partitions(ctx))})
    assignment_done()  # batches may write again (transactions.begin_batch)
    ctx.ready_since = None  # stalled tails are judged from readiness on (worker/tails.py)
    ctx.last_batch.clear()
    ctx.tails.forget()
    ctx.engines.clear()  # rebuilt from the recovered tables on first use
    ctx.seen.clear()  # loaded from the recovered de-dup table with the engines
    ctx.marks.clear()
    ctx.source_next.clear()
    ctx.sent_marks.clear()
