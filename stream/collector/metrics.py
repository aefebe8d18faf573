"""The collector's own Prometheus metrics (its /metrics), apart from the worker's."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class CollectorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "funnel_collector_requests_total",
            "HTTP requests by endpoint and answer status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.accepted = Counter(
            "funnel_collector_events_total",
            "Events accepted (acknowledged by Kafka) by write source and type",
            ["source", "type"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "funnel_collector_rejected_total",
            "Events or payloads rejected (kept on the dead-letter topic) by endpoint and reason",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "funnel_collector_request_seconds",
            "Time to answer a write request, Kafka's acknowledgement included",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.pending = Gauge(
            "funnel_collector_pending_events",
            "Events sent to Kafka and not yet acknowledged",
            registry=self.registry,
        )

    def text(self) -> bytes:
        return generate_latest(self.registry)
