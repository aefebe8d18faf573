"""The counting stage feeds each partition's engine its batch in event-time order
(worker/count.py ``count_admitted``): same counts as arrival order, fewer
journey recomputes, corrections still after the events they correct."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from types import SimpleNamespace

import orjson

from stream.core.engine import Engine
from stream.core.events import decode
from stream.core.funnels import load_funnels
from stream.worker import count
from stream.worker.dead_letters import Origin


class Recording(Engine):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.order: list[tuple[str, bool]] = []

    def process(self, event, replace: bool = False) -> bool:
        self.order.append((event.event_id, replace))
        return super().process(event, replace)


def visit(i: int, ts: float, visitor: str, **extra) -> bytes:
    at = datetime.fromtimestamp(ts, tz=UTC).isoformat()
    doc = {"event_id": f"e{i}", "type": "visit", "occurred_at": at, "visitor_id": visitor}
    return orjson.dumps({**doc, **extra})


def admitted(raws: list[tuple[bytes, bool]]) -> count.Applied:
    applied = count.Applied()
    msg = SimpleNamespace(partition=0, tp=("funnel.events", 0))
    for i, (raw, correction) in enumerate(raws):
        ev = decode(raw, now=float("inf"))
        origin = Origin("shop.visits", 0, i)
        item = count.Admitted(msg, origin, raw, ev, correction, seen=correction)
        applied.admitted[0].append(item)
    return applied


def run(raws: list[tuple[bytes, bool]]) -> tuple[Recording, count.Applied]:
    engine = Recording(load_funnels(), bucket=60, lateness=600)
    ctx = SimpleNamespace(engines={0: engine}, newest_event={}, settings=SimpleNamespace())
    applied = admitted(raws)
    count.count_admitted(ctx, applied)
    return engine, applied


def test_a_batch_reaches_the_engine_in_event_time_order_with_the_same_counts():
    base = 1_700_000_000.0
    raws = [(visit(i, base + (i * 37) % 100, f"v{i % 7}"), False) for i in range(100)]
    random.Random(3).shuffle(raws)
    engine, applied = run(raws)
    times = [base + (int(e[1:]) * 37) % 100 for e, _ in engine.order]
    assert times == sorted(times)
    arrival = Engine(load_funnels(), bucket=60, lateness=600)
    for raw, _ in raws:
        arrival.process(decode(raw, now=float("inf")))
    assert engine.counters == arrival.counters
    assert sum(applied.counted.values()) == 100


def test_a_correction_stays_after_the_event_it_corrects():
    base = 1_700_000_000.0
    raws = [
        (visit(1, base + 5, "v1"), False),
        (visit(2, base + 1, "v2"), False),
        (visit(1, base + 5, "v1", channel="paid"), True),  # same id and time, filled in
    ]
    engine, applied = run(raws)
    assert engine.order == [("e2", False), ("e1", False), ("e1", True)]
    assert sum(applied.counted.values()) == 2  # the correction is not another event
