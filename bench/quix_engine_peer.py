"""The same-job peer: our funnel engine inside a Quix Streams application.

A benchmark baseline only (issue #22, target 3), run by bench/scale.py in a
virtualenv of its own (bench/.quix-venv: `quixstreams`, `msgspec`, `orjson`
from PyPI), never part of the product. It does the worker's job with Quix's
streaming layer instead of ours, so the two differ only there:

1. reads the input topics, decodes and validates each event with our decoder
   (stream/core/events.py; rejects are dropped and counted);
2. re-keys by entity with ``group_by`` (Quix's repartition topic, as our
   ``funnel.events``), the original bytes as the value;
3. in one stateful function, keyed by entity: de-dup by event id in Quix's
   state, the event through the partition's engine (core/engine.py, one per
   partition, as in the worker), and the engine's changes (journey records,
   counters, as core/state.py encodes them for our tables) written to Quix's
   state (RocksDB plus changelog, flushed at each checkpoint), with Quix's
   exactly-once processing, committing each second.

Event time as Quix keeps it: the partition's watermark is its newest event
time. Prints one JSON line: figures and a digest of the summed counters, which
bench/scale.py compares with `funnel replay` of the same events (same job,
same numbers). Not built: reading the engines back from the state after a
restart (Quix's State API has no scan to read a partition's counters back);
the bench runs the peer once from empty state.

    python bench/quix_engine_peer.py BOOTSTRAP GROUP EVENTS TYPE=TOPIC [TYPE=TOPIC ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # our stream.core

import orjson  # noqa: E402
from quixstreams import Application, message_context  # noqa: E402

from bench.common import counters_digest  # noqa: E402
from bench.quix_tally import Tally  # noqa: E402
from stream.core import dedup, state  # noqa: E402
from stream.core.engine import Engine  # noqa: E402
from stream.core.events import Rejection, decode, entity_of  # noqa: E402
from stream.core.funnels import load_funnels  # noqa: E402

EXPIRE_EVERY_S = 1.0  # the worker expires once a batch (about BATCH_WITHIN)
COUNTERS = "__counters__"  # the state prefix of the partition's counters, one key each


class Peer:
    """Per-partition engines and the figures of the run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.funnels = load_funnels(None)
        self.engines: dict[int, Engine] = {}
        self.expired_at: dict[int, float] = {}
        self.topic_type = dict(pair.split("=", 1)[::-1] for pair in args.topics)
        self.outcomes: Counter[str] = Counter()
        self.tally = Tally(args.events)

    def route(self, raw: bytes) -> list[str] | None:
        """Stage 1: a valid event's entity and bytes (as text, for the JSON
        repartition topic), or None for a reject."""
        self.tally.started()
        topic = message_context().topic
        try:
            ev = decode(raw, self.topic_type.get(topic), time.time())
        except Rejection:
            self.outcomes["invalid"] += 1
            return None
        return [entity_of(ev), raw.decode()]

    def count(self, value: list[str], quix_state: Any) -> None:
        """Stage 2, keyed by entity: de-dup, the engine, its changes into the state."""
        entity, raw = value
        ev = decode(raw.encode(), now=float("inf"))
        seen_key = f"seen:{ev.event_id}"
        if dedup.is_duplicate(quix_state.get(seen_key), ev.ts, self.args.horizon):
            self.outcomes["duplicate"] += 1
            return
        quix_state.set(seen_key, ev.ts)
        p = message_context().partition
        engine = self.engine(p)
        engine.advance(max(engine.watermark, ev.ts))
        if not engine.process(ev):
            self.outcomes["late"] += 1
            return
        self.outcomes["valid"] += 1
        now = time.monotonic()
        if now - self.expired_at.get(p, 0.0) > EXPIRE_EVERY_S:
            self.expired_at[p] = now
            engine.expire()
        self.persist(p, engine, quix_state._transaction)  # Quix's PartitionTransaction

    def engine(self, p: int) -> Engine:
        if p not in self.engines:
            self.engines[p] = Engine(self.funnels, self.args.bucket, self.args.lateness)
        return self.engines[p]

    def persist(self, p: int, engine: Engine, transaction: Any) -> None:
        """The engine's changes as our tables hold them, each under its entity's
        state prefix (expiry may drop other entities' journeys)."""
        changes = engine.take_changes()
        for key, value in state.journey_records(p, changes).items():
            entity = orjson.loads(key)[2]
            put(transaction.as_state(prefix=entity), key, value)  # as Quix keys its state
        counters = transaction.as_state(prefix=COUNTERS)
        for key, n in changes.counters.items():
            put(counters, state.counter_key(p, key), n or None)

    def digest(self) -> dict[str, Any]:
        """The counters summed over the partitions, as bench/scale.py sums replay's."""
        total: Counter = Counter()
        for engine in self.engines.values():
            total.update(engine.counters)
        kept = sum(1 for n in total.values() if n)
        return {"counters": kept, "counters_sha256": counters_digest(total)}


def put(quix_state: Any, key: str, value: Any) -> None:
    if value is None:
        quix_state.delete(key)
    else:
        quix_state.set(key, value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("group")
    parser.add_argument("events", type=int, help="valid events to count before stopping")
    parser.add_argument("topics", nargs="+", metavar="TYPE=TOPIC")
    parser.add_argument("--bucket", type=int, default=60)
    parser.add_argument("--lateness", type=float, default=600.0)
    parser.add_argument("--horizon", type=float, default=86400.0)
    # As the count-only peer. Quix's default of 5 s was slower here: 1,494 against
    # 1,789 events/s steady, 20k events.
    parser.add_argument("--commit-interval", type=float, default=1.0)
    args = parser.parse_args()
    peer = Peer(args)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=args.commit_interval,
        loglevel="WARNING",
        state_dir=f"/tmp/quix-state-{args.group}",
        on_message_processed=peer.tally.processed,
    )
    topics = [pair.split("=", 1)[1] for pair in args.topics]
    frames = [app.dataframe(app.topic(t, value_deserializer="bytes")) for t in topics]
    sdf = frames[0]
    for frame in frames[1:]:
        sdf = sdf.concat(frame)
    sdf = sdf.apply(peer.route).filter(lambda routed: routed is not None)
    sdf = sdf.group_by(lambda routed: routed[0], name="entity")
    sdf.apply(peer.count, stateful=True)
    peer.tally.app = app
    started = time.monotonic()
    app.run()
    figures = {
        **peer.tally.figures(started, time.monotonic()),
        "outcomes": dict(peer.outcomes),
        "commit_interval_s": args.commit_interval,
        **peer.digest(),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
