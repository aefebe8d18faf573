"""`funnel replay` over files in other orders: each event type is a source of the
watermark (tools/replay.py), so a file that lists one type's whole history
before the next one's counts exactly what the same events in time order count,
and nothing is late. The replay moves the watermark only when a source's mark
moves or a type's last line passes; these tests fail if it misses a move (late
events or other counts) or moves it too early (events called late)."""

from __future__ import annotations

import io
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.core.events import encode
from stream.tools.replay import last_lines, run_engine
from tests.unit.test_engine_oracle import BUCKET, FUNNELS, LATENESS, make_event, to_event

HORIZON = 86400.0


def timed_events(seed: int, n: int) -> list:
    rng = random.Random(seed)
    ts, out = 1_795_000_000.0, []
    for i in range(n):
        ts += rng.choice([0, 1, 30, 200, 900, 4000])
        out.append(to_event(make_event(i, rng, ts), ts))
    return out


def replayed(tmp: Path, name: str, events: list, junk_at: int | None = None):
    lines = [encode(ev) for ev in events]
    if junk_at is not None:
        lines.insert(junk_at, b'{"type": "visit", not json')
    path = tmp / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return run_engine(path, FUNNELS, BUCKET, LATENESS, HORIZON, err=io.StringIO())


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 10_000), n=st.integers(5, 120))
def test_types_one_after_another_count_as_in_time_order(tmp_path: Path, seed: int, n: int) -> None:
    events = timed_events(seed, n)
    kinds = sorted({ev.type for ev in events}, key=lambda _: random.Random(seed).random())
    grouped = [ev for kind in kinds for ev in events if ev.type == kind]
    in_time, counts_time = replayed(tmp_path, "time.jsonl", events)
    by_type, counts_type = replayed(tmp_path, "types.jsonl", grouped, junk_at=n // 2)
    assert counts_type["late"] == counts_time["late"] == 0
    assert counts_type["invalid"] == 1
    assert by_type.counters == in_time.counters
    assert by_type.watermark == in_time.watermark == max(ev.ts for ev in events)


def test_last_lines_name_each_type_and_skip_junk(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"type": "visit"}\n[1, 2]\nnot json\n{"type": "cart"}\n{"type": "visit"}\n')
    assert last_lines(path) == {"visit": 5, "cart": 4}
