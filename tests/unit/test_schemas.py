"""The JSON Schema files and the Python decoder are one contract: they agree on every vector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from stream.config import INPUT_TOPICS
from stream.core.events import REASONS, Rejection, decode

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
MANIFEST = json.loads((SCHEMAS / "examples" / "manifest.json").read_text())
TOPIC_TYPE = {topic: t for t, topic in INPUT_TOPICS.items()}
# The vectors are dated 2026-11-23; "now" is fixed so the future rule is stable.
NOW = 1795463622.0


def _registry() -> Registry:
    resources = []
    for path in SCHEMAS.glob("*.schema.json"):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources)


REGISTRY = _registry()
VALIDATORS = {
    t: Draft202012Validator(
        json.loads((SCHEMAS / f"{t}.schema.json").read_text()), registry=REGISTRY
    )
    for t in INPUT_TOPICS
}


def schema_errors(topic: str, raw: bytes) -> list[str]:
    """Errors the schema of the topic's type reports (JSON syntax errors count too)."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return [f"not JSON: {exc}"]
    return [e.message for e in VALIDATORS[TOPIC_TYPE[topic]].iter_errors(doc)]


def test_schema_files_are_valid_draft_2020_12():
    for path in SCHEMAS.glob("*.schema.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))


def test_manifest_lists_every_example_and_only_known_reasons():
    listed = {e["file"] for e in MANIFEST["valid"] + MANIFEST["invalid"]}
    on_disk = {
        str(p.relative_to(SCHEMAS / "examples")) for p in (SCHEMAS / "examples").glob("*/*.json")
    }
    assert listed == on_disk
    assert {e["reason"] for e in MANIFEST["invalid"]} <= set(REASONS)
    # Every reason the decoder can give has at least one vector.
    assert {e["reason"] for e in MANIFEST["invalid"]} == set(REASONS)


@pytest.mark.parametrize("case", MANIFEST["valid"], ids=lambda c: c["file"])
def test_valid_vectors_pass_schema_and_decoder(case):
    raw = (SCHEMAS / "examples" / case["file"]).read_bytes()
    assert schema_errors(case["topic"], raw) == []
    event = decode(raw, TOPIC_TYPE[case["topic"]], now=NOW)
    assert event.type == TOPIC_TYPE[case["topic"]]
    assert event.ts > 0


@pytest.mark.parametrize("case", MANIFEST["invalid"], ids=lambda c: c["file"])
def test_invalid_vectors_rejected_with_the_named_reason(case):
    raw = (SCHEMAS / "examples" / case["file"]).read_bytes()
    with pytest.raises(Rejection) as info:
        decode(raw, TOPIC_TYPE[case["topic"]], now=NOW)
    assert info.value.reason == case["reason"], info.value.message
    assert info.value.field == case["field"], info.value.message
    if case["field"]:
        assert f"`{case['field']}`" in info.value.message
    # The schema catches exactly the vectors the manifest says it catches.
    assert bool(schema_errors(case["topic"], raw)) == case["schema_detects"]


@pytest.mark.parametrize("version", [None, 1, 3])
def test_schema_version_null_means_the_default(version):
    # Found by the property test: the schema allows null for every optional field
    # ("meaning absent"); the decoder rejected a null schema_version.
    doc = {
        "event_id": "e-1",
        "type": "visit",
        "occurred_at": "2026-11-23T09:15:00Z",
        "visitor_id": "v-1",
        "schema_version": version,
    }
    raw = json.dumps(doc).encode()
    assert schema_errors("shop.visits", raw) == []
    assert decode(raw, "visit", now=NOW).schema_version == (version or 1)


def test_schema_version_below_one_is_rejected_by_both():
    doc = {"event_id": "e-1", "type": "visit", "occurred_at": "2026-11-23T09:15:00Z"}
    raw = json.dumps({**doc, "visitor_id": "v-1", "schema_version": 0}).encode()
    assert schema_errors("shop.visits", raw)
    with pytest.raises(Rejection, match="schema_version"):
        decode(raw, "visit", now=NOW)
