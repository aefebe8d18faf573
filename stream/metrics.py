"""Prometheus metrics of the worker (names and labels: DESIGN.md section 5).

Counters are plain prometheus_client objects in the default registry; the
table-derived gauges are added later by a collector that reads the tables at
scrape time. Labels carry topic names and reasons only, never personal data.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

EVENTS = Counter(
    "funnel_events",
    "Valid, first-seen events counted, by source topic and event type.",
    ["topic", "type"],
)
REJECTED = Counter(
    "funnel_events_rejected",
    "Input messages sent to the dead-letter topic, by source topic and reason.",
    ["topic", "reason"],
)
DUPLICATES = Counter(
    "funnel_events_duplicate",
    "Valid events dropped as duplicates of an event_id seen within the horizon.",
    ["topic"],
)


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
