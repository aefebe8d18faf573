"""Worked examples from marketing practice, end to end through `funnel replay`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from stream.core.funnels import FunnelConfigError, parse_funnels
from stream.tools.cli import main

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


def write(tmp_path, events, name="events.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def replay(tmp_path, capsys, events, *args, in_time_order=True):
    if in_time_order:  # arrival in event-time order (no late events)
        events = sorted(events, key=lambda e: e.get("occurred_at", ""))
    path = write(tmp_path, events)
    assert main(["replay", str(path), *args]) == 0
    out = capsys.readouterr()
    return json.loads(out.out), out.err


def funnel(doc, name):
    return next(f for f in doc["funnels"] if f["funnel"] == name)


def test_100_visits_20_newsletter_signups_is_20_percent(tmp_path, capsys):
    events = [
        {"event_id": f"v{i}", "type": "visit", "occurred_at": at(i), "visitor_id": f"p{i}"}
        for i in range(100)
    ]
    events += [
        {
            "event_id": f"s{i}",
            "type": "signup",
            "occurred_at": at(i + 0.5),
            "visitor_id": f"p{i}",
            "user_id": f"u{i}",
            "method": "newsletter",
        }
        for i in range(20)
    ]
    shop = funnel(replay(tmp_path, capsys, events)[0], "shop")
    assert shop["steps"][0]["reached"] == 100
    assert shop["steps"][1] == {
        "name": "signup",
        "reached": 20,
        "conversion": 0.2,
        "drop_off": 0.8,
        "avg_time_to_convert_s": 30.0,  # each signup came half a minute after its visit
    }


def test_1000_visits_50_purchases_is_5_percent_overall(tmp_path, capsys):
    events = []
    for i in range(1000):
        events.append(
            {
                "event_id": f"v{i}",
                "type": "visit",
                "occurred_at": at(i / 10),
                "visitor_id": f"p{i}",
                "channel": "search" if i % 2 else "email",
            }
        )
    for i in range(50):
        t = i / 10
        events.append(
            {
                "event_id": f"s{i}",
                "type": "signup",
                "occurred_at": at(t + 1),
                "visitor_id": f"p{i}",
                "user_id": f"u{i}",
            }
        )
        for k, action in enumerate(["add", "checkout", "purchase"], 2):
            events.append(
                {
                    "event_id": f"c{i}-{action}",
                    "type": "cart",
                    "occurred_at": at(t + k),
                    "visitor_id": f"p{i}",
                    "action": action,
                    "value": 20,
                }
            )
    doc, _ = replay(tmp_path, capsys, events, "--breakdown", "channel")
    shop = funnel(doc, "shop")
    assert shop["steps"][0]["reached"] == 1000
    assert shop["steps"][-1]["reached"] == 50
    assert shop["overall_conversion"] == 0.05
    assert shop["narrow_neck"] == "signup"
    by_channel = shop["breakdown"]["channel"]
    assert by_channel["search"]["steps"][0]["reached"] == 500
    assert by_channel["email"]["steps"][-1]["reached"] == 25


def test_100_leads_20_won_is_a_20_percent_closing_rate(tmp_path, capsys):
    events = []
    for i in range(100):
        events.append(
            {
                "event_id": f"l{i}",
                "type": "deal_stage",
                "occurred_at": at(i),
                "deal_id": f"d{i}",
                "stage": "lead",
                "manager": "ann" if i < 50 else "bob",
            }
        )
    for i in range(20):
        events.append(
            {
                "event_id": f"w{i}",
                "type": "deal_stage",
                "occurred_at": at(200 + i),
                "deal_id": f"d{i}",
                "stage": "won",
                "status": "won",
                "amount": 1000,
            }
        )
    for i in range(20, 50):
        events.append(
            {
                "event_id": f"x{i}",
                "type": "deal_stage",
                "occurred_at": at(200 + i),
                "deal_id": f"d{i}",
                "stage": "contacted",
                "status": "lost",
                "lost_reason": "price" if i % 3 else "timing",
            }
        )
    doc, _ = replay(tmp_path, capsys, events, "--breakdown", "manager")
    sales = funnel(doc, "sales")
    assert (sales["leads"], sales["won"], sales["lost"]) == (100, 20, 30)
    assert sales["closing_rate"] == 0.2
    assert sales["win_rate"] == 0.4  # 20 / (20 + 30)
    assert sales["lost_reasons"] == {"price": 20, "timing": 10}
    # Won deals skipped the stages between lead and won.
    assert sales["steps"][1]["skipped"] == 20
    assert sales["breakdown"]["manager"]["ann"]["closing_rate"] == 0.4
    assert sales["breakdown"]["manager"]["bob"]["closing_rate"] == 0.0


B2B = """
[[funnel]]
name = "b2b"
mode = "pipeline"
entity = "deal_id"
window = "365d"
stages = ["first contact", "qualified", "intent", "contract", "payment", "delivery",
          "repeat purchase", "regular supply"]
