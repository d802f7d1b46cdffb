"""Ingestion: events/s through POST /events/batch (validation, Redis idempotency, acks=all)
against a bare aiokafka producer sending the same records with the same concurrency;
Kafka's own producer benchmark on records of ours as the broker's limit; and the
latency per batch at half the measured maximum.

The HTTP load comes from ``bench.loadgen`` in a process of its own, with every
body encoded before the clock starts, so the figure is the server's. Beside it the
bench prints the server's CPU time per batch in the closed loop (its processes'
user + system time): on a shared machine that figure moves far less than events/s.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import psutil
from aiokafka import AIOKafkaProducer

from bench.common import Result, console, median_seconds, scratch_topic, uvicorn_app
from heatmap_core.events import Event, RawBatchRecord, encode_record
from heatmap_core.settings import Settings
from infra.paths import jars_dir
from traffic.generator import Batch, TrafficSpec, build

CONCURRENCY = 8
HALF_LOAD_ROUNDS = 3
# Kafka's producer benchmark: as many records as the HTTP rounds publish, our own values, our producer's settings.
PERF_TEST_RECORDS = 3_000


def _bare_producer(settings: Settings, records: list[RawBatchRecord]) -> None:
    async def send_all() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", compression_type="lz4", linger_ms=0
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

    asyncio.run(send_all())


def _bodies(batches: list[Batch], directory: Path) -> Path:
    """The batches as request bodies with fresh batch ids (else idempotency turns repeats into duplicates)."""
    path = directory / f"bodies-{uuid.uuid4().hex[:8]}.jsonl"
    path.write_bytes(
        b"\n".join(msgspec.json.encode({**batch.payload(), "batch_id": str(uuid.uuid4())}) for batch in batches)
    )
    return path


def _load(url: str, bodies: Path, rate: float = 0.0) -> tuple[float, list[float]]:
    """One run of the load generator: (seconds, latencies in ms); every batch must be answered 202."""
    command = [sys.executable, "-m", "bench.loadgen", url, str(bodies), "--concurrency", str(CONCURRENCY)]
    output = subprocess.run([*command, "--rate", str(rate)], check=True, capture_output=True, text=True).stdout
    report = msgspec.json.decode(output)
    if set(report["statuses"]) != {"202"}:
        raise RuntimeError(f"ingestion answered {report['statuses']}")
    return report["seconds"], report["latencies_ms"]


def _server_cpu_s(server: psutil.Process) -> float:
    """CPU seconds (user + system) so far of ``server`` and its workers."""
    return sum(sum(member.cpu_times()[:2]) for member in (server, *server.children(recursive=True)))


def _perf_test(settings: Settings, records: list[RawBatchRecord], directory: Path) -> float:
    """Records/s of Kafka's ProducerPerformance sending our record values with our producer's settings."""
    payloads = directory / "payloads.jsonl"
    payloads.write_bytes(b"\n".join(encode_record(record) for record in records))
    command = [
        "java",
        "-Xmx512m",
        "-cp",
        f"{jars_dir(settings, 'kafka')}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        settings.topic,
        "--num-records",
        str(PERF_TEST_RECORDS),
        "--throughput",
        "-1",
        "--payload-file",
        str(payloads),
        "--producer-props",
        f"bootstrap.servers={settings.kafka_bootstrap}",
        "acks=all",
        "compression.type=lz4",
        "linger.ms=5",
        "max.request.size=1048576",
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    # The summary line: "3000 records sent, 7380.1 records/sec (129.71 MB/sec), 3.1 ms avg latency, ..."
    summary = re.findall(r"records sent, ([\d.]+) records/sec", output)
    if not summary:
        raise RuntimeError(f"no summary from ProducerPerformance: {output[-500:]}")
    return float(summary[-1])


def run(settings: Settings, visitors: int = 150, repeats: int = 3) -> list[Result]:
    with scratch_topic(settings.model_copy(update={"topic": f"bench.ingest.{uuid.uuid4().hex[:8]}"})) as scratch:
        return _run(scratch, visitors, repeats)


def _run(settings: Settings, visitors: int, repeats: int) -> list[Result]:
    spec = TrafficSpec(visitors=visitors, moves_per_visitor=400, hours_back=2, now=datetime.now(UTC))
    batches, truth = build(spec)
    events = truth.total()
    events_per_record = events / len(batches)
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
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        directory = Path(scratch)
        with uvicorn_app(
            "ingestion_api.app:app", settings, workers=settings.ingestion_workers, HEATMAP_AUTH_ENABLED="false"
        ) as served:
            url = served.url
            _load(url, _bodies(batches, directory))  # warm-up: connections, producer metadata
            # Subject and references take turns, so a shared machine's load swings weigh on all of them.
            http_times, bare_times, perf_rates, server_cpu_ms = [], [], [], []
            for _ in range(repeats):
                bodies = _bodies(batches, directory)
                cpu_before = _server_cpu_s(served.process)
                http_times.append(_load(url, bodies)[0])
                server_cpu_ms.append((_server_cpu_s(served.process) - cpu_before) * 1000 / len(batches))
                bare_times.append(median_seconds(lambda: _bare_producer(settings, records), 1))
                perf_rates.append(_perf_test(settings, records, directory))
            http_s, bare_s, perf_records_s = map(statistics.median, (http_times, bare_times, perf_rates))
            half_rate = events / http_s / 2
            latencies: list[float] = []
            for _ in range(HALF_LOAD_ROUNDS):
                latencies += _load(url, _bodies(batches, directory), rate=half_rate)[1]
    quantiles = statistics.quantiles(latencies, n=100)
    console.print(
        f"server CPU per batch in the closed loop: {statistics.median(server_cpu_ms):.2f} ms "
        f"(rounds: {', '.join(f'{ms:.2f}' for ms in server_cpu_ms)})"
    )
    console.print(
        f"latency per batch at {half_rate:,.0f} events/s offered (half the maximum), {len(latencies)} batches: "
        f"p50 {quantiles[49]:.1f} ms, p90 {quantiles[89]:.1f} ms, p95 {quantiles[94]:.1f} ms, p99 {quantiles[98]:.1f} ms, "
        f"max {max(latencies):.1f} ms"
    )
    return [
        Result(
            "ingest",
            f"HTTP POST /events/batch ({len(batches)} batches, {events_per_record:.0f} events each)",
            events / http_s,
            "bare aiokafka producer, same records",
            events / bare_s,
            "events/s",
            True,
        ),
        Result(
            "ingest",
            "HTTP POST /events/batch",
            events / http_s,
            "kafka ProducerPerformance, same record values",
            perf_records_s * events_per_record,
            "events/s",
            True,
        ),
        Result(
            "ingest",
            f"p99 latency per batch at half load ({half_rate:,.0f} events/s)",
            quantiles[98],
            "p50 at the same load",
            quantiles[49],
            "ms",
            False,
        ),
    ]
