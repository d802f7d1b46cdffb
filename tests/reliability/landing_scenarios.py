"""What the landing scenarios share: traffic of known records, landing's flush marks and log
events, the object store's refusals (its bucket taken away, its key pair rotated) on the test's
own S3 server (``private_s3``)."""

from __future__ import annotations

import json
import re
import signal
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
from infra import supervisor
from infra.paths import StackPaths
from infra.programs import PROGRAMS
from tests.landing.conftest import LandingProcess, make_records, produce

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


def restart_s3(settings: Settings) -> None:
    """The S3 server restarted with ``settings``' key pair (S3Proxy reads its identity and credential
    only at start, from the properties file its program's command writes)."""
    supervisor.stop_program(settings, "s3")
    PROGRAMS["s3"].command(settings, StackPaths(settings.data_path))
    supervisor.start(settings, PROGRAMS, ["s3"], do_fetch=False)


@contextmanager
def paused(landing: LandingProcess) -> Iterator[None]:
    """Landing stopped (SIGSTOP) while the block runs: what the block changes in the store happens,
    to landing, from one request to the next. A pause of some 10 s (an S3 restart) needs a session
    timeout above it, or the group evicts landing meanwhile."""
    landing.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        landing.process.send_signal(signal.SIGCONT)


def restart_s3_with_other_keys(settings: Settings) -> None:
    """An operator's botched rotation: the S3 server restarted with a key pair that is not landing's
    (S3Proxy then answers InvalidAccessKeyId, as MinIO and AWS S3 do)."""
    restart_s3(settings.model_copy(update={"s3_access_key": "rotated", "s3_secret_key": "rotated-secret"}))


@contextmanager
def credentials_rotated(settings: Settings, landing: LandingProcess) -> Iterator[None]:
    """The S3 server's key pair replaced by another while the block runs (landing's key is refused),
    then landing's again.

    Landing is paused across the first restart, as a rotation on MinIO or S3 is instantaneous;
    unpaused, the restart's gap would open the refusal with a connection error, whose code the
    refusal's log lines keep. The restart back is not hidden: the store away while it already
    refuses is the same refusal.
    """
    with paused(landing):
        restart_s3_with_other_keys(settings)
    try:
        yield
    finally:
        restart_s3(settings)


def batches_of(records: list[RawBatchRecord]) -> list[dict]:
    """The records as the request bodies tests/reliability/served.py tallies (events with RFC 3339 times)."""
    return [msgspec.to_builtins(record) for record in records]


def health(port: int) -> tuple[int, dict]:
    answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
    return answer.status_code, answer.json()
