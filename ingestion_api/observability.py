"""Counters (Prometheus text at GET /metrics, through prometheus-client) and the ingestion's structured log events."""

from __future__ import annotations

import logging
from functools import partial

from prometheus_client import Counter

from heatmap_core import logs
from heatmap_http.metrics import AppMetrics

# One JSON line per event, formatted and throttled by heatmap_core.logs.
log_event = partial(logs.log_event, logging.getLogger("ingestion_api"))


class Metrics(AppMetrics):
    """The ingestion counters, in this app instance's registry."""

    def __init__(self) -> None:
        super().__init__("ingestion")
        # outcome: accepted | duplicate | rejected ; status is the HTTP status answered.
        self.batches = Counter(
            "heatmap_ingest_batches",
            "Batches answered, by outcome and HTTP status.",
            ["outcome", "status"],
            registry=self.registry,
        )
        self.events = Counter(
            "heatmap_ingest_events",
            "Events in answered batches, by outcome (rejected counts decodable batches only).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("accepted", "duplicate", "rejected"):
            self.events.labels(outcome)

    def accepted(self, events: int, duplicate: bool) -> None:
        outcome = "duplicate" if duplicate else "accepted"
        self.batches.labels(outcome, "202").inc()
        self.events.labels(outcome).inc(events)

    def rejected(self, status_code: int, events: int | None) -> None:
        """events is None when the body could not be decoded far enough to count them."""
        self.batches.labels("rejected", str(status_code)).inc()
        if events:
            self.events.labels("rejected").inc(events)
