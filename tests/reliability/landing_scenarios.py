"""What the landing scenarios share: traffic of known records, landing's flush marks and log
events, the object store's bucket taken away (on the test's own S3 server, ``private_s3``)."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec

from heatmap_core.events import RawBatchRecord
from heatmap_core.settings import Settings
from heatmap_core.timeutil import hour_start
from infra.paths import StackPaths
from tests.landing.conftest import make_records, produce

CLIENTS = ("acme", "globex", "initech", "umbrella", "hooli")
SLICE_EVENTS = 600  # produced every PRODUCE_EVERY_S
PRODUCE_EVERY_S = 0.5
# Every event in the last complete hour: the hourly partitions of the served tally all exist.
SPAN = timedelta(minutes=59)
# Flushes of a few seconds' records: dozens of part files, so a flush lasts long enough to be caught inside.
LANDING_ARGS = ("--flush-interval", "2", "--max-events", "20000", "--log-level", "DEBUG")
# landing.service's debug line once a flush's intent (protocol step 1) is written.
INTENT = re.compile(r"flush (p\d+ \d+-\d+(?:, p\d+ \d+-\d+)*): intent written")


@dataclass
class Traffic:
    """Records produced to the topic so far and each one's (partition, offset), in the same order."""

    records: list[RawBatchRecord] = field(default_factory=list)
    origins: list[tuple[int, int]] = field(default_factory=list)

    @property
    def events(self) -> int:
        return sum(len(record.events) for record in self.records)


@contextmanager
def producing(settings: Settings) -> Iterator[Traffic]:
    """Known records of the last complete hour produced to the topic (acks=all) in slices until the block ends."""
    start = hour_start(datetime.now(UTC)) - timedelta(hours=1)
    traffic = Traffic()
    stop = threading.Event()

    def produce_until_stopped() -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            records = make_records(SLICE_EVENTS, per_record=50, clients=CLIENTS, start=start, span=SPAN, seed=seed)
            traffic.origins.extend(produce(settings, records))
            traffic.records.extend(records)
            time.sleep(PRODUCE_EVERY_S)

    producer = threading.Thread(target=produce_until_stopped, name="traffic")
    producer.start()
    try:
        yield traffic
    finally:
        stop.set()
        producer.join()


def log_events(log: str, event: str) -> list[dict]:
    """The structured lines of one event in a landing log (JSON lines, heatmap_core.logs)."""
    return [json.loads(line) for line in log.splitlines() if f'"event":"{event}"' in line]


def bucket_dir(settings: Settings) -> Path:
    """Where S3Proxy's filesystem backend keeps the raw bucket's objects."""
    return StackPaths(settings.data_path).data / "s3" / settings.raw_bucket


@contextmanager
def bucket_taken_away(settings: Settings) -> Iterator[None]:
    """The raw bucket gone from the store while the block runs (S3 answers NoSuchBucket), then back whole."""
    bucket = bucket_dir(settings)
    aside = bucket.with_name(f".{bucket.name}.aside")
    bucket.rename(aside)
    try:
        yield
    finally:
        aside.rename(bucket)


def batches_of(records: list[RawBatchRecord]) -> list[dict]:
    """The records as the request bodies tests/reliability/served.py tallies (events with RFC 3339 times)."""
    return [msgspec.to_builtins(record) for record in records]


def health(port: int) -> tuple[int, dict]:
    answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    return answer.status_code, answer.json()
