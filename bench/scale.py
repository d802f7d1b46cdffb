"""How the hourly job's cost grows: heatmap_hourly materialized (Spark read, aggregation, the writes
into ClickHouse, the asset's checks) on one hour of 1M events (also 10M and 50M with --big), JSON and Parquet, against
chDB computing the same two results from the same files; with the peak memory of the Spark driver
(this process and its JVM) and of the ClickHouse server (a chdb_server of the bench's own).

The lake files are written by ClickHouse itself (``INSERT INTO FUNCTION s3``), which makes 10M lines
in seconds: a page view of 3 batches of 100 events, a quarter of the views v1 (no device), 50 screens.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from dagster import DagsterInstance, materialize

from bench.common import PeakMemory, Result, console, private_clickhouse, scratch_bucket
from bench.hourly import chdb_cells_sql, chdb_parameters, chdb_scroll_sql
from heatmap_assets.assets import ALL_ASSETS
from heatmap_assets.partitions import hour_key
from heatmap_assets.resources import build_resources
from heatmap_core.clickhouse import clickhouse
from heatmap_core.lake import part_key
from heatmap_core.settings import Settings
from heatmap_core.spark import spark_session
from heatmap_core.timeutil import hour_start

SIZES = (1_000_000,)
BIG_SIZES = (1_000_000, 10_000_000, 50_000_000)
FILES = 8
SCREENS = 50

# One lake line per number: batch = number // 100, view = batch // 3; the view's device decides
# the v2 columns (NULL device: a v1 line). {time} is the event time's expression (text for JSON).
_LINES = """
WITH intDiv(number, 100) AS batch, intDiv(batch, 3) AS view, view % 4 AS d, cityHash64(number) % 100 AS r,
     toDateTime64({{hour:DateTime}}, 6, 'UTC') + toIntervalSecond(number % 3600) AS at
SELECT 'bench' AS client_id, concat('s', toString(intDiv(view, 4) % {screens})) AS screen_id,
       {time} AS event_time, (cityHash64(number, 1) % 1000000) / 1000000 AS x_norm,
       if(r >= 85, 0.25 + (cityHash64(number, 2) % 500000) / 1000000, (cityHash64(number, 2) % 1000000) / 1000000)
           AS y_norm,
       multiIf(r < 75, 'mousemove', r < 83, 'click', r < 85, 'rageclick', 'scroll') AS event_type,
       {time} AS received_at, concat('b', toString(batch)) AS batch_id, toInt32(0) AS kafka_partition,
       toInt64(batch) AS kafka_offset, toInt32(number % 100) AS batch_index,
       if(d = 3, NULL, ['desktop', 'tablet', 'mobile', ''][d + 1]) AS device,
       if(d = 3, NULL, concat('view-', toString(view))) AS view_id,
       if(d = 3, NULL, toInt32([1280, 800, 390, 0][d + 1])) AS viewport_w,
       if(d = 3, NULL, toInt32([800, 1000, 700, 0][d + 1])) AS viewport_h,
       if(d = 3, NULL, toInt32(1000)) AS screen_w,
       if(d = 3, NULL, toInt32(1500 + (view * 37) % 4500)) AS screen_h
