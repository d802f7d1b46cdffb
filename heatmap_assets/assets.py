"""The heatmap assets: Kafka topic -> raw_events -> heatmap_hourly -> heatmap_daily -> heatmap_weekly.

Idempotency: every partition is a bucket (hour, day or week) and every
materialization recomputes its bucket from scratch and swaps it in with
``heatmap_core.clickhouse.replace_bucket`` (staging table + REPLACE PARTITION),
so re-running any partition, any number of times, leaves exactly one copy of
the bucket's current truth: no duplicates, no stale cells, no half bucket.
"""

import time
from datetime import datetime, timedelta
from typing import NamedTuple

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    asset,
)

from heatmap_assets import checks
from heatmap_assets.automation import hourly_condition, rollup_condition
from heatmap_assets.keys import DAILY_KEY, HOURLY_KEY, RAW_EVENTS, TOPIC_KEY, WEEKLY_KEY
from heatmap_assets.partitions import (
    DAYS_OF_WEEK,
    HOURS_OF_DAY,
    SAME_HOUR,
    daily_partitions,
    hour_key,
    hourly_partitions,
    weekly_partitions,
    window_of,
)
from heatmap_assets.resources import ClickHouseResource, LakeResource, SparkResource
from heatmap_core.clickhouse import replace_bucket
from heatmap_core.grid import GRID_H, GRID_W
from heatmap_core.lake import LAYOUT
from heatmap_core.lake_schema import LAKE_COLUMNS
from heatmap_core.schema import CELL_KEY, COLUMNS, DAILY, HOURLY, SCROLL_HOURLY, WEEKLY, BucketTable
from heatmap_core.settings import get_settings
from heatmap_core.sql import BUCKET_WINDOW, time_parameter, window_parameters
from heatmap_core.timeutil import naive_utc

OWNERS = ["team:analytics-platform"]
GROUP = "heatmap"
# Bucket replacement copies a day partition, then swaps it: two writers of the
# same day must not interleave. Embedded chDB serializes them with its lock; a
# ClickHouse server deployment limits this pool to 1
# (`dagster instance concurrency set heatmap_bucket_writes 1`).
BUCKET_WRITES_POOL = "heatmap_bucket_writes"
MAX_LISTED_PATHS = 50
_DAGSTER = get_settings().dagster


# The column tables the Dagster UI shows, generated from heatmap_core's definitions.
BUCKET_SCHEMA = TableSchema(columns=[TableColumn(c.name, c.type, description=c.description) for c in COLUMNS])
RAW_SCHEMA = TableSchema(
    columns=[
        TableColumn(
            c.name, c.type.name, description=c.description, constraints=TableColumnConstraints(nullable=c.nullable)
        )
        for c in LAKE_COLUMNS
    ]
)


def freshness(fail: float, warn: float) -> FreshnessPolicy:
    """Asset-level freshness in minutes (evaluated by Dagster's freshness daemon); no warning unless warn < fail."""
    return FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=fail), warn_window=timedelta(minutes=warn) if warn < fail else None
    )


def _table_meta(table: BucketTable) -> dict:
    database = get_settings().clickhouse_database
    return {
        "dagster/column_schema": BUCKET_SCHEMA,
        "dagster/table_name": f"{database}.{table.name}",
        "table": f"{database}.{table.name}",
        "grain": table.grain,
        "retention": table.ttl,
    }


# --------------------------------------------------------------------------- upstream, observed

kafka_topic = AssetSpec(
    TOPIC_KEY,
    description=(
        "The Kafka topic the ingestion API publishes accepted mouse-movement batches to "
        "(one record per batch, key client_id|screen_id). Produced outside Dagster."
    ),
    kinds={"kafka"},
    group_name="ingestion",
    owners=OWNERS,
    metadata={"topic": get_settings().topic, "bootstrap": get_settings().kafka_bootstrap},
)

raw_events = AssetSpec(
    RAW_EVENTS,
    deps=[TOPIC_KEY],
    partitions_def=hourly_partitions,
    description=(
        "The raw lake: one line per event, written by the landing consumer under "
        "dt=YYYY-MM-DD/hour=HH/client_id=<id>/ by the event's UTC time. Not computed by Dagster: "
        "the raw_events_ledger sensor records a materialization for every hour that gained files, "
        "with the files, bytes and events it learned of."
    ),
    kinds={"s3"},
    group_name="lake",
    owners=OWNERS,
    metadata={
        "dagster/column_schema": RAW_SCHEMA,
        "bucket": get_settings().raw_bucket,
        "layout": LAYOUT,
    },
)


# --------------------------------------------------------------------------- heatmap_hourly


