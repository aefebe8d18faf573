"""Prometheus metrics of the worker (names and labels: DESIGN.md section 5).

Counters are plain prometheus_client objects in the default registry. The
funnel gauges come from ``FunnelCollector``, which reads the engines of the
partitions this worker actively owns at scrape time, so after a rebalance a
worker exports exactly its new partitions and sums over workers stay right.
Labels carry topic, funnel, step and capped breakdown values, never personal
data (entity ids never appear in a label).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from stream.core import money
from stream.core.engine import OTHER, TTC_BOUNDS
from stream.core.funnels import Funnel
from stream.core.summary import Sums, capped_values

# Lost reasons are free text from the CRM: keep the top ones per funnel.
LOST_REASONS_TOP = 20

EVENTS = Counter(
    "funnel_events",
    "Valid, first-seen events counted, by source topic and event type.",
    ["topic", "type"],
)
REJECTED = Counter(
    "funnel_events_rejected",
    "Input messages sent to the dead-letter topic, by source topic and reason.",
    ["topic", "reason"],
)
DUPLICATES = Counter(
    "funnel_events_duplicate",
    "Valid events dropped as duplicates of an event_id seen within the horizon.",
    ["topic"],
)

REFETCHED = Counter(
    "funnel_events_refetched",
    "Events of the internal topic that Faust fetched but never handed to the counting "
    "agent, read back from the broker and counted (stream/faust_fixes/missing_offsets.py).",
    ["topic"],
)
REDELIVERED = Counter(
    "funnel_events_redelivered",
    "Messages Faust handed to the counting agent again after they were applied; skipped.",
    ["topic"],
)

REREAD = Counter(
    "funnel_partitions_reread",
    "Times an assigned partition stalled with records past the offset its agent expects "
    "(fetched, never delivered) and was read again from there "
    "(stream/faust_fixes/stalled_tails.py).",
    ["topic"],
)

FENCED = Counter(
    "funnel_transactions_fenced",
    "Times this worker's transactions were fenced (another producer took a transactional "
    "id, or the broker aborted a transaction): they were dropped and the worker rejoined "
    "the group to read committed state back (stream/faust_fixes/fenced_transactions.py).",
)

LATE_TOTAL = Counter(
    "funnel_events_late",
    "Events behind the allowed lateness (dead-lettered with reason late), per funnel "
    "they would have counted in.",
    ["funnel"],
)

ATTRIBUTED = Counter(
    "funnel_attribution",
    "Calls and deal stages by how they were attributed at ingest: call: lease (a dynamic "
    "number's session), static (a source's number) or none; deal_stage: call, visitor, "
    "none, or own (it carried its channel).",
    ["type", "result"],
)
REDIS_UP = Gauge("funnel_redis_up", "1 while the call-tracking Redis answers, 0 while it does not.")
HELD = Gauge(
    "funnel_attribution_held",
    "1 while call and deal events are held back because Redis does not answer.",
)
LEASES = Counter(
    "funnel_tracking_leases",
    "Tracking numbers handed out: kind dynamic (from the pool) or static (pool exhausted).",
    ["kind"],
)
POOL_EXHAUSTED = Counter(
    "funnel_tracking_pool_exhausted",
    "Lease requests that found every pool number held and got the source's static number.",
    ["source"],
)

LEASES_LIMITED = Counter(
    "funnel_tracking_requests_limited",
    "Lease requests refused with 429: too many from one session or one client address.",
    ["by"],
)

# sums(funnel, start, end) -> summed period-view counters over owned partitions.
SumsReader = Callable[[str, float, float], Sums]


def funnel_families(
    funnels: Iterable[Funnel],
    sums: SumsReader,
    newest: dict[str, float],
    now: float,
    windows: dict[str, int],
    journeys: dict[str, int] | None = None,
    watermarks: dict[int, float] | None = None,
) -> list[Metric]:
    """The table-derived metric families, from summed counters (pure; no I/O).

    ``windows`` are the trailing windows to export (Settings.metric_window_seconds).

    Step series carry ``previous`` (the step before; step 1 names itself) and
    ``position`` (first/middle/last) so recording rules can divide a step by
    the one before it and the last by the first after summing over workers.
    """
    reached = GaugeMetricFamily(
        "funnel_step_reached",
        "Attempts that reached the step within the trailing window (period view), "
        "summed over the partitions this worker owns; with breakdown/value labels "
        "per capped breakdown value.",
        labels=["funnel", "step", "previous", "position", "window", "breakdown", "value"],
    )
    lost = GaugeMetricFamily(
        "funnel_step_lost",
        "Pipeline deals lost at the stage within the trailing window.",
        labels=["funnel", "step", "window", "breakdown", "value"],
    )
    reasons = GaugeMetricFamily(
        "funnel_lost_reason",
        f"Pipeline deals lost within the trailing window, by the top {LOST_REASONS_TOP} reasons.",
        labels=["funnel", "reason", "window"],
    )
    ttc = HistogramMetricFamily(
        "funnel_time_to_convert_seconds",
        "Time from reaching the previous step to reaching this one, over retained buckets.",
        labels=["funnel", "step"],
    )
    for funnel in funnels:
        names = funnel.step_names
        steps = [
            (i, step, names[max(i - 1, 0)], _position(i, len(names)))
            for i, step in enumerate(names)
        ]
        for window, span in windows.items():
            got = sums(funnel.name, now - span, float("inf"))
            for dim, value, source in _groups(funnel, got):
                for i, step, previous, position in steps:
                    n = source.get(("reached", i, dim, value), 0)
                    reached.add_metric(
                        [funnel.name, step, previous, position, window, dim, value], n
                    )
                    if funnel.mode == "pipeline":
                        n_lost = source.get(("lost", i, dim, value), 0)
                        lost.add_metric([funnel.name, step, window, dim, value], n_lost)
            if funnel.mode == "pipeline":
                for reason, n in _top_reasons(got):
                    reasons.add_metric([funnel.name, reason, window], n)
        everything = sums(funnel.name, float("-inf"), float("inf"))
        for i in range(1, len(names)):
            buckets, cumulative = [], 0
            for bound in (*TTC_BOUNDS, "inf"):
                cumulative += everything.get((f"ttc:{bound}", i, "", ""), 0)
                le = "+Inf" if bound == "inf" else floatToGoString(bound)
                buckets.append((le, cumulative))
            total_s = everything.get(("ttc_ms", i, "", ""), 0) / 1000
            ttc.add_metric([funnel.name, names[i]], buckets, total_s)
    money_families = _money_families(funnels, sums, now, windows)
    lag = GaugeMetricFamily(
        "funnel_event_lag_seconds",
        "Now minus the event time of the newest event processed, by source topic.",
        labels=["topic"],
    )
    for topic, ts in sorted(newest.items()):
        lag.add_metric([topic], max(0.0, now - ts))
    state = state_families(journeys or {}, watermarks or {})
    return [reached, lost, reasons, ttc, *money_families, lag, *state]


def state_families(journeys: dict[str, int], watermarks: dict[int, float]) -> list[Metric]:
    """How much state the owned partitions hold, and how far their event time has come."""
    held = GaugeMetricFamily(
        "funnel_journeys",
        "Entities whose journeys this worker holds (owned partitions), by funnel or ledger: "
        "expiry behind the watermark keeps this bounded.",
        labels=["funnel"],
    )
    for name, n in sorted(journeys.items()):
        held.add_metric([name], n)
    marks = GaugeMetricFamily(
        "funnel_watermark_seconds",
        "Event-time watermark of each owned partition of the events topic (Unix time): the "
        "lowest newest event time over the input partitions still being read.",
        labels=["partition"],
    )
    for partition, ts in sorted(watermarks.items()):
        if ts != float("-inf"):
            marks.add_metric([str(partition)], ts)
    return [held, marks]


CALL_KINDS = ("calls", "inbound", "outbound", "answered", "missed")


def _money_families(
    funnels: Iterable[Funnel], sums: SumsReader, now: float, windows: dict[str, int]
) -> list[Metric]:
    """Revenue, orders, ad spend, calls and the open pipeline (counts and
    amounts only: ROMI, CAC and conversion are computed in PromQL after summing
    over workers). Amounts are in currency units."""
    revenue = GaugeMetricFamily(
        "funnel_revenue",
        "Purchase values (sequence funnels) or won deal amounts (pipelines) within the "
        "trailing window, by first-touch breakdown value.",
        labels=["funnel", "window", "currency", "breakdown", "value"],
    )
    orders = GaugeMetricFamily(
        "funnel_orders",
        "Orders (a sequence funnel's last-step events, once per order_id) within the window.",
        labels=["funnel", "window", "breakdown", "value"],
    )
    spend = GaugeMetricFamily(
        "funnel_ad_spend",
        "Advertising cost (ads.spend, each day spread evenly over it) within the window.",
        labels=["window", "currency", "breakdown", "value"],
    )
    calls = GaugeMetricFamily(
        "funnel_calls",
        "Calls within the window by kind (calls, inbound, outbound, answered, missed "
        "inbound), per manager, channel, source, campaign and keyword.",
        labels=["window", "kind", "breakdown", "value"],
    )
    talk = GaugeMetricFamily(
        "funnel_call_talk_seconds",
        "Talk time of answered calls within the window.",
        labels=["window", "breakdown", "value"],
    )
    open_deals = GaugeMetricFamily(
        "funnel_open_deals",
        "Deals still open (neither won nor lost) that entered within the pipeline's window, "
        "by the stage they are at.",
        labels=["funnel", "stage"],
    )
    open_amount = GaugeMetricFamily(
        "funnel_open_amount",
        "Amounts of the open deals, by stage (weight by stage probability for the forecast).",
        labels=["funnel", "stage", "currency"],
    )
    lead_response = HistogramMetricFamily(
        "funnel_lead_response_seconds",
        "Time from a lead's creation to its first answered call, over retained buckets.",
        labels=["funnel"],
    )
    for funnel in funnels:
        for window, span in windows.items():
            got = sums(funnel.name, now - span, float("inf"))
            for dim, value, source in _groups(funnel, got):
                for cur, amount in money.amounts(source, "revenue", dim, value).items():
                    revenue.add_metric([funnel.name, window, cur, dim, value], amount)
                if funnel.mode == "sequence":
                    n = money.total(source, "orders", dim, value)
                    orders.add_metric([funnel.name, window, dim, value], n)
        if funnel.mode == "pipeline":
            got = sums(funnel.name, now - funnel.window, float("inf"))
            for k, stage in enumerate(funnel.stages[:-1]):
                open_deals.add_metric([funnel.name, stage], got.get(("open", k, "", ""), 0))
                for cur, cents in money.stage_cents(got, "open_amount", k).items():
                    open_amount.add_metric([funnel.name, stage, cur], cents / 100)
            everything = sums(funnel.name, float("-inf"), float("inf"))
            buckets, total_s = money.lead_response_histogram(everything)
            lead_response.add_metric([funnel.name], buckets, total_s)
    for window, span in windows.items():
        spent = money.spend_in(lambda lo, hi: sums("_spend", lo, hi), now - span, now)
        for (metric, _, dim, value), n in sorted(spent.items()):
            spend.add_metric([window, metric[6:], dim, value], round(n / 100, 2))
        got = sums("_calls", now - span, float("inf"))
        for (metric, _, dim, value), n in sorted(got.items()):
            if metric in CALL_KINDS:
                calls.add_metric([window, metric, dim, value], n)
            elif metric == "talk_s":
                talk.add_metric([window, dim, value], n)
    return [revenue, orders, spend, calls, talk, open_deals, open_amount, lead_response]


def _groups(funnel: Funnel, got: Sums) -> list[tuple[str, str, Sums]]:
    """The total and every capped breakdown value, each with the sums to read it from."""
    groups = [("", "", got)]
    for dim in funnel.breakdowns:
        capped = capped_values(funnel, got, "reached", dim)
        for value in sorted({v for (_m, _, _, v) in capped}):
            groups.append((dim, value, capped))
    return groups


def _position(i: int, count: int) -> str:
    return "first" if i == 0 else "last" if i == count - 1 else "middle"


def consumer_families(
    lag: dict[tuple[str, int], int],
    commit_latency: list[float],
    rebalances: int,
    commit_gap: float = 0.0,
    commit_max: float = 0.0,
    commit_totals: tuple[int, float, float] = (0, 0.0, 0.0),
    commits_skipped: int = 0,
) -> list[Metric]:
    """Faust's consumer figures for the partitions this worker owns now (no stale series)."""
    lag_family = GaugeMetricFamily(
        "funnel_consumer_lag_messages",
        "Messages not yet committed (end offset minus committed offset) per owned partition.",
        labels=["topic", "partition"],
    )
    for (topic, partition), n in sorted(lag.items()):
        lag_family.add_metric([topic, str(partition)], max(0, n))
    latency = GaugeMetricFamily(
        "funnel_commit_latency_seconds",
        "Median latency of this worker's recent offset commits (transaction commits).",
    )
    if commit_latency:
        latency.add_metric([], sorted(commit_latency)[len(commit_latency) // 2])
    commits, committing_s, held_s = commit_totals
    return [
        lag_family,
        latency,
        CounterMetricFamily(
            "funnel_rebalances",
            "Consumer-group rebalances this worker has taken part in.",
            value=rebalances,
        ),
        GaugeMetricFamily(
            "funnel_commit_gap_max_seconds",
            "The longest time between two offset commits of this worker since it started "
            "(a transaction stays open that long; it must stay far below the transaction "
            "timeout).",
            value=commit_gap,
        ),
        GaugeMetricFamily(
            "funnel_commit_duration_max_seconds",
            "The longest offset commit (transaction commit) of this worker since it started.",
            value=commit_max,
        ),
        CounterMetricFamily(
            "funnel_commits", "Offset commits (transaction commits) made.", value=commits
        ),
        CounterMetricFamily(
            "funnel_commit_seconds",
            "Seconds spent committing, all together (its rate is the share of the worker's "
            "time in commits; batches wait meanwhile).",
            value=committing_s,
        ),
        CounterMetricFamily(
            "funnel_commit_held_seconds",
            "Seconds the agents' batches waited for a commit to finish, all together.",
            value=held_s,
        ),
        CounterMetricFamily(
            "funnel_commits_skipped",
            "Commits not made because the open transactions held writes of a batch cut "
            "mid-way by a rebalance or fence (worker/cut_batches.py); the rebalance that "
            "follows aborts them and the batch is read again.",
            value=commits_skipped,
        ),
    ]


def _top_reasons(got: Sums) -> list[tuple[str, int]]:
    totals: Tally[str] = Tally()
    for (metric, _, dim, _v), n in got.items():
        if metric.startswith("lost:") and not dim:
            totals[metric[5:]] += n
    ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    out = Tally(dict(ranked[:LOST_REASONS_TOP]))
    rest = sum(n for _, n in ranked[LOST_REASONS_TOP:])
    if rest:
        out[OTHER] += rest
    return sorted(out.items())


class FunnelCollector:
    """Registered once; the worker points ``source`` at its engines when it starts.

    ``source`` returns None while the worker is rebalancing or recovering
    tables: nothing is exported then, rather than partial counts.
    """

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, Any] | None] | None = None
        self.consumer: Callable[[], dict[str, Any]] | None = None

    def collect(self) -> Iterator[Metric]:
        if self.consumer is not None:
            yield from consumer_families(**self.consumer())
        args = self.source() if self.source else None
        if args is not None:
            yield from funnel_families(**args, now=time.time())

    def describe(self) -> list[Metric]:
        return []  # families depend on the funnels; collected at scrape time only


FUNNEL_STATE = FunnelCollector()
REGISTRY.register(FUNNEL_STATE)


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
