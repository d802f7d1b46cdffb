"""An S3 server of the test's own (S3Proxy as the stack runs it, on a free port), which the test may
stop, restart or make refuse writes; the shared one never is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec
import pytest

from heatmap_core.events import RawBatchRecord
from heatmap_core.settings import Settings
from infra import supervisor
from infra.paths import StackPaths
from infra.programs import PROGRAMS
from tests.conftest import free_port


@pytest.fixture
def private_s3(settings: Settings, spark, tmp_path: Path) -> Iterator[Settings]:
    """The test's settings (topic, bucket, database) with the object store on a private S3Proxy.

    Spark's s3a reads the test's bucket from it too (S3A's per-bucket endpoint, so the session
    the whole run shares keeps the stack's endpoint for every other bucket).
    """
    private = settings.model_copy(
        update={"data_dir": tmp_path / "s3-stack", "s3_endpoint": f"http://127.0.0.1:{free_port()}"}
    )
    supervisor.start(private, PROGRAMS, ["s3"], do_fetch=False)
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop.set(f"fs.s3a.bucket.{private.raw_bucket}.endpoint", private.s3_endpoint)
    try:
        yield private
    finally:
        hadoop.unset(f"fs.s3a.bucket.{private.raw_bucket}.endpoint")
        supervisor.stop(private)


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
