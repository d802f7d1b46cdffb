"""The Spark session builder: local[*] by default, s3a:// pointed at the object store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from heatmap_core.settings import Settings, get_settings

# Jars PySpark already ships, so they are not put on the classpath a second time.
_ALREADY_IN_PYSPARK = ("slf4j-api-", "commons-logging-", "commons-codec-")
JVM_OPTIONS = "-Duser.timezone=UTC -XX:+UseParallelGC"


def s3a_jars(settings: Settings) -> list[str]:
    """hadoop-aws and the AWS SDK v2 modules resolved by infra/maven/s3a."""
    directory = settings.cache_dir / "jars" / "s3a"
    jars = sorted(str(p) for p in directory.glob("*.jar") if not p.name.startswith(_ALREADY_IN_PYSPARK))
    if not any(Path(j).name.startswith("hadoop-aws-") for j in jars):
        raise RuntimeError(
            f"hadoop-aws is missing from {directory}: run `python -m infra.stack fetch` to resolve it from Maven Central"
        )
    return jars


def spark_conf(settings: Settings | None = None) -> dict[str, str]:
    """The project's Spark settings, the same for ``local[*]`` and a ``spark://`` cluster.

    On a cluster the executors are other JVMs: ``spark.jars`` (local paths of the jar cache) are
    served by the driver and fetched by every executor, so s3a reads work there too; the Python
    workers, when a job needs them, run this same interpreter.
    """
    settings = settings or get_settings()
    return {
        "spark.master": settings.spark_master,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.jars": ",".join(s3a_jars(settings)),
        "spark.pyspark.python": sys.executable,
        "spark.sql.session.timeZone": "UTC",
        # A ceiling that adaptive execution (on by default) coalesces down from: to the cores at a small
        # hour, to partitions of about 64 MB at a large one, so a cluster's final stage is not capped at a
        # few tasks. A fixed 4 did as well at 1M events and took 1.4x as long at 10M, its aggregations
        # spilling to disk (BENCHMARKS.md, 2026-11-29).
        "spark.sql.shuffle.partitions": "64",
        # The size adaptive execution coalesces partitions to (Spark's default 64 MB): the hourly job's one
        # stage after its shuffle holds three hash aggregations of the cells, which at 64 MB partitions of a
        # 10M-event hour outgrew their memory and spilled 2.4 GB; at 16 MB none spills (BENCHMARKS.md, 2026-11-29).
        "spark.sql.adaptive.advisoryPartitionSizeInBytes": "16m",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # The parallel collector, not G1: a batch job of short-lived rows wants throughput, not short
        # pauses; the hourly job's tasks took a quarter less CPU on JSON (BENCHMARKS.md, 2026-11-28).
        "spark.driver.extraJavaOptions": JVM_OPTIONS,
        "spark.executor.extraJavaOptions": JVM_OPTIONS,
        "spark.hadoop.fs.s3a.endpoint": settings.s3_endpoint,
        "spark.hadoop.fs.s3a.access.key": settings.s3_access_key,
        "spark.hadoop.fs.s3a.secret.key": settings.s3_secret_key,
        "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(settings.s3_endpoint.startswith("https")).lower(),
        "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        # S3Proxy and MinIO do not implement S3 checksums the way AWS does.
        "spark.hadoop.fs.s3a.checksum.validation": "false",
        "spark.hadoop.fs.s3a.create.checksum.algorithm": "",
        "spark.hadoop.fs.s3a.change.detection.mode": "none",
    }


def spark_session(
    app_name: str = "heatmap", settings: Settings | None = None, extra_conf: dict[str, str] | None = None
):
    """The session for ``settings``, with ``extra_conf`` laid over the project's Spark settings."""
    from pyspark.sql import SparkSession

    # Spark's own variables, read by the JVM launcher and the Python workers rather than by us:
    # workers run this interpreter, and the driver binds to loopback like every local service.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(app_name)
    for key, value in {**spark_conf(settings), **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
