"""Landing: events/s from Kafka into durable lake files (JSON lines, ledger, watermarks, offset
commit) against a bare kafka-python consumer that only reads and decodes the same records.

Both clocks start when the group assigns the partitions (process start and group join
are not throughput) and stop at the last event: for landing, when its progress line
reports every event landed (it counts a flush once committed), checked afterwards
against the ledger, which must name every event exactly once. Subject and reference
take turns, each landing run in a bucket and group of its own.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psutil
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.subscription_state import ConsumerRebalanceListener

from bench.common import Result, console, env_for, scratch_bucket, scratch_topic
from heatmap_core.events import Event, RawBatchRecord, decode_record, encode_record
from heatmap_core.lake import LEDGER_PREFIX, decode_ledger
from heatmap_core.s3 import s3_client
from heatmap_core.settings import LandingSettings, Settings, env_name
from infra.paths import StackPaths

RECORDS = 3_000
EVENTS_PER_RECORD = 200
CLIENTS = 6  # keys c0..c5, record i on partition i % 6: every partition holds the same share
TIMEOUT_S = 600
_ASSIGNED = re.compile(r"assigned partitions \[\d")
_LANDED = re.compile(r"progress: landed=(\d+) events")


def _produce(settings: Settings) -> int:
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20, compression_type="lz4"
    )
    now = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(RECORDS):
        record = RawBatchRecord(
            client_id=f"c{i % CLIENTS}",
            screen_id="home",
            batch_id=str(uuid.uuid4()),
            received_at=now,
            events=[
                Event(event_time=now + timedelta(milliseconds=j), x_norm=(j % 100) / 100, y_norm=(i % 200) / 200)
                for j in range(EVENTS_PER_RECORD)
            ],
        )
        producer.send(settings.topic, encode_record(record), key=record.key, partition=i % settings.topic_partitions)
    producer.flush()
    producer.close()
    return RECORDS * EVENTS_PER_RECORD


class _Clock(ConsumerRebalanceListener):
    started: float | None = None

    def on_partitions_assigned(self, assigned):
        if assigned and self.started is None:
            self.started = time.perf_counter()

    def on_partitions_revoked(self, revoked):
        pass


def _bare_consumer(settings: Settings, expected: int) -> float:
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"bench-bare-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    clock = _Clock()
    consumer.subscribe([settings.topic], listener=clock)
    events = 0
    try:
        while events < expected:
            for records in consumer.poll(timeout_ms=1000).values():
                events += sum(len(decode_record(message.value).events) for message in records)
        assert clock.started is not None
        return time.perf_counter() - clock.started
    finally:
        consumer.close()


def _ledger_events(settings: Settings) -> int:
    """Events of the JSON files the ledger names, each file once (a range re-flushed after a commit that
    failed in a rebalance is named by a second entry, onto the same keys)."""
    client = s3_client(settings)
    files = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.raw_bucket, Prefix=LEDGER_PREFIX):
        for obj in page.get("Contents", []):
            entry = decode_ledger(client.get_object(Bucket=settings.raw_bucket, Key=obj["Key"])["Body"].read())
            files.update({f.key: f.events for f in entry.files if f.format == "json"})
    return sum(files.values())


def _landing(settings: Settings, expected: int, parquet: bool, instances: int = 1) -> float:
    with scratch_bucket(settings.model_copy(update={"raw_bucket": f"bench-landing-{uuid.uuid4().hex[:8]}"})) as scratch:
        return _land(scratch, expected, parquet, instances)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


class _Instance:
    """One ``landing run`` process of the bench's group, its clock and CPU marks read as its log goes."""

    def __init__(self, env: dict[str, str], store: psutil.Process):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "landing", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ps = psutil.Process(self.process.pid)
        self.store = store
        self.assigned_at: float | None = None
        self.landed = 0
        self.landed_at = 0.0
        # CPU seconds of landing and of the S3 server at the assignment.
        self.cpu_at_assignment = (0.0, 0.0)
        self.tail: list[str] = []
        threading.Thread(target=self._watch, daemon=True).start()

    def cpu(self) -> tuple[float, float]:
        return _cpu_seconds(self.ps), _cpu_seconds(self.store)

    def _watch(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.tail[:] = [*self.tail[-400:], line]
            if self.assigned_at is None and _ASSIGNED.search(line):
                self.assigned_at, self.cpu_at_assignment = time.perf_counter(), self.cpu()
            if (landed := _LANDED.search(line)) and int(landed[1]) > self.landed:
                self.landed, self.landed_at = int(landed[1]), time.perf_counter()


def _land(settings: Settings, expected: int, parquet: bool, instances: int) -> float:
    """Seconds from the group's first assignment until its members' progress lines add up to every event."""
    env = env_for(
        settings,
        HEATMAP_LANDING_GROUP=f"bench-landing-{uuid.uuid4().hex[:6]}",
        HEATMAP_LANDING_PARQUET=str(parquet).lower(),
        HEATMAP_LANDING_FLUSH_INTERVAL="1",
        HEATMAP_LANDING_LOG_INTERVAL="0.1",
    )
    store = psutil.Process(int(StackPaths(settings.data_path).program_pid("s3").read_text().split()[0]))
    # Numbered as the stack numbers its landing processes: each its own member id and health port.
    number = env_name(LandingSettings, "instance_number")
    members = [_Instance(env | {number: str(n)}, store) for n in range(instances)]
    began = time.perf_counter()
    try:
        while sum(member.landed for member in members) < expected:
            for member in members:
                if member.process.poll() is not None:
                    raise RuntimeError(f"landing exited with {member.process.returncode}:\n{''.join(member.tail)}")
            if time.perf_counter() - began > TIMEOUT_S:
                raise RuntimeError(f"landing did not land {expected} events in {TIMEOUT_S} s")
            time.sleep(0.05)
        # Within 50 ms of the last landed line: what each spent since its assignment (start-up excluded).
        cpu_at_end = [member.cpu() for member in members]
    finally:
        for member in members:
            member.process.terminate()
        for member in members:
            member.process.wait(timeout=60)
    if (in_ledger := _ledger_events(settings)) != expected:
        raise RuntimeError(f"the ledger names {in_ledger} events, {expected} were produced")
    first = min(members, key=lambda member: member.assigned_at or float("inf"))
    last = max(members, key=lambda member: member.landed_at)
    landing_cpu = sum(end[0] - member.cpu_at_assignment[0] for member, end in zip(members, cpu_at_end, strict=True))
    store_cpu = cpu_at_end[0][1] - first.cpu_at_assignment[1]
    assert first.assigned_at is not None
    seconds = last.landed_at - first.assigned_at
    console.print(
        f"  {instances} process(es), {'JSON + Parquet' if parquet else 'JSON'}: {seconds:.2f} s,"
        f" CPU per event: landing {landing_cpu / expected * 1e6:.2f} us, S3 server {store_cpu / expected * 1e6:.2f} us"
    )
    return seconds


def run(settings: Settings, repeats: int = 3) -> list[Result]:
    with scratch_topic(settings.model_copy(update={"topic": f"bench.landing.{uuid.uuid4().hex[:8]}"})) as scratch:
        return _run(scratch, repeats)


def _run(settings: Settings, repeats: int) -> list[Result]:
    instances = settings.landing.instances
    console.print(f"producing {RECORDS:,} records of {EVENTS_PER_RECORD} events ...")
    events = _produce(settings)
    # (subject, instances, parquet): one process with and without the Parquet copy, then the
    # stack's HEATMAP_LANDING_INSTANCES processes sharing the topic, as it runs them.
    subjects = [
        ("landing -> JSON lake files + ledger + watermarks + commit, 1 process", 1, False),
        ("the same with the Parquet copy (the default), 1 process", 1, True),
    ]
    if instances > 1:
        subjects += [
            (f"landing -> JSON, {instances} processes in the group", instances, False),
            (f"landing -> JSON + Parquet (the default), {instances} processes in the group", instances, True),
        ]
    bare: list[float] = []
    seconds: dict[str, list[float]] = {subject: [] for subject, _, _ in subjects}
    for _ in range(repeats):
        bare.append(_bare_consumer(settings, events))
        for subject, count, parquet in subjects:
            seconds[subject].append(_landing(settings, events, parquet, count))
    reference = events / statistics.median(bare)
    return [
        Result(
            "landing",
            subject,
            events / statistics.median(seconds[subject]),
            "bare consumer (1 process): read + decode",
            reference,
            "events/s",
            True,
        )
        for subject, _, _ in subjects
    ]
