"""Faults of the object store a test can cause on its own S3 server (the ``private_s3`` fixture),
and the helpers the landing scenarios share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import msgspec

from heatmap_core.events import RawBatchRecord
from heatmap_core.settings import Settings
from infra.paths import StackPaths


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
