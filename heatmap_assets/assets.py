"""The heatmap assets: Kafka topic -> raw_events -> heatmap_hourly -> heatmap_daily -> heatmap_weekly.

Idempotency: every partition is a bucket (hour, day or week) and every
materialization recomputes its bucket from scratch and swaps it in with
``heatmap_core.clickhouse.replace_bucket`` (staging table + REPLACE PARTITION),
so re-running any partition, any number of times, leaves exactly one copy of
the bucket's current truth: no duplicates, no stale cells, no half bucket.
"""

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from dagster import (
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    BackfillPolicy,
    FreshnessPolicy,
    MaterializeResult,
    MetadataValue,
    PartitionMapping,
    TableColumn,
    TableColumnConstraints,
    TableSchema,
    TimeWindowPartitionsDefinition,
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
from heatmap_core.clickhouse import BucketWrite, replace_bucket
from heatmap_core.grid import GRID_H, GRID_W
from heatmap_core.lake import LAYOUT, staging_hour_glob, staging_prefix
from heatmap_core.lake_schema import LAKE_COLUMNS
from heatmap_core.schema import CELLS, HOURLY, SCROLL, SCROLL_HOURLY, BucketTable, TableKind
from heatmap_core.settings import get_settings
from heatmap_core.sql import BUCKET_WINDOW, rollup_select, staged_parameters, staged_select, window_parameters
from heatmap_core.timeutil import naive_utc

OWNERS = ["team:analytics-platform"]
GROUP = "heatmap"
# Each bucket is its own partition, so writers of different buckets never meet and
# two writers of one bucket each swap a whole bucket (the last one wins). The pool
# bounds how many runs write at once (`dagster instance concurrency set heatmap_bucket_writes N`).
BUCKET_WRITES_POOL = "heatmap_bucket_writes"
MAX_LISTED_PATHS = 50
_DAGSTER = get_settings().dagster


# The column tables the Dagster UI shows, generated from heatmap_core's definitions.
def _column_schema(kind: TableKind) -> TableSchema:
    return TableSchema(columns=[TableColumn(c.name, c.type, description=c.description) for c in kind.columns])


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
    """The definition metadata of the aggregate of ``table``'s grain: its cells table (the one
    Dagster's table view shows) and its scroll table, with their columns."""
    database = get_settings().clickhouse_database
    cells, scroll = checks.tables_of(table.grain)
    return {
        "dagster/column_schema": _column_schema(cells.kind),
        "dagster/table_name": f"{database}.{cells.name}",
        "table": f"{database}.{cells.name}",
        "scroll_table": f"{database}.{scroll.name}",
        "scroll_column_schema": _column_schema(scroll.kind),
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
        "client, batch and index in the batch, whatever repeated it); the Spark executors stage the hour's rows as "
        "Parquet on the object store, which ClickHouse reads into both tables, each hour replaced in one atomic "
        "swap. A backfill over many hours runs in one Spark session and still replaces each hour on its own."
    ),
    metadata=_table_meta(HOURLY),
    code_version="2",
)
def heatmap_hourly(
    context: AssetExecutionContext, lake_store: LakeResource, spark: SparkResource, clickhouse: ClickHouseResource
) -> MaterializeResult:
    from heatmap_assets.spark_job import HourFigures, write_hours

    started = time.monotonic()
    settings = lake_store.settings
    hours = [window_of(hourly_partitions, key)[0] for key in context.partition_keys]

    files = {hour: lake_store.hour_files(hour) for hour in hours}
    source = [obj.key for hour in hours for obj in files[hour]]
    context.log.info("%d hour(s), %d lake file(s) to read", len(hours), len(source))
    paths = {hour: [lake_store.s3a_path(obj.key) for obj in files[hour]] for hour in hours if files[hour]}
    run_id = context.run.run_id
    swept = lake_store.sweep_staging(datetime.now(UTC))
    per_hour: list[HourStats] = []
    try:
        # The executors write every hour's rows under this run's staging prefix; the driver gets figures only.
        staging = lake_store.s3a_path(staging_prefix(run_id))
        figures = write_hours(spark.spark_session, paths, settings.raw_format, staging) if paths else {}
        context.log.info(
            "staged %d cells and %d scroll rows under s3://%s/%s",
            sum(f.cells for f in figures.values()),
            sum(f.scroll_rows for f in figures.values()),
            settings.raw_bucket,
            staging_prefix(run_id),
        )
        for hour in hours:
            result = figures.get(hour) or HourFigures(hour)
            written = {}
            for table, staged in ((HOURLY, result.cells), (SCROLL_HOURLY, result.scroll_rows)):
                # One short unit of work per hour and table: ClickHouse reads the hour's staged files itself.
                with clickhouse.connect() as client:
                    written[table] = replace_from_staging(
                        client, lake_store, run_id, table, hour, staged, clickhouse.db
                    )
            cells, scroll_rows = written[HOURLY].rows, written[SCROLL_HOURLY].rows
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
    finally:
        # Whatever happened, this run's staged files are read by nothing any more.
        lake_store.delete(lake_store.list(staging_prefix(run_id)))

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
            "staging_prefix": MetadataValue.text(f"s3://{settings.raw_bucket}/{staging_prefix(run_id)} (deleted)"),
            "stale_staged_files_swept": swept,
            "spark_master": (spark.master or settings.spark_master) if paths else "not started (no files)",
            "duration_s": round(time.monotonic() - started, 3),
        },
        check_results=check_results,
    )