@asset(
    key=HOURLY_KEY,
    partitions_def=hourly_partitions,
    deps=[AssetDep(RAW_EVENTS, partition_mapping=SAME_HOUR)],
    backfill_policy=BackfillPolicy.single_run(),
    pool=BUCKET_WRITES_POOL,
    automation_condition=hourly_condition(),
    freshness_policy=freshness(_DAGSTER.freshness_hourly_fail_minutes, _DAGSTER.freshness_hourly_warn_minutes),
    check_specs=checks.HOURLY_CHECKS,
    kinds={"spark", "clickhouse"},
    group_name=GROUP,
    owners=OWNERS,
    description=(
        f"Events per grid cell ({GRID_W} x {GRID_H}) for each client, screen, event type, device and UTC hour "
        f"(table {HOURLY.name}), and scroll reach for each client, screen, device and hour (table "
        f"{SCROLL_HOURLY.name}): per depth row of {GRID_H}, the page views whose deepest scroll reached it and "
        "those whose fold (viewport height) lies in it, each view once per hour. One PySpark pass reads the hour's "
        "lake files (lines written before v2 count under device unknown), counts every ingested event once (by "
        "client, batch and index in the batch, whatever repeated it), and the hour's rows in both ClickHouse tables "
        "are replaced, each in one atomic swap. A backfill over many hours runs in one Spark session and still "
        "replaces each hour on its own."
    ),
    metadata=_table_meta(HOURLY),
    code_version="2",
)
def heatmap_hourly(
    context: AssetExecutionContext, lake_store: LakeResource, spark: SparkResource, clickhouse: ClickHouseResource
) -> MaterializeResult:
    from heatmap_assets.spark_job import HourResult, aggregate_hours

    started = time.monotonic()
    settings = lake_store.settings
    hours = [window_of(hourly_partitions, key)[0] for key in context.partition_keys]

    files = {hour: lake_store.hour_files(hour) for hour in hours}
    source = [obj.key for hour in hours for obj in files[hour]]
    context.log.info("%d hour(s), %d lake file(s) to read", len(hours), len(source))
    paths = [lake_store.s3a_path(key) for key in source]
    results = aggregate_hours(spark.spark_session, paths, settings.raw_format) if paths else {}

    per_hour: list[HourStats] = []
    for hour in hours:
        result = results.get(hour) or HourResult(hour)
        # One short unit of work per hour and table: the embedded chDB lock is never held across Spark work.
        with clickhouse.connect() as client:
            cells = replace_bucket(client, HOURLY, hour, rows=result.rows, database=clickhouse.db)
        with clickhouse.connect() as client:
            scroll_rows = replace_bucket(client, SCROLL_HOURLY, hour, rows=result.scroll_rows, database=clickhouse.db)
        per_hour.append(
            HourStats(
                hour,
                len(files[hour]),
                sum(o.size for o in files[hour]),
                result.lines,
                result.events,
                cells,
                result.views,
                scroll_rows,
            )
        )
        context.log.info(
            "hour %s: %d events -> %d cells; %d scrolled views -> %d scroll rows",
            hour.isoformat(),
            result.events,
            cells,
            result.views,
            scroll_rows,
        )

    check_results = hourly_checks(clickhouse, lake_store, per_hour)

    events_in = sum(h.events for h in per_hour)
    cells_out = sum(h.cells for h in per_hour)
    scroll_rows_out = sum(h.scroll_rows for h in per_hour)
    return MaterializeResult(
        metadata={
            "partitions": MetadataValue.text(f"{context.partition_keys[0]} .. {context.partition_keys[-1]}"),
            "hours": len(hours),
            "events_in": events_in,
            "duplicate_or_unreadable_lines": sum(h.lines for h in per_hour) - events_in,
            "cells_out": cells_out,
            "views": sum(h.views for h in per_hour),
            "scroll_rows_out": scroll_rows_out,
            "rows_written": cells_out + scroll_rows_out,
            "files_read": len(source),
            "bytes_read": sum(h.bytes for h in per_hour),
            "source_paths": MetadataValue.json(
                source[:MAX_LISTED_PATHS] + (["..."] if len(source) > MAX_LISTED_PATHS else [])
            ),
            "source_prefix": MetadataValue.text(f"s3://{settings.raw_bucket}/{lake_store.hour_prefix(hours[0])}"),
            "per_hour": MetadataValue.md(_hour_table(per_hour)),
            "table": f"{clickhouse.db}.{HOURLY.name}",
            "scroll_table": f"{clickhouse.db}.{SCROLL_HOURLY.name}",
            "spark_master": (spark.master or settings.spark_master) if paths else "not started (no files)",
            "duration_s": round(time.monotonic() - started, 3),
        },
        check_results=check_results,
    )


