"""Prometheus metrics of the worker (names and labels: DESIGN.md section 5).

Counters are plain prometheus_client objects in the default registry; the
table-derived gauges are added later by a collector that reads the tables at
scrape time.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

EVENTS = Counter(
    "funnel_events",
    "Valid events consumed, by source topic and event type.",
    ["topic", "type"],
)


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
