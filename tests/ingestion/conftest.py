"""Fixtures of the ingestion tests: an app on an isolated topic, and a reader of that topic."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaConsumer, TopicPartition
from litestar.testing import TestClient

from heatmap_core.events import RawBatchRecord, decode_record
from heatmap_core.settings import Settings
from ingestion_api.app import create_app

WRITE_KEYS = {"acme": "acme-write-key", "globex": "globex-write-key"}
WRITE_KEYS_SETTING = ",".join(f"{client}:{key}" for client, key in WRITE_KEYS.items())
ACME = {"X-Write-Key": WRITE_KEYS["acme"]}


@pytest.fixture
def ingest_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_enabled": True, "write_keys": WRITE_KEYS_SETTING})


@pytest.fixture
def client(ingest_settings: Settings):
    with TestClient(create_app(ingest_settings)) as test_client:
        yield test_client


def make_batch(client_id: str = "acme", screen_id: str = "home_v1", events: int = 3, **extra) -> dict:
    now = datetime.now(UTC)
    return {
        "client_id": client_id,
        "screen_id": screen_id,
        "batch_id": str(uuid.uuid4()),
        "events": [
            {
                "event_time": (now - timedelta(seconds=i)).isoformat().replace("+00:00", "Z"),
                "x_norm": round(0.1 + 0.8 * i / max(events, 1), 4),
                "y_norm": round(0.9 - 0.8 * i / max(events, 1), 4),
                "event_type": "click" if i % 2 else "mousemove",
            }
            for i in range(events)
        ],
        **extra,
    }


def read_topic(settings: Settings, timeout_s: float = 30.0) -> list[tuple[bytes, RawBatchRecord]]:
    """Every record in the topic from the beginning to its current end, as (key, decoded value)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        while not (partitions := consumer.partitions_for_topic(settings.topic)):
            assert time.monotonic() < deadline, f"topic {settings.topic} has no partitions"
            time.sleep(0.2)
        assigned = [TopicPartition(settings.topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        end = consumer.end_offsets(assigned)
        records: list[tuple[bytes, RawBatchRecord]] = []
        # position() without a timeout blocks until the offset is known: never None here.
        while any(consumer.position(tp) < end[tp] for tp in assigned):  # type: ignore[operator]
            assert time.monotonic() < deadline, "topic not read to its end in time"
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    assert record.key is not None, "ingestion keys every record by client and screen"
                    records.append((record.key, decode_record(record.value)))
        return records
    finally:
        consumer.close()