class HourStats(NamedTuple):
    hour: datetime
    files: int
    bytes: int
    lines: int
    events: int
    cells: int  # rows written to the hour's cells bucket
    views: int = 0  # page views with scroll events
    scroll_rows: int = 0  # rows written to the hour's scroll bucket


def _hour_table(per_hour: list[HourStats]) -> str:
    lines = [
        "| hour (UTC) | files | bytes | lines | events | cells | views | scroll rows |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in per_hour[:200]:
        lines.append(
            f"| {h.hour:%Y-%m-%d %H:00} | {h.files} | {h.bytes} | {h.lines} | {h.events} | {h.cells} "
            f"| {h.views} | {h.scroll_rows} |"
        )
    return "\n".join(lines)


def hourly_checks(clickhouse: ClickHouseResource, lake_store: LakeResource, per_hour: list[HourStats]) -> list:
    """The hourly asset's checks over the stored hours as they are now (tests run them on broken data too)."""
    from dagster import AssetCheckResult

    settings = lake_store.settings
    database = clickhouse.db
    mismatched = {}
    raw_total = hourly_total = 0
    for stats in per_hour:
        raw = 0
        end = window_of(hourly_partitions, hour_key(stats.hour))[1]
        # One short unit of work per hour (the recount reads the lake from inside ClickHouse).
        with clickhouse.connect() as client:
            if stats.files:
                url = lake_store.http_url(lake_store.hour_glob(stats.hour))
                raw = checks.lake_distinct_events(
                    client, url, settings.raw_format, settings.s3_access_key, settings.s3_secret_key
                )
            cells = checks.bucket_sum(client, database, HOURLY, stats.hour, end)
        raw_total += raw
        hourly_total += cells
        if raw != cells:
            mismatched[hour_key(stats.hour)] = {"raw_events": raw, "hourly_sum": cells}
    results = [
        AssetCheckResult(
            asset_key=HOURLY_KEY,
            check_name=checks.RAW_MATCH,
            passed=not mismatched,
            metadata={
                "raw_distinct_events": raw_total,
                "hourly_sum": hourly_total,
                "hours_checked": len(per_hour),
                "mismatched_hours": MetadataValue.json(mismatched),
            },
        )
    ]
    with clickhouse.connect() as client:
        results += checks.table_checks(client, database, HOURLY, HOURLY_KEY, [h.hour for h in per_hour])
    return results


# --------------------------------------------------------------------------- rollups


def _rollup(
    context: AssetExecutionContext,
    clickhouse: ClickHouseResource,
    *,
    source: BucketTable,
    target: BucketTable,
    partitions_def,
    upstream_key: AssetKey,
    check_name: str,
    asset_key: AssetKey,
) -> MaterializeResult:
    started = time.monotonic()
    database = clickhouse.db
    # The span of upstream partitions this run depends on, as resolved through the partition mapping.
    upstream = context.asset_partitions_time_window_for_input(upstream_key.to_python_identifier())
    windows = {}
    rows_written = 0
    events = 0
    upstream_cells = 0
    for key in context.partition_keys:
        # The bucket's own window; with the time-window mapping its upstream
        # partitions are exactly those inside it (the span above is their union).
        start, end = window_of(partitions_def, key)
        # The window filter sits in a subquery: in ClickHouse an outer alias named
        # bucket_start would shadow the column inside WHERE. Columns in COLUMN_NAMES order.
        cells = ", ".join(CELL_KEY)
        select_sql = (
            f"SELECT client_id, screen_id, {time_parameter('bucket')} AS bucket_start, cell_x, cell_y, sum(n) AS count "
            f"FROM (SELECT {cells}, count AS n FROM `{database}`.`{source.name}` WHERE {BUCKET_WINDOW}) "
            f"GROUP BY {cells}"
        )
        params = {"bucket": naive_utc(start), **window_parameters(start, end)}
        with clickhouse.connect() as client:
            source_cells = int(
                client.query(
                    f"SELECT count() FROM `{database}`.`{source.name}` WHERE {BUCKET_WINDOW}",
                    parameters=params,
                ).result_rows[0][0]
            )
            written = replace_bucket(client, target, start, select_sql=select_sql, parameters=params, database=database)
            target_sum = checks.bucket_sum(client, database, target, start, end)
        context.log.info(
            "%s %s: %d upstream rows -> %d cells, %d events", target.grain, key, source_cells, written, target_sum
        )
        windows[key] = (start, end)
        rows_written += written
        events += target_sum
        upstream_cells += source_cells
    with clickhouse.connect() as client:
        check_results = rollup_checks(
            client, database, source=source, target=target, asset_key=asset_key, check_name=check_name, windows=windows
        )
    return MaterializeResult(
        metadata={
            "partitions": MetadataValue.text(f"{context.partition_keys[0]} .. {context.partition_keys[-1]}"),
            "upstream_window": MetadataValue.text(f"{upstream.start.isoformat()} .. {upstream.end.isoformat()}"),
            "events_in": events,
            "upstream_rows_in": upstream_cells,
            "cells_out": rows_written,
            "rows_written": rows_written,
            "source_table": f"{database}.{source.name}",
            "table": f"{database}.{target.name}",
            "duration_s": round(time.monotonic() - started, 3),
        },
        check_results=check_results,
    )


def rollup_checks(
    client,
    database: str,
    *,
    source: BucketTable,
    target: BucketTable,
    asset_key: AssetKey,
    check_name: str,
    windows: dict[str, tuple[datetime, datetime]],
) -> list:
    """A rollup asset's checks over its stored buckets (partition key -> window) as they are now:
    the upstream window adds up to the bucket cell by cell, plus grid bounds and uniqueness."""
    from dagster import AssetCheckResult

    mismatched = {}
    events = 0
    for key, (start, end) in windows.items():
        differing, source_sum, target_sum = checks.rollup_mismatches(client, database, source, target, start, end)
        events += target_sum
        if differing or source_sum != target_sum:
            mismatched[key] = {"cells_differing": differing, "upstream_sum": source_sum, "sum": target_sum}
    return [
        AssetCheckResult(
            asset_key=asset_key,
            check_name=check_name,
            passed=not mismatched,
            metadata={"buckets_checked": len(windows), "events": events, "mismatched": MetadataValue.json(mismatched)},
        ),
        *checks.table_checks(client, database, target, asset_key, [start for start, _ in windows.values()]),
    ]


def _rollup_asset(
    *,
    source: BucketTable,
    target: BucketTable,
    partitions_def,
    upstream_key: AssetKey,
    partition_mapping,
    asset_key: AssetKey,
    check_name: str,
    check_specs,
    period: timedelta,
    freshness_policy: FreshnessPolicy,
    description: str,
):
    """A rollup asset: each partition is the sum of the upstream buckets its partition mapping puts inside it."""

    @asset(
        key=asset_key,
        partitions_def=partitions_def,
        deps=[AssetDep(upstream_key, partition_mapping=partition_mapping)],
        backfill_policy=BackfillPolicy.single_run(),
        pool=BUCKET_WRITES_POOL,
        automation_condition=rollup_condition(period),
        freshness_policy=freshness_policy,
        check_specs=check_specs,
        kinds={"clickhouse"},
        group_name=GROUP,
        owners=OWNERS,
        description=description,
        metadata=_table_meta(target),
        code_version="1",
    )
    def rollup(context: AssetExecutionContext, clickhouse: ClickHouseResource) -> MaterializeResult:
        return _rollup(
            context,
            clickhouse,
            source=source,
            target=target,
            partitions_def=partitions_def,
            upstream_key=upstream_key,
            check_name=check_name,
            asset_key=asset_key,
        )

    return rollup


heatmap_daily = _rollup_asset(
    source=HOURLY,
    target=DAILY,
    partitions_def=daily_partitions,
    upstream_key=HOURLY_KEY,
    partition_mapping=HOURS_OF_DAY,
    asset_key=DAILY_KEY,
    check_name=checks.HOURLY_MATCH,
    check_specs=checks.DAILY_CHECKS,
    period=timedelta(days=1),
    freshness_policy=freshness(_DAGSTER.freshness_daily_fail_minutes, _DAGSTER.freshness_daily_warn_minutes),
    description=(
        "Mouse events per grid cell for each client, screen and UTC day: the sum of the day's 24 hourly "
        "buckets, computed inside ClickHouse (INSERT ... SELECT) and swapped in atomically."
    ),
)

heatmap_weekly = _rollup_asset(
    source=DAILY,
    target=WEEKLY,
    partitions_def=weekly_partitions,
    upstream_key=DAILY_KEY,
    partition_mapping=DAYS_OF_WEEK,
    asset_key=WEEKLY_KEY,
    check_name=checks.DAILY_MATCH,
    check_specs=checks.WEEKLY_CHECKS,
    period=timedelta(days=7),
    freshness_policy=freshness(_DAGSTER.freshness_weekly_fail_minutes, _DAGSTER.freshness_weekly_warn_minutes),
    description=(
        "Mouse events per grid cell for each client, screen and week (Sunday to Saturday, UTC, like "
        "ClickHouse toStartOfWeek): the sum of the week's 7 daily buckets, computed inside ClickHouse "
        "and swapped in atomically."
    ),
)


ALL_ASSETS = [kafka_topic, raw_events, heatmap_hourly, heatmap_daily, heatmap_weekly]
