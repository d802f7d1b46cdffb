"""Counters (Prometheus text at GET /metrics) and the ingestion's structured log events."""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial

from heatmap_core import logs

# One JSON line per event, formatted and throttled by heatmap_core.logs.
log_event = partial(logs.log_event, logging.getLogger("ingestion_api"))


class Metrics:
    """Process-local counters; each instance of the API exports its own."""

    def __init__(self) -> None:
        # outcome: accepted | duplicate | rejected ; reason is the HTTP status for rejections.
        self.batches: Counter[tuple[str, str]] = Counter()
        self.events: Counter[str] = Counter(dict.fromkeys(("accepted", "duplicate", "rejected"), 0))

    def accepted(self, events: int, duplicate: bool) -> None:
        outcome = "duplicate" if duplicate else "accepted"
        self.batches[(outcome, "202")] += 1
        self.events[outcome] += events

    def rejected(self, status_code: int, events: int | None) -> None:
        """events is None when the body could not be decoded far enough to count them."""
        self.batches[("rejected", str(status_code))] += 1
        if events:
            self.events["rejected"] += events

    def render(self) -> str:
        lines = [
            "# HELP heatmap_ingest_batches_total Batches answered, by outcome and HTTP status.",
            "# TYPE heatmap_ingest_batches_total counter",
            *(
                f'heatmap_ingest_batches_total{{outcome="{outcome}",status="{status}"}} {count}'
                for (outcome, status), count in sorted(self.batches.items())
            ),
            "# HELP heatmap_ingest_events_total Events in answered batches, by outcome "
            "(rejected counts decodable batches only).",
            "# TYPE heatmap_ingest_events_total counter",
            *(
                f'heatmap_ingest_events_total{{outcome="{outcome}"}} {count}'
                for outcome, count in sorted(self.events.items())
            ),
        ]
        return "\n".join(lines) + "\n"
