"""Ingestion: events/s through POST /events/batch (validation, Redis idempotency, acks=all)
against a bare aiokafka producer sending the same records with the same concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import msgspec
from aiokafka import AIOKafkaProducer

from bench.common import Result, median_seconds, uvicorn_app
from heatmap_core.events import Event, RawBatchRecord, encode_record
from heatmap_core.provision import ensure_topic
from heatmap_core.settings import Settings
from traffic.cli import send_batches
from traffic.generator import TrafficSpec, build

CONCURRENCY = 8


async def _bare_producer(settings: Settings, records: list[RawBatchRecord]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", compression_type="lz4", linger_ms=5
    )
    await producer.start()
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(record: RawBatchRecord) -> None:
        async with semaphore:
            await producer.send_and_wait(settings.topic, encode_record(record), key=record.key)

    try:
        await asyncio.gather(*(one(record) for record in records))
    finally:
        await producer.stop()


def run(settings: Settings, visitors: int = 150, repeats: int = 3) -> list[Result]:
    settings = settings.model_copy(update={"topic": f"bench.ingest.{uuid.uuid4().hex[:8]}"})
    ensure_topic(settings)
    spec = TrafficSpec(visitors=visitors, moves_per_visitor=400, hours_back=2, now=datetime.now(UTC))
    batches, truth = build(spec)
    events = truth.total()

    def http_rounds() -> None:
        # fresh batch ids each round, or idempotency would turn the repeats into duplicates
        fresh = [type(b)(b.client_id, b.screen_id, str(uuid.uuid4()), b.events) for b in batches]
        asyncio.run(send_batches(fresh, url, concurrency=CONCURRENCY, progress=False))

    records = [
        RawBatchRecord(
            client_id=b.client_id,
            screen_id=b.screen_id,
            batch_id=b.batch_id,
            received_at=datetime.now(UTC),
            events=[msgspec.convert(e, Event, strict=False) for e in b.events],
        )
        for b in batches
    ]
    with uvicorn_app("ingestion_api.app:app", settings, HEATMAP_AUTH_ENABLED="false") as url:
        http_rounds()  # warm-up: connections, producer metadata
        http_s = median_seconds(http_rounds, repeats)
    bare_s = median_seconds(lambda: asyncio.run(_bare_producer(settings, records)), repeats)
    return [
        Result(
            "ingest",
            f"HTTP POST /events/batch ({len(batches)} batches)",
            events / http_s,
            "bare aiokafka producer, same records",
            events / bare_s,
            "events/s",
            True,
        )
    ]
