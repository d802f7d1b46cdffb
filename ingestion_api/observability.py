"""Counters (Prometheus text at GET /metrics, through prometheus-client) and the ingestion's structured log events."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
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
        self.without_dedup = Counter(
            "heatmap_ingest_batches_without_dedup",
            "Batches answered 202 without their batch_id recorded, because Redis was unreachable and "
            "HEATMAP_INGESTION_WITHOUT_REDIS=accept: a re-send of one is published again.",
            registry=self.registry,
        )

    def accepted(self, events: int, duplicate: bool) -> None:
        outcome = "duplicate" if duplicate else "accepted"
        self.batches.labels(outcome, "202").inc()
        self.events.labels(outcome).inc(events)

    def rejected(self, status_code: int, events: int | None) -> None:
        """events is None when the body could not be decoded far enough to count them."""
        self.batches.labels("rejected", str(status_code)).inc()
        if events:
            self.events.labels("rejected").inc(events)


class OutageLog:
    """Turns a stream of call outcomes to one dependency into one line when it goes away and one when it is back.

    The lines are ``<dependency>_unreachable`` (since when, the first error, and ``context``:
    what ingestion does meanwhile) and ``<dependency>_back`` (since, after how long, how many
    ``failed_<attempts>``), whatever the request rate. A failure counts only if its attempt
    started after the last success: requests that were already waiting when the dependency
    came back must not reopen the outage.
    """

    def __init__(self, dependency: str, attempts: str, **context: object) -> None:
        self._dependency = dependency
        self._failures_field = f"failed_{attempts}"
        self._context = context
        self._last_success = time.monotonic()
        self._down_since: datetime | None = None
        self._down_at = 0.0
        self._failures = 0

    def failed(self, attempt_started: float, error: Exception) -> bool:
        """Count a failed attempt; False when it says nothing of the dependency now (it began before the last success)."""
        if attempt_started < self._last_success:
            return False
        self._failures += 1
        if self._down_since is None:
            self._down_at = attempt_started
            self._down_since = datetime.now(UTC) - timedelta(seconds=time.monotonic() - attempt_started)
            log_event(
                f"{self._dependency}_unreachable",
                logging.WARNING,
                always=True,
                since=self._down_since.isoformat(),
                error=str(error),
                **self._context,
            )
        return True

    def succeeded(self) -> None:
        self._last_success = time.monotonic()
        if self._down_since is not None:
            log_event(
                f"{self._dependency}_back",
                logging.WARNING,
                always=True,
                since=self._down_since.isoformat(),
                after_s=round(self._last_success - self._down_at, 1),
                **{self._failures_field: self._failures},
            )
            self._down_since, self._failures = None, 0


class AcceptedLog:
    """Batches answered 202, written as one ``batches_accepted`` line per interval instead of a line per batch.

    A line per batch cost the server about a tenth of its CPU (a LogRecord, its JSON, the queue and
    a write per line) to repeat what the lake keeps with every event (batch_id, Kafka partition and
    offset). The interval's line keeps what an operator reads a log for: per client_id, the batches
    published, their events and the duplicates acknowledged again (/metrics has the same totals as
    counters). Invariant: every 202 is counted in exactly one line (``flush`` at shutdown writes the
    last); an interval without a 202 writes nothing. At DEBUG the service also logs each batch.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        # client_id -> [batches published, their events, batches acknowledged again as duplicates]
        self._clients: dict[str, list[int]] = {}
        self._since = datetime.now(UTC)

    def add(self, client_id: str, events: int, duplicate: bool) -> None:
        tally = self._clients.get(client_id)
        if tally is None:
            tally = self._clients[client_id] = [0, 0, 0]
        if duplicate:
            tally[2] += 1
        else:
            tally[0] += 1
            tally[1] += events

    def flush(self) -> None:
        """Write the line of what was accepted since the previous one (nothing if nothing was)."""
        clients, self._clients = self._clients, {}
        since, self._since = self._since, datetime.now(UTC)
        if not clients:
            return
        log_event(
            "batches_accepted",
            since=since.isoformat(),
            until=self._since.isoformat(),
            batches=sum(tally[0] for tally in clients.values()),
            events=sum(tally[1] for tally in clients.values()),
            duplicates=sum(tally[2] for tally in clients.values()),
            clients={
                client: {"batches": batches, "events": events, "duplicates": duplicates}
                for client, (batches, events, duplicates) in sorted(clients.items())
            },
        )

    async def run(self) -> None:
        """Flush every interval until cancelled (the app's lifespan runs it, then flushes once more)."""
        while True:
            await asyncio.sleep(self.interval_s)
            self.flush()
