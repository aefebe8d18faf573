"""De-dup ids are forgotten behind the watermark (the ``seen-events`` table stays
bounded) and only those: the worker's purge against the real broker, read back
from the table's changelog."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest

from tests.integration.test_backlog import new_env, tick, wait_counted
from tests.integration.test_contract import read_topic
from tests.support import WorkerProcess, free_port, metric_sum, wait_for
from tests.workload import send_docs

pytestmark = pytest.mark.integration


def old_visit(i: int, at: float) -> dict:
    return {
        "event_id": f"old-{i}",
        "type": "visit",
        "occurred_at": datetime.fromtimestamp(at + i, tz=UTC).isoformat(),
        "visitor_id": f"old-{i}",
    }


def forgotten_ids(settings) -> set[str]:
    """Event ids whose ``seen-events`` record was deleted (a tombstone)."""
    topic = f"{settings.app_id}-seen-events-changelog"
    records = asyncio.run(read_topic(settings.kafka_bootstrap, topic, 10**9, timeout=2))
    return {orjson.loads(r.key).split("|", 1)[1] for r in records if r.value is None}


def test_ids_behind_the_horizon_are_forgotten_and_recent_ones_still_de_duplicate(stack, stack_env):
    env, settings = new_env(
        stack_env,
        FUNNEL_DEDUP_HORIZON="600",
        FUNNEL_DEDUP_PURGE_EVERY="1",
        FUNNEL_LATENESS="60",
        FUNNEL_IDLE_TIMEOUT="5",
    )
    old = [old_visit(i, time.time() - 40 * 60) for i in range(30)]
    worker = WorkerProcess(env, free_port()).start()
    try:
        send_docs(settings, old)
        wait_counted(worker, old)
        ticks: list[dict] = []

        def purged() -> set[str]:
            # Fresh visits on every partition move the watermarks past the horizon.
            ticks.extend(tick(len(ticks) + i) for i in range(10))
            send_docs(settings, ticks[-10:])
            wait_counted(worker, old + ticks)
            gone = forgotten_ids(settings)
            return gone if {d["event_id"] for d in old} <= gone else set()

        gone = wait_for(purged, settings.idle_timeout + 90, "old ids to be forgotten", interval=1)
        assert gone == {d["event_id"] for d in old}, "only the ids behind the horizon go"
        # A recent id is still known: sent again, it is a duplicate, not a new event.
        dups = metric_sum(worker.metrics(), "funnel_events_duplicate_total")
        send_docs(settings, ticks[:1])
        wait_for(
            lambda: metric_sum(worker.metrics(), "funnel_events_duplicate_total") == dups + 1,
            60,
            "the resent recent event to be dropped as a duplicate",
        )
        wait_counted(worker, old + ticks)
    finally:
        worker.stop()
