"""The peer: per-step windowed counting written with Quix Streams.

A benchmark baseline only, run by bench/scale.py in a virtualenv of its own
(bench/.quix-venv, `quixstreams` from PyPI), never part of the product. It
reads the same input topics, keys each event by its step (visit, signup,
cart:<action>, call, deal:<stage>; repartitioned with ``group_by``), and
counts per step in one-minute tumbling windows of event time, with Quix's
exactly-once processing and RocksDB state. Prints one JSON line of figures.

    python bench/quix_peer.py BOOTSTRAP GROUP EVENTS TOPIC [TOPIC ...]
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime

from quixstreams import Application

first: list[float] = []


def step_of(value: dict) -> str:
    if not first:
        first.append(time.monotonic())
    kind = value.get("type")
    if kind == "cart":
        return f"cart:{value.get('action')}"
    if kind == "deal_stage":
        return f"deal:{value.get('stage')}"
    return str(kind)


def event_time(value: dict, headers: object, timestamp: int, timestamp_type: object) -> int:
    try:
        return int(datetime.fromisoformat(value["occurred_at"]).timestamp() * 1000)
    except (KeyError, TypeError, ValueError):
        return timestamp


def main() -> int:
    bootstrap, group, total, *topics = sys.argv[1:]
    counted = [0]

    def processed(topic: str, partition: int, offset: int) -> None:
        # The second stage (after the repartition by step) has counted the event.
        if topic.startswith("repartition__"):
            counted[0] += 1
            if counted[0] >= int(total):
                app.stop()

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=1.0,
        loglevel="WARNING",
        state_dir=f"/tmp/quix-state-{group}",
        on_message_processed=processed,
    )
    frames = [
        app.dataframe(app.topic(t, value_deserializer="json", timestamp_extractor=event_time))
        for t in topics
    ]
    sdf = frames[0]
    for frame in frames[1:]:
        sdf = sdf.concat(frame)
    sdf = sdf.group_by(step_of, name="step")
    # Grace = our allowed lateness (10 min): without it Quix drops out-of-order events.
    sdf = sdf.tumbling_window(60_000, grace_ms=600_000).count().current()
    started = time.monotonic()
    app.run()
    done = time.monotonic()
    took = done - (first[0] if first else started)
    print(
        json.dumps(
            {
                "events": int(total),
                "startup_s": round((first[0] if first else done) - started, 2),
                "seconds": round(took, 2),
                "events_per_s": round(int(total) / took),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
