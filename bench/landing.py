"""Landing: events/s from Kafka into durable lake files (JSON lines, ledger, offset
commit) against a bare kafka-python consumer that only reads and decodes the
same records. The landing figure includes its process start."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

from kafka import KafkaConsumer, KafkaProducer

from bench.common import Result, console, env_for
from heatmap_core.events import Event, RawBatchRecord, decode_record, encode_record
from heatmap_core.lake import LEDGER_PREFIX, decode_ledger
from heatmap_core.provision import ensure_topic
from heatmap_core.s3 import ensure_bucket, s3_client
from heatmap_core.settings import Settings

RECORDS = 1_000
EVENTS_PER_RECORD = 200
TIMEOUT_S = 600


def _produce(settings: Settings) -> int:
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20, compression_type="gzip"
    )
    now = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(RECORDS):
        record = RawBatchRecord(
            client_id=f"c{i % 3}",
            screen_id="home",
            batch_id=str(uuid.uuid4()),
            received_at=now,
            events=[
                Event(event_time=now + timedelta(milliseconds=j), x_norm=(j % 100) / 100, y_norm=(i % 200) / 200)
                for j in range(EVENTS_PER_RECORD)
            ],
        )
        producer.send(settings.topic, encode_record(record), key=record.key)
    producer.flush()
    producer.close()
    return RECORDS * EVENTS_PER_RECORD


def _bare_consumer(settings: Settings) -> float:
    consumer = KafkaConsumer(
        settings.topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    started = time.perf_counter()
    events = 0
    for message in consumer:
        events += len(decode_record(message.value).events)
        if events >= RECORDS * EVENTS_PER_RECORD:
            break
    elapsed = time.perf_counter() - started
    consumer.close()
    return elapsed


def _landed_events(settings: Settings, client, seen: dict[str, int]) -> int:
    """Events named by the ledger so far; ``seen`` keeps what earlier polls read, so each entry is read once."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.raw_bucket, Prefix=LEDGER_PREFIX):
        for obj in page.get("Contents", []):
            if obj["Key"] in seen:
                continue
            entry = decode_ledger(client.get_object(Bucket=settings.raw_bucket, Key=obj["Key"])["Body"].read())
            seen[obj["Key"]] = sum(f.events for f in entry.files if f.format == "json")
    return sum(seen.values())


def _landing(settings: Settings, expected: int) -> float:
    env = env_for(
        settings,
        HEATMAP_LANDING_GROUP=f"bench-landing-{uuid.uuid4().hex[:6]}",
        HEATMAP_LANDING_PARQUET="false",
        HEATMAP_LANDING_FLUSH_INTERVAL="1",
    )
    client = s3_client(settings)
    seen: dict[str, int] = {}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "landing", "run"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while (landed := _landed_events(settings, client, seen)) < expected:
            if process.poll() is not None:
                raise RuntimeError(f"landing exited with {process.returncode}")
            if time.perf_counter() - started > TIMEOUT_S:
                raise RuntimeError(f"landing wrote {landed} of {expected} events in {TIMEOUT_S} s")
            time.sleep(0.5)
        return time.perf_counter() - started
    finally:
        process.terminate()
        process.wait(timeout=60)


def run(settings: Settings) -> list[Result]:
    settings = settings.model_copy(
        update={"topic": f"bench.landing.{uuid.uuid4().hex[:8]}", "raw_bucket": f"bench-landing-{uuid.uuid4().hex[:8]}"}
    )
    ensure_topic(settings)
    ensure_bucket(s3_client(settings), settings.raw_bucket)
    console.print(f"producing {RECORDS:,} records of {EVENTS_PER_RECORD} events ...")
    events = _produce(settings)
    bare_s = _bare_consumer(settings)
    landing_s = _landing(settings, events)
    return [
        Result(
            "landing",
            "landing -> durable lake files + ledger + commit",
            events / landing_s,
            "bare consumer: read + decode",
            events / bare_s,
            "events/s",
            True,
        )
    ]
