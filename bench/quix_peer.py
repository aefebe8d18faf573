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

from quix_tally import Tally  # bench/, this script's folder
from quixstreams import Application


def step_of(value: dict, tally: Tally) -> str:
    tally.started()
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
    tally = Tally(int(total))  # the second stage (after the repartition by step) counts
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        commit_interval=1.0,
        loglevel="WARNING",
        state_dir=f"/tmp/quix-state-{group}",
        on_message_processed=tally.processed,
    )
    frames = [
        app.dataframe(app.topic(t, value_deserializer="json", timestamp_extractor=event_time))
        for t in topics
    ]
    sdf = frames[0]
    for frame in frames[1:]:
        sdf = sdf.concat(frame)
    sdf = sdf.group_by(lambda value: step_of(value, tally), name="step")
    # Grace = our allowed lateness (10 min): without it Quix drops out-of-order events.
    sdf = sdf.tumbling_window(60_000, grace_ms=600_000).count().current()
    tally.app = app
    started = time.monotonic()
    app.run()
    print(json.dumps(tally.figures(started, time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
