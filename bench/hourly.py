"""The hourly aggregation: the PySpark job of heatmap_hourly (s3a, explicit schema,
dedup per ingested event, grid, count) against chDB reading the same files
straight from the S3 server with its s3() table function and doing the same."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from bench.common import Result, console, median_seconds
from heatmap_assets.spark_job import aggregate_hours
from heatmap_core.clickhouse import clickhouse
from heatmap_core.events import LakeEvent
from heatmap_core.grid import GRID_H, GRID_W
from heatmap_core.lake import part_key
from heatmap_core.lake_schema import COUNTED_COLUMNS, EVENT_KEY, clickhouse_s3_source, clickhouse_structure
from heatmap_core.s3 import ensure_bucket, s3_client
from heatmap_core.settings import Settings
from heatmap_core.spark import spark_session
from heatmap_core.timeutil import hour_start

EVENTS = 400_000
FILES = 8

CHDB_SQL = f"""
SELECT client_id, screen_id,
       toUInt8(least(greatest(floor(x_norm * {GRID_W}), 0), {GRID_W - 1})) AS cell_x,
       toUInt8(least(greatest(floor(y_norm * {GRID_H}), 0), {GRID_H - 1})) AS cell_y,
       count() AS count
FROM (
    SELECT client_id, screen_id, x_norm, y_norm
    FROM {clickhouse_s3_source("json")}
    LIMIT 1 BY {", ".join(EVENT_KEY)}
)
GROUP BY client_id, screen_id, cell_x, cell_y
"""


def _write_hour(settings: Settings, hour: datetime) -> list[str]:
    client = s3_client(settings)
    ensure_bucket(client, settings.raw_bucket)
    rng = random.Random(5)
    keys = []
    per_file = EVENTS // FILES
    encoder = msgspec.json.Encoder()
    for part in range(FILES):
        first = part * per_file
        lines = [
            encoder.encode(
                LakeEvent(
                    client_id="bench",
                    screen_id=f"s{i % 4}",
                    event_time=hour + timedelta(seconds=i % 3600),
                    x_norm=rng.random(),
                    y_norm=rng.betavariate(2, 5),
                    event_type="mousemove",
                    received_at=hour + timedelta(seconds=i % 3600),
                    batch_id=f"b{(first + i) // 100}",
                    kafka_partition=0,
                    kafka_offset=(first + i) // 100,
                    batch_index=(first + i) % 100,
                )
            )
            for i in range(per_file)
        ]
        key = part_key(hour, "bench", 0, first // 100, (first + per_file - 1) // 100)
        client.put_object(Bucket=settings.raw_bucket, Key=key, Body=b"\n".join(lines) + b"\n")
        keys.append(key)
    return keys


def run(settings: Settings, repeats: int = 3) -> list[Result]:
    settings = settings.model_copy(update={"raw_bucket": f"bench-hourly-{uuid.uuid4().hex[:8]}"})
    hour = hour_start(datetime.now(UTC)) - timedelta(hours=1)
    console.print(f"writing {EVENTS:,} lake lines in {FILES} files ...")
    keys = _write_hour(settings, hour)
    paths = [f"s3a://{settings.raw_bucket}/{key}" for key in keys]

    spark = spark_session("bench-hourly", settings)
    try:
        spark_rows: dict = {}

        def spark_job() -> None:
            spark_rows.update(aggregate_hours(spark, paths, "json"))

        spark_job()  # warm-up: JIT, s3a connection pool
        spark_s = median_seconds(spark_job, repeats)
    finally:
        spark.stop()

    prefix = keys[0].rsplit("/", 2)[0]
    url = f"{settings.s3_endpoint}/{settings.raw_bucket}/{prefix}/*/part-*.json"
    chdb_rows: list = []

    def chdb_job() -> None:
        with clickhouse(settings) as client:
            chdb_rows[:] = client.query(
                CHDB_SQL,
                parameters={
                    "url": url,
                    "key": settings.s3_access_key,
                    "secret": settings.s3_secret_key,
                    "structure": clickhouse_structure(COUNTED_COLUMNS),
                },
            ).result_rows

    chdb_job()
    chdb_s = median_seconds(chdb_job, repeats)

    spark_cells = sorted((c, s, x, y, n) for (c, s, _, x, y, n) in spark_rows[hour].rows)
    assert spark_cells == sorted(chdb_rows), "Spark and chDB disagree on the hour's cells"
    return [
        Result(
            "hourly",
            "PySpark job (s3a, dedup, grid, count)",
            EVENTS / spark_s,
            "chDB s3() on the same files",
            EVENTS / chdb_s,
            "events/s",
            True,
        )
    ]
