"""Fixtures of the reliability tier: landing processes (as tests/landing starts them) and an S3
server of the test's own (S3Proxy as the stack runs it, on a free port), which the test may stop,
restart or make refuse writes; the shared one never is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from heatmap_core.settings import Settings
from infra import supervisor
from infra.programs import PROGRAMS
from tests.conftest import free_port
from tests.landing.conftest import start_landing  # noqa: F401  (a fixture)


@pytest.fixture
def private_store(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """The test's settings (topic, bucket, database) with the object store on a private S3Proxy."""
    private = settings.model_copy(
        update={"data_dir": tmp_path / "s3-stack", "s3_endpoint": f"http://127.0.0.1:{free_port()}"}
    )
    supervisor.start(private, PROGRAMS, ["s3"], do_fetch=False)
    try:
        yield private
    finally:
        supervisor.stop(private)


@pytest.fixture
def private_s3(private_store: Settings, spark) -> Iterator[Settings]:
    """``private_store``, which Spark's s3a reads the test's bucket from too (S3A's per-bucket
    endpoint, so the session the whole run shares keeps the stack's endpoint for every other bucket)."""
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    hadoop.set(f"fs.s3a.bucket.{private_store.raw_bucket}.endpoint", private_store.s3_endpoint)
    try:
        yield private_store
    finally:
        hadoop.unset(f"fs.s3a.bucket.{private_store.raw_bucket}.endpoint")
