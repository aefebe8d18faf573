"""The bench summary (bench/__main__.py) and the profile digest (bench/profile.py)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.__main__ import summarise, table
from bench.profile import frame_name
from bench.profile import summarise as digest


def write(path: Path, name: str, doc: dict) -> None:
    (path / f"{name}.json").write_text(json.dumps({"machine": {"git": "abc1234"}, **doc}))


def step_files(path: Path, journeys: int, p99_at_5000: float) -> None:
    write(
        path,
        "scale-with-peer",
        {
            "events": 1000,
            "raw_consumer": {"events_per_s": 100_000},
            "replay": {"events_per_s": 25_000, "ratio_vs_raw": 0.25},
            "workers": [
                {
                    "events_per_s": 2000,
                    "ratio_vs_raw": 0.02,
                    "ratio_vs_replay": 0.08,
                    "ratio_vs_quix_same_job_peer": 1.25,
                    "ratio_vs_quix_count_only_peer": 0.5,
                },
                {"events_per_s": 3000, "ratio_vs_raw": 0.03, "speedup_vs_first": 1.5},
            ],
            "quix_same_job_peer": {"events_per_s": 1600, "same_counters_as_replay": True},
            "quix_count_only_peer": {"events_per_s": 4000},
        },
    )
    runs = [
        {"rate": r, "p50_s": 0.5, "p99_s": p, "max_s": p + 0.1, "consumed_per_s": r}
        for r, p in ((1000, 0.9), (5000, p99_at_5000))
    ]
    write(path, "latency", {"runs": runs})
    recovery = {
        "journeys": journeys,
        "ready_s": 20.0,
        "answers_all_s": 35.0,
        "memory_per_1m_journeys_mb": 4000,
        "changelog_disk_per_1m_journeys_mb": 1100,
    }
    write(path, "recovery", recovery)


def test_summary_puts_each_figure_beside_its_target(tmp_path: Path) -> None:
    step_files(tmp_path, journeys=100_000, p99_at_5000=3.5)
    s = summarise(tmp_path)
    assert s["worker_vs_raw"] == 0.02
    assert s["worker_vs_same_job_peer"] == 1.25
    assert s["two_workers_speedup"] == 1.5
    assert s["p99_at_5000_s"] == 3.5
    assert s["recovery_1m_journeys_s"] is None  # not scaled from 100k: a fixed part
    text = table(s)
    assert "| replay / raw consumer | 0.25 | 0.2: met |" in text
    assert "| one worker / replay | 0.08 | 0.5: missed |" in text
    assert "| one worker / same-job peer | 1.25 | 1.0: met |" in text
    assert "counters equal replay's: yes" in text
    assert "| two workers / one | 1.5 | 1.6: missed |" in text
    assert "| worker memory per 1M journeys, MB | 4,000 | 600: missed |" in text
    assert "p99 <= 1 s: missed" in text
    assert (
        "| recovery of 1M journeys (answering all), s | (full run only) | 30 s: not measured |"
        in (text)
    )


def test_a_full_run_is_not_called_scaled(tmp_path: Path) -> None:
    step_files(tmp_path, journeys=1_000_000, p99_at_5000=0.8)
    text = table(summarise(tmp_path))
    # Answering all again, not just ready, counts against the target.
    assert "| recovery of 1M journeys (answering all), s | 35.0 | 30 s: missed |" in text
    assert "p99 <= 1 s: met" in text


def test_profile_digest_counts_self_and_total_share() -> None:
    lines = [
        "run (/x/lib/python3.11/site-packages/faust/app.py);count (/repo/stream/worker/app.py) 6",
        "run (/x/lib/python3.11/site-packages/faust/app.py);dump (/repo/stream/core/state.py) 3",
        "run (/x/lib/python3.11/site-packages/faust/app.py) 1",
        "not a sample line",
    ]
    d = digest(lines)
    assert d["samples"] == 10
    assert d["self_pct"][0] == ["stream/worker/app.py:count", 60.0]
    assert ["faust/app.py:run", 100.0] in d["total_pct"]
    assert ["stream/core/state.py:dump", 30.0] in d["total_pct"]
    assert frame_name("f (/a/site-packages/aiokafka/conn.py)") == "aiokafka/conn.py:f"


def test_step_files_of_an_older_bench_leave_new_figures_unmeasured(tmp_path: Path) -> None:
    step_files(tmp_path, journeys=100_000, p99_at_5000=0.8)
    old = json.loads((tmp_path / "scale-with-peer.json").read_text())
    for key in ("replay", "quix_same_job_peer", "quix_count_only_peer"):
        del old[key]
    (tmp_path / "scale-with-peer.json").write_text(json.dumps(old))
    text = table(summarise(tmp_path))
    assert "| funnel replay (the engine), events/s | not measured |  |" in text
    assert "counters equal replay's: not checked" in text
