"""Accepting one batch: check, authorize, claim its batch_id, publish, acknowledge."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import TypedDict, Unpack

from heatmap_core.events import RawBatchRecord, device_class, encode_record
from heatmap_core.settings import Settings
from ingestion_api.auth import WriteKeys
from ingestion_api.errors import IN_FLIGHT_RETRY_AFTER_S, UNAVAILABLE_RETRY_AFTER_S, BatchRejected
from ingestion_api.ledger import BatchLedger, Claim, LedgerUnavailable
from ingestion_api.models import BatchAccepted, BatchIn, Limits, check_batch
from ingestion_api.observability import AcceptedLog, Metrics, log_event
from ingestion_api.publisher import KafkaPublisher, KafkaUnavailable


def _unavailable(detail: str, events: int) -> BatchRejected:
    """A 503 with Retry-After: nothing acknowledged, the client retries the same batch_id."""
    return BatchRejected(503, detail, events=events, retry_after_s=UNAVAILABLE_RETRY_AFTER_S)


class KafkaOrigin(TypedDict, total=False):
    """Where a published batch landed, logged with its acceptance (a duplicate has none)."""

    partition: int
    offset: int


class IngestService:
    def __init__(
        self,
        settings: Settings,
        publisher: KafkaPublisher,
        ledger: BatchLedger,
        write_keys: WriteKeys,
        metrics: Metrics,
    ):
        self._topic = settings.topic
        # Settings.ingestion_without_redis: publish without the ledger while Redis is down, instead of a 503.
        self.accepts_without_redis = settings.ingestion_without_redis == "accept"
        self._limits = Limits.from_settings(settings)
        self.publisher = publisher
        self.ledger = ledger
        self.write_keys = write_keys
        self.metrics = metrics
        self.accepted_log = AcceptedLog(settings.ingestion_log_interval_s)

    async def ingest(self, batch: BatchIn, writer: str | None) -> BatchAccepted:
        count = len(batch.events)
        self.write_keys.authorize(writer, batch.client_id, count)
        now = datetime.now(UTC)
        check_batch(batch, self._limits, now)

        batch_id = str(batch.batch_id or uuid.uuid4())
        # None: Redis is down and the operator accepts batches without it; nothing records this batch_id.
        claim: Claim | None
        try:
            claim = await self.ledger.claim(batch.client_id, batch_id)
        except LedgerUnavailable as exc:
            if not self.accepts_without_redis:
                raise _unavailable("idempotency store (Redis) unavailable", count) from exc
            claim = None
        if claim is Claim.DONE:
            return self._accepted(batch, batch_id, count, duplicate=True)
        if claim is Claim.PENDING:
            raise BatchRejected(
                409,
                f"batch_id {batch_id} is being published by another request",
                field="batch_id",
                events=count,
                retry_after_s=IN_FLIGHT_RETRY_AFTER_S,
            )

        record = RawBatchRecord(
            client_id=batch.client_id,
            screen_id=batch.screen_id,
            batch_id=batch_id,
            received_at=now,
            events=batch.events,
            view=batch.view,
            # Derived here, once, so no reader of the record recomputes it (v1: unknown).
            device=device_class(batch.view.viewport_w if batch.view else None),
        )
        try:
            delivered = await self.publisher.publish(self._topic, record.key, encode_record(record))
        except KafkaUnavailable as exc:
            if claim is not None:
                await self.ledger.release(batch.client_id, batch_id)
            raise _unavailable("Kafka unavailable: batch not accepted, retry later", count) from exc
        if claim is None:
            self.metrics.without_dedup.inc()
        else:
            await self._commit(batch.client_id, batch_id, count)
        return self._accepted(
            batch, batch_id, count, duplicate=False, partition=delivered.partition, offset=delivered.offset
        )

    async def _commit(self, client_id: str, batch_id: str, count: int) -> None:
        """Record the published batch as done; without Redis, a 503 unless the operator accepts batches without it."""
        try:
            await self.ledger.commit(client_id, batch_id)
        except LedgerUnavailable as exc:
            # Refusing: never a 202 without its key; the client's retry is then published again (the hourly job
            # deduplicates it by event key), which is better than a 202 whose re-send is not a duplicate.
            # Accepting: the 202 without its key is the documented trade.
            answered = 202 if self.accepts_without_redis else 503
            log_event("ledger_commit_failed", logging.WARNING, batch_id=batch_id, error=str(exc), answered=answered)
            if not self.accepts_without_redis:
                raise _unavailable(
                    "idempotency store (Redis) unavailable: batch not acknowledged, retry later", count
                ) from exc
            self.metrics.without_dedup.inc()

    def _accepted(
        self, batch: BatchIn, batch_id: str, count: int, duplicate: bool, **origin: Unpack[KafkaOrigin]
    ) -> BatchAccepted:
        self.metrics.accepted(count, duplicate)
        self.accepted_log.add(batch.client_id, count, duplicate)
        # The trace of one batch, for when an operator turns DEBUG on (HEATMAP_INGESTION_LOG_LEVEL).
        log_event(
            "batch_accepted",
            logging.DEBUG,
            client_id=batch.client_id,
            screen_id=batch.screen_id,
            batch_id=batch_id,
            events=count,
            duplicate=duplicate,
            **origin,
        )
        return BatchAccepted(batch_id=batch_id, events=count, duplicate=duplicate)
