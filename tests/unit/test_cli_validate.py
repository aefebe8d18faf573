import json
from pathlib import Path

from stream.tools.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"


def test_validate_reports_each_invalid_line_and_a_summary(tmp_path, capsys):
    good = (EXAMPLES / "valid" / "cart-add.json").read_text()
    lines = [
        json.dumps(json.loads(good)),
        "",
        '{"type": "cart", "event_id": "x", "occurred_at": "2026-11-23T10:00:00Z",'
        ' "visitor_id": "v", "action": "add", "value": -1}',
        "{broken",
        json.dumps(json.loads(good)),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("3: invalid_field: field `value`")
    assert out[1].startswith("4: invalid_json: ")
    assert out[-1] == "2 valid, 2 invalid"


def test_validate_clean_file_exits_zero(tmp_path, capsys):
    path = tmp_path / "ok.jsonl"
    path.write_text(
        (EXAMPLES / "valid" / "visit-minimal.json").read_text().replace("\n", "") + "\n"
    )
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "1 valid, 0 invalid"


def test_produce_checks_the_file_before_connecting(tmp_path, capsys, monkeypatch):
    # A Kafka address nothing listens on: the file problem must be the one reported.
    monkeypatch.setenv("FUNNEL_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    missing = tmp_path / "nope.jsonl"
    assert main(["produce", str(missing)]) == 2
    assert capsys.readouterr().err.strip() == f"funnel produce: {missing}: no such file"
    assert main(["produce", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"funnel produce: {tmp_path}: not a file"