"""


def test_eight_stage_b2b_pipeline_from_toml_names_the_narrow_neck(tmp_path, capsys):
    # Deals reaching each stage: 200, 120, 90, 30, 27, 25, 10, 6.
    reach = [200, 120, 90, 30, 27, 25, 10, 6]
    stages = parse_funnels(B2B)[0].stages
    events = []
    for d in range(200):
        furthest = max(k for k, n in enumerate(reach) if d < n)
        for k in range(furthest + 1):
            events.append(
                {
                    "event_id": f"d{d}-{k}",
                    "type": "deal_stage",
                    "occurred_at": at(d + k * 0.1),
                    "deal_id": f"d{d}",
                    "stage": stages[k],
                }
            )
    (tmp_path / "b2b.toml").write_text(B2B)
    doc, _ = replay(tmp_path, capsys, events, "--funnels", str(tmp_path / "b2b.toml"))
    b2b = funnel(doc, "b2b")
    assert [s["reached"] for s in b2b["steps"]] == reach
    conversions = [s["conversion"] for s in b2b["steps"]]
    assert conversions[1:] == [0.6, 0.75, round(30 / 90, 6), 0.9, round(25 / 27, 6), 0.4, 0.6]
    assert b2b["narrow_neck"] == "contract"
    assert b2b["closing_rate"] == 0.03


def test_replay_reports_invalid_and_late_lines_with_line_numbers(tmp_path, capsys):
    # c is older than the watermark (a's time) minus the shop's 7-day window and
    # the 10 minutes of lateness: its attempt could have been expired already.
    events = [
        {"event_id": "a", "type": "visit", "occurred_at": at(60), "visitor_id": "p"},
        {"event_id": "b", "type": "visit", "visitor_id": "p"},
        {"event_id": "c", "type": "visit", "occurred_at": at(-8 * 24 * 60), "visitor_id": "q"},
        {"event_id": "a", "type": "visit", "occurred_at": at(60), "visitor_id": "p"},
    ]
    doc, err = replay(tmp_path, capsys, events, in_time_order=False)
    assert ":2: missing_field: required field `occurred_at` is missing" in err
    assert ":3: late: " in err and "older than the watermark" in err
    assert doc["events"] == {"valid": 1, "invalid": 1, "duplicate": 1, "late": 1}


def test_replay_counts_a_file_that_lists_one_types_history_before_anothers(tmp_path, capsys):
    # Twelve days of visits first, then the signups of the same days: each type
    # is a source of the watermark, so the signups are not late (as in the stream,
    # where the signups topic holds the watermark back until it is read).
    visits = [
        {"event_id": f"v{d}", "type": "visit", "occurred_at": at(d * 1440), "visitor_id": f"p{d}"}
        for d in range(12)
    ]
    signups = [
        {"event_id": f"s{d}", "type": "signup", "occurred_at": at(d * 1440 + 5),
         "visitor_id": f"p{d}", "user_id": f"u{d}"}
        for d in range(12)
    ]  # fmt: skip
    doc, err = replay(tmp_path, capsys, visits + signups, in_time_order=False)
    assert "late" not in err
    assert doc["events"]["late"] == 0
    assert [s["reached"] for s in funnel(doc, "shop")["steps"][:2]] == [12, 12]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            '[[funnel]]\nname = "shop"\nsteps = [{ name = "a", match = { type = "visit" } },'
            ' { name = "b", match = { type = "cart", colour = "red" } }]',
            "funnel 1 ('shop'), step 2 ('b'): field `match.colour`",
        ),
        ('[[funnel]]\nname = "shop"\nwindow = "soon"\nsteps = []', "('shop'): field `window`"),
        ('[[funnel]]\nname = "s"\nmode = "pipeline"\nstages = ["lead"]', "field `stages`"),
        ('[[funnel]]\nname = "s"\nbreakdowns = ["email"]\nsteps = []', "field `breakdowns`"),
    ],
)
def test_bad_funnel_files_name_funnel_step_and_field(toml, message):
    with pytest.raises(FunnelConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_funnels(toml, "funnels.toml")


def test_report_prints_the_b2b_table_and_marks_the_narrow_neck(tmp_path, capsys):
    reach = [10, 8, 6, 2, 2, 2, 1, 1]
    stages = parse_funnels(B2B)[0].stages
    lines = []
    for d in range(10):
        furthest = max(k for k, n in enumerate(reach) if d < n)
        for k in range(furthest + 1):
            doc = {
                "event_id": f"d{d}-{k}",
                "type": "deal_stage",
                "occurred_at": at(d + k * 0.1),
                "deal_id": f"d{d}",
                "stage": stages[k],
            }
            lines.append(json.dumps(doc))
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "b2b.toml").write_text(B2B)
    args = ["--file", str(tmp_path / "events.jsonl"), "--funnels", str(tmp_path / "b2b.toml")]
    assert main(["report", *args]) == 0
    table = capsys.readouterr().out.splitlines()
    rows = {line.split("  ")[0].strip(): line for line in table}
    assert rows["contract"].endswith("<- narrow neck")  # 6 -> 2 is the lowest step conversion
    assert "33.3%" in rows["contract"] and "66.7%" in rows["contract"]  # step conv, drop-off
    assert sum("narrow neck" in line for line in table) == 1
    assert any("closing rate 10.0%" in line for line in table)  # 1 of 10 leads won
    assert main(["report", *args, "--funnel", "nope"]) == 2
    assert "no funnel named 'nope'" in capsys.readouterr().err
    # --svg draws the same table as a picture: counts, the neck, the closing rate.
    assert main(["report", *args, "--svg", str(tmp_path / "b2b.svg")]) == 0
    svg = (tmp_path / "b2b.svg").read_text()
    assert svg.startswith("<svg") and "narrow neck" in svg and "closing rate 10.0%" in svg
    assert ">10</text>" in svg and ">6</text>" in svg
