"""Counters (Prometheus text at GET /metrics, through prometheus-client) and one-JSON-object-per-line logs."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec
from prometheus_client import Counter as Counter

from heatmap_http.metrics import AppMetrics

logger = logging.getLogger("ingestion_api")
_json = msgspec.json.Encoder()


def log_event(event: str, level: int = logging.INFO, **fields: object) -> None:
    if logger.isEnabledFor(level):
        record = {
            "ts": datetime.now(UTC).isoformat(),
            "level": logging.getLevelName(level).lower(),
            "event": event,
            **fields,
        }
        logger.log(level, _json.encode(record).decode())


class Metrics(AppMetrics):
    """The ingestion counters, in this app instance's registry."""

    def __init__(self) -> None:
        super().__init__("ingestion")
        # outcome: accepted | duplicate | rejected ; status is the HTTP status answered.
        self.batches = Counter(
            "heatmap_ingest_batches", "Batches answered, by outcome and HTTP status.", ["outcome", "status"],
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