FROM numbers({{first:UInt64}}, {{count:UInt64}})
"""
_TIME = {"json": "formatDateTime(at, '%Y-%m-%dT%H:%i:%S.%fZ')", "parquet": "at"}
_FORMAT = {"json": "JSONEachRow", "parquet": "Parquet"}


def write_lake_hour(settings: Settings, hour: datetime, events: int, fmt: str) -> None:
    """``events`` lines of one hour in FILES part files of format ``fmt``, written by ClickHouse."""
    per_file = events // FILES
    with clickhouse(settings) as client:
        for part in range(FILES):
            first = part * per_file
            key = part_key(hour, "bench", 0, first // 100, (first + per_file - 1) // 100, fmt, settings.parquet_prefix)
            client.command(
                f"INSERT INTO FUNCTION s3({{url:String}}, {{key:String}}, {{secret:String}}, '{_FORMAT[fmt]}') "
                + _LINES.format(screens=SCREENS, time=_TIME[fmt])
                + " SETTINGS s3_truncate_on_insert = 1",
                parameters={
                    "url": f"{settings.s3_endpoint}/{settings.raw_bucket}/{key}",
                    "key": settings.s3_access_key,
                    "secret": settings.s3_secret_key,
                    "hour": hour.replace(tzinfo=None),
                    "first": first,
                    "count": per_file,
                },
            )


def materialize_hour(settings: Settings, hour: datetime) -> bool:
    """The heatmap_hourly asset for one hour, with the checks it carries (their raw recount of the
    hour is a chDB query over the same files, about the reference's own cost)."""
    result = materialize(
        ALL_ASSETS,
        selection="heatmap_hourly",
        partition_key=hour_key(hour),
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    return result.success


def _checksums(client, sql: str, columns: str, parameters: dict) -> tuple[int, int]:
    row = client.query(f"SELECT count(), sum(cityHash64({columns})) FROM ({sql})", parameters=parameters)
    return tuple(int(v) for v in row.result_rows[0])  # type: ignore[return-value]


def run(settings: Settings, big: bool = False) -> list[Result]:
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-scale-") as data_dir,
        private_clickhouse(settings, Path(data_dir)) as (private, server),
    ):
        # One session for every run, as a Dagster run process keeps it: "session already started".
        spark = spark_session("heatmap-assets", private)
        try:
            for events in BIG_SIZES if big else SIZES:
                for fmt in ("json", "parquet"):
                    results += _one_size(private, server, events, fmt)
        finally:
            spark.stop()
    return results


def _one_size(settings: Settings, server: psutil.Process, events: int, fmt: str) -> list[Result]:
    settings = settings.model_copy(
        update={
            "raw_bucket": f"bench-scale-{uuid.uuid4().hex[:8]}",
            "raw_format": fmt,
            "clickhouse_database": f"bench_{uuid.uuid4().hex[:8]}",
        }
    )
    with scratch_bucket(settings):
        return _measure_size(settings, server, events, fmt)


def _measure_size(settings: Settings, server: psutil.Process, events: int, fmt: str) -> list[Result]:
    hour = hour_start(datetime.now(UTC)) - timedelta(hours=2)
    started = time.perf_counter()
    write_lake_hour(settings, hour, events, fmt)
    console.print(f"{events:,} {fmt} lines written in {time.perf_counter() - started:.1f} s")

    driver = psutil.Process()
    with PeakMemory(driver=driver, clickhouse=server) as job_memory:
        started = time.perf_counter()
        succeeded = materialize_hour(settings, hour)
        job_s = time.perf_counter() - started
    mib = 2**20
    size = f"{events / 1e6:g}M {fmt}"
    if not succeeded:
        # At 10M events the driver's collection of every cell ran out of its heap: a figure, not a crash.
        console.print(
            f"[red]{size}: the materialization FAILED after {job_s:.0f} s[/] (its log above says why); peak driver "
            f"{job_memory.peak['driver'] / mib:,.0f} MiB"
        )
        return [_memory_result(f"{size}, job FAILED after {job_s:.0f} s", job_memory)]

    parameters = chdb_parameters(settings, hour, fmt)
    cell_columns = "client_id, screen_id, event_type, device, cell_x, cell_y, count"
    scroll_columns = "client_id, screen_id, device, depth_row, reached, folds"
    with clickhouse(settings) as client, PeakMemory(clickhouse=server) as chdb_memory:
        started = time.perf_counter()
        reference = (
            _checksums(client, chdb_cells_sql(fmt), cell_columns, parameters),
            _checksums(client, chdb_scroll_sql(fmt), scroll_columns, parameters),
        )
        chdb_s = time.perf_counter() - started
        window = {"start": hour.replace(tzinfo=None)}
        written = (
            _checksums(
                client,
                f"SELECT * FROM `{settings.clickhouse_database}`.heatmap_hourly WHERE bucket_start = {{start:DateTime}}",
                cell_columns,
                window,
            ),
            _checksums(
                client,
                f"SELECT * FROM `{settings.clickhouse_database}`.heatmap_scroll_hourly"
                " WHERE bucket_start = {start:DateTime}",
                scroll_columns,
                window,
            ),
        )
    assert written == reference, f"the job wrote {written}, chDB computes {reference}"
    console.print(
        f"{events:,} {fmt}: job {job_s:.1f} s ({reference[0][0]:,} cells, {reference[1][0]:,} scroll rows), "
        f"chDB {chdb_s:.1f} s; peak driver {job_memory.peak['driver'] / mib:,.0f} MiB, ClickHouse "
        f"{job_memory.peak['clickhouse'] / mib:,.0f} MiB during the job, {chdb_memory.peak['clickhouse'] / mib:,.0f} "
        "MiB during chDB's"
    )
    return [
        Result(
            "scale",
            f"heatmap_hourly, {size} (events/s)",
            events / job_s,
            "chDB s3(), same results",
            events / chdb_s,
            "events/s",
            True,
        ),
        _memory_result(size, job_memory),
    ]


def _memory_result(label: str, job_memory: PeakMemory) -> Result:
    mib = 2**20
    return Result(
        "scale",
        f"peak driver RSS, {label}",
        job_memory.peak["driver"] / mib,
        "ClickHouse RSS during the job",
        job_memory.peak["clickhouse"] / mib,
        "MiB",
        False,
    )
