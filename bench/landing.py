"""Landing: events/s from Kafka into durable lake files (JSON lines, ledger, watermarks, offset
commit) against a bare kafka-python consumer that only reads and decodes the same records, at
3,000 records of 200 events (and ten times that with --big).

A second reference is the object store alone: the files the default path landed (their count and
sizes, from its ledger) PUT again by landing's own writer, with nothing else running. Landing
cannot outrun it on a machine whose cores it shares with the S3 server.

Both clocks start when the group assigns the partitions (process start and group join
are not throughput) and stop at the last event: for landing, when its progress line
reports every event landed (it counts a flush once committed), checked afterwards
against the ledger, which must name every event exactly once. Subject and reference
take turns, each landing run in a bucket and group of its own.
"""

from __future__ import annotations

import os
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
from heatmap_core.lake import LEDGER_PREFIX, LedgerFile, decode_ledger
from heatmap_core.s3 import s3_client
from heatmap_core.settings import LandingSettings, Settings, env_name
from infra.paths import StackPaths
from landing.writer import CONTENT_TYPES, LakeWriter

SIZES = (3_000,)  # records
BIG_SIZES = (3_000, 30_000)
EVENTS_PER_RECORD = 200
CLIENTS = 6  # keys c0..c5, record i on partition i % 6: every partition holds the same share
TIMEOUT_S = 600
_ASSIGNED = re.compile(r"assigned partitions \[\d")
_LANDED = re.compile(r"progress: landed=(\d+) events")


def _produce(settings: Settings, records: int) -> int:
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20, compression_type="lz4"
    )
    now = datetime.now(UTC) - timedelta(minutes=30)
    for i in range(records):
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
    return records * EVENTS_PER_RECORD


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


def _ledger_files(settings: Settings) -> list[LedgerFile]:
    """The files the ledger names, each once (a range re-flushed after a commit that failed in a
    rebalance is named by a second entry, onto the same keys)."""
    client = s3_client(settings)
    files = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.raw_bucket, Prefix=LEDGER_PREFIX):
        for obj in page.get("Contents", []):
            entry = decode_ledger(client.get_object(Bucket=settings.raw_bucket, Key=obj["Key"])["Body"].read())
            files.update({f.key: f for f in entry.files})
    return list(files.values())


def _landing(settings: Settings, expected: int, parquet: bool, instances: int = 1) -> tuple[float, list[LedgerFile]]:
    """Landing's seconds for every event, and the files it landed."""
    with scratch_bucket(settings.model_copy(update={"raw_bucket": f"bench-landing-{uuid.uuid4().hex[:8]}"})) as scratch:
        seconds = _land(scratch, expected, parquet, instances)
        files = _ledger_files(scratch)
    if (in_ledger := sum(f.events for f in files if f.format == "json")) != expected:
        raise RuntimeError(f"the ledger names {in_ledger} events, {expected} were produced")
    return seconds, files


def _store_alone(settings: Settings, files: list[LedgerFile]) -> float:
    """Seconds for landing's writer to PUT objects of the sizes of ``files`` into a fresh bucket, all at once
    from its upload threads: the object store's share of landing, without Kafka, the codec or the protocol."""
    store = _store_process(settings)
    # Incompressible bodies, all made before the clock starts (2.3 GB at 10x): the bench's own copying
    # and page faults must not take the store's cores while it is timed.
    noise = os.urandom(max(f.bytes for f in files))
    bodies = [(f.key, noise[: f.bytes], CONTENT_TYPES[f.format]) for f in files]
    with scratch_bucket(settings.model_copy(update={"raw_bucket": f"bench-store-{uuid.uuid4().hex[:8]}"})) as scratch:
        writer = LakeWriter(scratch, ("json", "parquet"))
        try:
            cpu_before, started = _cpu_seconds(store), time.perf_counter()
            writer.put_all(bodies)
            seconds, store_cpu = time.perf_counter() - started, _cpu_seconds(store) - cpu_before
        finally:
            writer.close()
    events = sum(f.events for f in files if f.format == "json")
    megabytes = sum(f.bytes for f in files) / 1e6
    console.print(
        f"  object store alone: {len(files)} files, {megabytes:,.0f} MB in {seconds:.2f} s,"
        f" S3 server CPU {store_cpu / events * 1e6:.2f} us per event ({store_cpu / megabytes * 1e3:.1f} ms per MB)"
    )
    return seconds


def _store_process(settings: Settings) -> psutil.Process:
    return psutil.Process(int(StackPaths(settings.data_path).program_pid("s3").read_text().split()[0]))


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
    store = _store_process(settings)
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


def run(settings: Settings, big: bool = False, repeats: int = 3) -> list[Result]:
    results = []
    for records in BIG_SIZES if big else SIZES:
        with scratch_topic(settings.model_copy(update={"topic": f"bench.landing.{uuid.uuid4().hex[:8]}"})) as scratch:
            results += _run(scratch, records, repeats)
    return results


def _run(settings: Settings, records: int, repeats: int) -> list[Result]:
    instances = settings.landing.instances
    console.print(f"producing {records:,} records of {EVENTS_PER_RECORD} events ...")
    events = _produce(settings, records)
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
    store: list[float] = []
    seconds: dict[str, list[float]] = {subject: [] for subject, _, _ in subjects}
    for _ in range(repeats):
        bare.append(_bare_consumer(settings, events))
        for subject, count, parquet in subjects:
            landed, files = _landing(settings, events, parquet, count)
            seconds[subject].append(landed)
            if parquet and count == 1:
                store.append(_store_alone(settings, files))
    reference = ("bare consumer (1 process): read + decode", events / statistics.median(bare))
    size = f"{events:,} events: "
    return [
        Result("landing", size + subject, events / statistics.median(seconds[subject]), *reference, "events/s", True)
        for subject, _, _ in subjects
    ] + [
        Result(
            "landing",
            size + "object store alone: the default path's files PUT by landing's writer",
            events / statistics.median(store),
            *reference,
            "events/s",
            True,
        )
    ]
