"""Helpers for landing tests: known records, a Kafka producer, landing subprocesses, lake readers."""

from __future__ import annotations

import io
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CoordinatorNotAvailableError

from heatmap_core.events import EVENT_TYPES, Device, Event, LakeEvent, PageView, RawBatchRecord, encode_record
from heatmap_core.lake import parse_part_key
from heatmap_core.s3 import s3_client
from heatmap_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BASE_TIME = datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
# device -> a viewport (CSS width, height) in its band
VIEWPORTS: dict[Device, tuple[int, int]] = {"desktop": (1280, 800), "tablet": (820, 1180), "mobile": (390, 844)}


# ---------------------------------------------------------------------------- producing


def make_records(
    events: int,
    per_record: int,
    clients: tuple[str, ...] = ("acme", "globex", "initech"),
    screens: tuple[str, ...] = ("home_v1", "checkout"),
    start: datetime = BASE_TIME,
    span: timedelta = timedelta(hours=3),
    seed: int = 7,
) -> list[RawBatchRecord]:
    """Known batches whose event times walk through ``span``; a batch may straddle an hour boundary.

    Every third record is a version 1 record (no page view, device unknown); the others are
    version 2 records of a page view on one of ``VIEWPORTS``.
    """
    rng = random.Random(seed)
    count = -(-events // per_record)
    records = []
    for index in range(count):
        size = min(per_record, events - index * per_record)
        moment = start + span * index / count
        v1 = index % 3 == 0
        device, (width, height) = rng.choice(list(VIEWPORTS.items()))
        records.append(
            RawBatchRecord(
                version=1 if v1 else 2,
                view=None if v1 else PageView(f"view-{rng.getrandbits(64):016x}", width, height, width, 3 * height),
                device="unknown" if v1 else device,
                client_id=clients[index % len(clients)],
                screen_id=screens[index % len(screens)],
                batch_id=str(uuid.UUID(int=rng.getrandbits(128))),
                received_at=moment + timedelta(seconds=30),
                events=[
                    Event(
                        event_time=moment + timedelta(milliseconds=250 * i),
                        x_norm=rng.random(),
                        y_norm=rng.random(),
                        event_type=rng.choice(EVENT_TYPES),
                    )
                    for i in range(size)
                ],
            )
        )
    return records


def produce(settings: Settings, records: list[RawBatchRecord]) -> list[tuple[int, int]]:
    """Publish the records (acks=all); returns each record's (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(settings.topic, key=r.key, value=encode_record(r)) for r in records]
        producer.flush()
        return [(meta.partition, meta.offset) for meta in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


def send_raw(settings: Settings, values: list[bytes], key: bytes) -> list[tuple[int, int]]:
    """Publish values as they are (acks=all), one at a time; returns each one's (partition, offset)."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    try:
        sent = [producer.send(settings.topic, key=key, value=value).get(timeout=30) for value in values]
    finally:
        producer.close()
    return [(meta.partition, meta.offset) for meta in sent]


def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = [TopicPartition(settings.topic, p) for p in consumer.partitions_for_topic(settings.topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_offsets(settings: Settings, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    except CoordinatorNotAvailableError:  # the group has not committed anything yet
        return {}
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == settings.topic}


def wait_landed(settings: Settings, *landings: LandingProcess, timeout_s: float = 180.0) -> dict[int, int]:
    """Wait until the landings run their loop and their group has committed every partition up to its end offset.

    Waiting for the assignment first matters when earlier instances already committed everything:
    a landing still importing its modules has no SIGTERM handler yet, so stopping it then is no clean stop.
    """
    for landing in landings:
        landing.wait_for_log(r"assigned partitions \[\d")
    return wait_committed(
        settings,
        landings[0].group,
        lambda: "\n".join(f"--- exit {p.process.poll()}, {p.log_path}:\n{p.excerpt()}" for p in landings),
        timeout_s,
    )


def wait_committed(settings: Settings, group: str, logs: Callable[[], str], timeout_s: float = 180.0) -> dict[int, int]:
    """Wait until ``group`` has committed every partition up to its end offset; the end offsets.
    ``logs`` is what a timeout shows besides the offsets."""
    target = end_offsets(settings)
    expected = {p: o for p, o in target.items() if o > 0}
    deadline = time.monotonic() + timeout_s
    while True:
        committed = committed_offsets(settings, group)
        if all(committed.get(p) == o for p, o in expected.items()):
            return target
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} committed {committed}, expected {expected}\n{logs()}")
        time.sleep(0.5)


# ---------------------------------------------------------------------------- landing processes


class LandingProcess:
    def __init__(self, settings: Settings, log_path: Path, group: str, args: list[str], env: dict[str, str]):
        self.log_path = log_path
        self.group = group
        environment = {
            **os.environ,
            **settings.as_env(),
            "HEATMAP_LANDING_GROUP": group,
            "HEATMAP_LANDING_LOG_INTERVAL": "0.5",
            **env,
        }
        self._log = open(log_path, "ab")  # noqa: SIM115  (open while the process runs; stop() closes it)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "landing", "run", *args],
            cwd=ROOT,
            env=environment,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def excerpt(self, progress_lines: int = 3, chars: int = 12_000) -> str:
        """The log without its progress lines but the last few: the history of a failure (assignments, resets)."""
        lines = self.log().splitlines()
        progress = [i for i, line in enumerate(lines) if '"progress: ' in line]
        dropped = set(progress[:-progress_lines])
        return "\n".join(line for i, line in enumerate(lines) if i not in dropped)[-chars:]

    def wait_for_log(self, pattern: str, timeout_s: float = 60.0, start: int = 0) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while True:
            match = re.compile(pattern).search(self.log(), start)
            if match:
                return match
            if self.process.poll() is not None:
                raise AssertionError(f"landing exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the landing log:\n{self.log()[-3000:]}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout_s)
        finally:
            self._log.close()

    def stop_cleanly(self) -> None:
        """SIGTERM must make landing flush, commit, leave the group and exit 0; the log says why when not."""
        code = self.stop()
        assert code == 0, f"landing exited with {code} after SIGTERM:\n{self.log()[-4000:]}"


@pytest.fixture
def start_landing(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., LandingProcess]]:
    """Start landing subprocesses against the test's topic; teardown kills whatever still runs."""
    started: list[LandingProcess] = []

    def start(*args: str, group: str = "landing", lake: Settings | None = None, **env: str) -> LandingProcess:
        """``lake`` points the process at another bucket; ``env`` sets HEATMAP_* variables."""
        log_path = tmp_path / f"landing-{len(started)}.log"
        process = LandingProcess(lake or settings, log_path, f"{group}-{settings.topic}", list(args), env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.stop(signal.SIGKILL)


# ---------------------------------------------------------------------------- reading the lake


@dataclass(frozen=True)
class LakeFile:
    key: str
    events: list[LakeEvent]


# S3Proxy's filesystem store writes an object as "<key>-<uuid>" beside the key, then renames it:
# a listing made during a write shows that name, which is gone a moment later. S3 and MinIO never
# list an upload before it completes, and no key of the lake ends in a UUID.
_UPLOAD_IN_PROGRESS = re.compile(r"-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def list_keys(settings: Settings, prefix: str = "", client=None) -> list[str]:
    """The stored keys under ``prefix``; uploads still in progress on S3Proxy are not objects yet."""
    client = client or s3_client(settings)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.raw_bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []) if not _UPLOAD_IN_PROGRESS.search(obj["Key"]))
    return keys


def read_object(settings: Settings, key: str, client=None) -> bytes:
    return (client or s3_client(settings)).get_object(Bucket=settings.raw_bucket, Key=key)["Body"].read()


_line_decoder = msgspec.json.Decoder(LakeEvent)


def read_lake(settings: Settings, fmt: str = "json") -> list[LakeFile]:
    """Every part file of one format, decoded into lake events."""
    client = s3_client(settings)
    files = []
    for key in list_keys(settings, client=client):
        part = parse_part_key(key)
        if part is None or part.fmt != fmt:
            continue
        body = read_object(settings, key, client)
        if fmt == "json":
            events = [_line_decoder.decode(line) for line in body.splitlines()]
        else:
            events = [LakeEvent(**row) for row in pq.read_table(io.BytesIO(body)).to_pylist()]
        files.append(LakeFile(key, events))
    return files


def event_row(event: LakeEvent) -> tuple:
    return msgspec.structs.astuple(event)


def expected_rows(records: list[RawBatchRecord], origins: list[tuple[int, int]]) -> list[tuple]:
    """The lake lines the records must become, as comparable tuples."""
    rows = []
    for record, (partition, offset) in zip(records, origins, strict=True):
        view = record.view
        for index, event in enumerate(record.events):
            rows.append(
                event_row(
                    LakeEvent(
                        client_id=record.client_id,
                        screen_id=record.screen_id,
                        event_time=event.event_time.astimezone(UTC),
                        x_norm=event.x_norm,
                        y_norm=event.y_norm,
                        event_type=event.event_type,
                        received_at=record.received_at.astimezone(UTC),
                        batch_id=record.batch_id,
                        kafka_partition=partition,
                        kafka_offset=offset,
                        batch_index=index,
                        device=record.device,
                        view_id=view.view_id if view else None,
                        viewport_w=view.viewport_w if view else None,
                        viewport_h=view.viewport_h if view else None,
                        screen_w=view.screen_w if view else None,
                        screen_h=view.screen_h if view else None,
                    )
                )
            )
    return sorted(rows)