def replace_from_staging(
    client, lake_store: LakeResource, run_id: str, table: BucketTable, hour: datetime, staged_rows: int, database: str
) -> BucketWrite:
    """Replace one hour of ``table`` with the rows the run's executors staged for it, read by ClickHouse
    with ``s3()``: ``staged_rows`` of them as Spark counted (refused otherwise); 0 empties the bucket
    without reading anything."""
    settings = lake_store.settings
    return replace_bucket(
        client,
        table,
        hour,
        select_sql=staged_select(table.kind) if staged_rows else None,
        parameters=staged_parameters(
            table.kind,
            hour,
            lake_store.http_url(staging_hour_glob(run_id, table.kind.name, hour)),
            settings.s3_access_key,
            settings.s3_secret_key,
        ),
        database=database,
        expected_rows=staged_rows,
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
    cells_table, scroll_table = checks.tables_of("hour")
    mismatched: dict[str, dict] = {}
    raw_totals: Counter[str] = Counter()
    hourly_totals: Counter[str] = Counter()
    views: dict[datetime, dict[str, int]] = {}
    for stats in per_hour:
        lake = checks.LakeCounts()
        end = window_of(hourly_partitions, hour_key(stats.hour))[1]
        # One short unit of work per hour (the recount reads the lake from inside ClickHouse).
        with clickhouse.connect() as client:
            if stats.files:
                url = lake_store.http_url(lake_store.hour_glob(stats.hour))
                lake = checks.lake_counts(
                    client, url, settings.raw_format, settings.s3_access_key, settings.s3_secret_key
                )
            stored = checks.bucket_counts(client, database, cells_table, stats.hour, end)
        views[stats.hour] = lake.views
        raw_totals.update(lake.events)
        hourly_totals.update(stored)
        differing = {
            type_device: {"raw_events": lake.events.get(type_device, 0), "hourly_sum": stored.get(type_device, 0)}
            for type_device in sorted(lake.events.keys() | stored.keys())
            if lake.events.get(type_device, 0) != stored.get(type_device, 0)
        }
        if differing:
            mismatched[hour_key(stats.hour)] = differing
    per_type_device = {
        type_device: {"raw_events": raw_totals[type_device], "hourly_sum": hourly_totals[type_device]}
        for type_device in sorted(raw_totals.keys() | hourly_totals.keys())
    }
    results = [
        AssetCheckResult(
            asset_key=HOURLY_KEY,
            check_name=checks.RAW_MATCH,
            passed=not mismatched,
            metadata={
                "raw_distinct_events": sum(raw_totals.values()),
                "hourly_sum": sum(hourly_totals.values()),
                "per_type_and_device": MetadataValue.json(per_type_device),
                "hours_checked": len(per_hour),
                "mismatched_hours": MetadataValue.json(mismatched),
            },
        )
    ]
    buckets = [h.hour for h in per_hour]
    with clickhouse.connect() as client:
        results.append(checks.scroll_reach_check(client, database, scroll_table, HOURLY_KEY, buckets, views))
        results += checks.table_checks(client, database, (cells_table, scroll_table), HOURLY_KEY, buckets)
    return results


# --------------------------------------------------------------------------- rollups


@dataclass(frozen=True)
class Rollup:
    """One rollup asset: each of its buckets, in each of its tables (cells and scroll), is the
    sum of the finer buckets its partition mapping puts inside it."""

    asset_key: AssetKey
    grain: str
    source_grain: str
    upstream_key: AssetKey
    partitions_def: TimeWindowPartitionsDefinition
    partition_mapping: PartitionMapping
    sum_checks: dict[str, str]  # table kind name -> the check that the finer buckets add up
    check_specs: list[AssetCheckSpec]
    period: timedelta
    freshness_policy: FreshnessPolicy
    description: str

    @property
    def pairs(self) -> list[tuple[BucketTable, BucketTable]]:
        """(finer table, table) of each kind."""
        return list(zip(checks.tables_of(self.source_grain), checks.tables_of(self.grain), strict=True))


def _rollup(context: AssetExecutionContext, clickhouse: ClickHouseResource, rollup: Rollup) -> MaterializeResult:
    started = time.monotonic()
    database = clickhouse.db
    # The span of upstream partitions this run depends on, as resolved through the partition mapping.
    upstream = context.asset_partitions_time_window_for_input(rollup.upstream_key.to_python_identifier())
    windows = {}
    per_table: dict[str, Counter[str]] = {target.name: Counter() for _, target in rollup.pairs}
    for key in context.partition_keys:
        # The bucket's own window; with the time-window mapping its upstream
        # partitions are exactly those inside it (the span above is their union).
        start, end = window_of(rollup.partitions_def, key)
        windows[key] = (start, end)
        params = {"bucket": naive_utc(start), **window_parameters(start, end)}
        for source, target in rollup.pairs:
            with clickhouse.connect() as client:
                upstream_rows = int(
                    client.query(
                        f"SELECT count() FROM `{database}`.`{source.name}` WHERE {BUCKET_WINDOW}",
                        parameters=params,
                    ).result_rows[0][0]
                )
                select_sql = rollup_select(target.kind, f"`{database}`.`{source.name}`")
                written = replace_bucket(
                    client, target, start, select_sql=select_sql, parameters=params, database=database
                ).rows
                sums = checks.measure_sums(client, database, target, start, end)
            context.log.info(
                "%s %s: %d rows of %s -> %d rows, %s", key, target.name, upstream_rows, source.name, written, sums
            )
            per_table[target.name].update({"upstream_rows": upstream_rows, "rows_written": written, **sums})
    with clickhouse.connect() as client:
        check_results = rollup_checks(client, database, rollup, windows)
    cells, scroll = (per_table[target.name] for _, target in rollup.pairs)
    return MaterializeResult(
        metadata={
            "partitions": MetadataValue.text(f"{context.partition_keys[0]} .. {context.partition_keys[-1]}"),
            "upstream_window": MetadataValue.text(f"{upstream.start.isoformat()} .. {upstream.end.isoformat()}"),
            "events_in": cells["count"],
            "upstream_rows_in": cells["upstream_rows"],
            "cells_out": cells["rows_written"],
            "scroll_rows_out": scroll["rows_written"],
            "views": scroll["views"],
            "rows_written": sum(table["rows_written"] for table in per_table.values()),
            "per_table": MetadataValue.json(
                {
                    f"{database}.{target.name}": {"source": f"{database}.{source.name}", **per_table[target.name]}
                    for source, target in rollup.pairs
                }
            ),
            "source_table": f"{database}.{rollup.pairs[0][0].name}",
            "table": f"{database}.{rollup.pairs[0][1].name}",
            "duration_s": round(time.monotonic() - started, 3),
        },
        check_results=check_results,
    )


def rollup_checks(client, database: str, rollup: Rollup, windows: dict[str, tuple[datetime, datetime]]) -> list:
    """A rollup asset's checks over its stored buckets (partition key -> window) as they are now:
    the upstream window adds up to the bucket position by position in each table (a failure names
    the bucket and the event type and device, or the device and depth row, that differ), scroll
    reach within row 0, grid bounds and uniqueness."""
    from dagster import AssetCheckResult

    results = []
    for source, target in rollup.pairs:
        mismatched = {}
        totals: Counter[str] = Counter()
        for key, (start, end) in windows.items():
            differences = checks.rollup_differences(client, database, source, target, start, end)
            for difference in differences:
                totals.update(difference.bucket)
            if differing := {d.label: d.metadata() for d in differences if d.rows_differing}:
                mismatched[key] = differing
        results.append(
            AssetCheckResult(
                asset_key=rollup.asset_key,
                check_name=rollup.sum_checks[target.kind.name],
                passed=not mismatched,
                metadata={
                    "buckets_checked": len(windows),
                    **{measure: totals[measure] for measure in target.kind.measures},
                    "table": f"{database}.{target.name}",
                    "upstream_table": f"{database}.{source.name}",
                    "mismatched": MetadataValue.json(mismatched),
                },
            )
        )
    tables = [target for _, target in rollup.pairs]
    starts = [start for start, _ in windows.values()]
    results.append(checks.scroll_reach_check(client, database, tables[1], rollup.asset_key, starts))
    results += checks.table_checks(client, database, tables, rollup.asset_key, starts)
    return results


def _rollup_asset(rollup: Rollup):
    """The Dagster asset of a rollup."""

    @asset(
        key=rollup.asset_key,
        partitions_def=rollup.partitions_def,
        deps=[AssetDep(rollup.upstream_key, partition_mapping=rollup.partition_mapping)],
        backfill_policy=BackfillPolicy.single_run(),
        pool=BUCKET_WRITES_POOL,
        automation_condition=rollup_condition(rollup.period),
        freshness_policy=rollup.freshness_policy,
        check_specs=rollup.check_specs,
        kinds={"clickhouse"},
        group_name=GROUP,
        owners=OWNERS,
        description=rollup.description,
        metadata=_table_meta(checks.tables_of(rollup.grain)[0]),
        code_version="2",
    )
    def rollup_asset(context: AssetExecutionContext, clickhouse: ClickHouseResource) -> MaterializeResult:
        return _rollup(context, clickhouse, rollup)

    return rollup_asset


DAILY_ROLLUP = Rollup(
    asset_key=DAILY_KEY,
    grain="day",
    source_grain="hour",
    upstream_key=HOURLY_KEY,
    partitions_def=daily_partitions,
    partition_mapping=HOURS_OF_DAY,
    sum_checks={CELLS.name: checks.HOURLY_MATCH, SCROLL.name: checks.HOURLY_SCROLL_MATCH},
    check_specs=checks.DAILY_CHECKS,
    period=timedelta(days=1),
    freshness_policy=freshness(_DAGSTER.freshness_daily_fail_minutes, _DAGSTER.freshness_daily_warn_minutes),
    description=(
        "Events per grid cell for each client, screen, event type, device and UTC day, and scroll reach per "
        "depth row for each client, screen, device and day: the sums of the day's 24 hourly buckets "
        "(heatmap_hourly and heatmap_scroll_hourly), computed inside ClickHouse (INSERT ... SELECT), each "
        "table's bucket swapped in atomically."
    ),
)
WEEKLY_ROLLUP = Rollup(
    asset_key=WEEKLY_KEY,
    grain="week",
    source_grain="day",
    upstream_key=DAILY_KEY,
    partitions_def=weekly_partitions,
    partition_mapping=DAYS_OF_WEEK,
    sum_checks={CELLS.name: checks.DAILY_MATCH, SCROLL.name: checks.DAILY_SCROLL_MATCH},
    check_specs=checks.WEEKLY_CHECKS,
    period=timedelta(days=7),
    freshness_policy=freshness(_DAGSTER.freshness_weekly_fail_minutes, _DAGSTER.freshness_weekly_warn_minutes),
    description=(
        "Events per grid cell for each client, screen, event type, device and week (Sunday to Saturday, UTC, "
        "like ClickHouse toStartOfWeek), and scroll reach per depth row for each client, screen, device and "
        "week: the sums of the week's 7 daily buckets, computed inside ClickHouse, each table's bucket "
        "swapped in atomically. A view active on several days counts on each."
    ),
)
heatmap_daily = _rollup_asset(DAILY_ROLLUP)
heatmap_weekly = _rollup_asset(WEEKLY_ROLLUP)


ALL_ASSETS = [kafka_topic, raw_events, heatmap_hourly, heatmap_daily, heatmap_weekly]
