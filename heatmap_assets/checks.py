"""Asset checks: count reconciliation, grid bounds, unique keys, and late partitions.

The reconciliation and table checks run inside every materialization of the
aggregate they guard (declared as ``check_specs`` on the asset), over exactly
the partitions that run wrote, and are recorded with it in the UI:

- heatmap_hourly: distinct raw events in the lake (recounted by ClickHouse
  straight from the hour's files, an engine independent of Spark) = sum of
  the hour's cells; cells within the grid; no duplicate keys.
- heatmap_daily: the day's hourly sum = the daily sum, cell by cell.
- heatmap_weekly: the week's daily sum = the weekly sum, cell by cell.

``partitions_fresh`` (one per aggregate) flags partitions whose upstream
gained data more than the allowed lag ago without the partition having been
rebuilt since; the freshness sensor evaluates it every minute and it can be
run from the UI on demand.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetRecordsFilter,
    DagsterEventType,
    EventLogRecord,
    MetadataValue,
    PartitionMapping,
    PartitionsDefinition,
    asset_check,
)

from heatmap_assets.keys import DAILY_KEY, HOURLY_KEY, RAW_EVENTS, WEEKLY_KEY
from heatmap_assets.partitions import (
    DAYS_OF_WEEK,
    HOURS_OF_DAY,
    SAME_HOUR,
    daily_partitions,
    hourly_partitions,
    weekly_partitions,
)
from heatmap_core.grid import GRID_H, GRID_W
from heatmap_core.lake_schema import COUNTED_COLUMNS, EVENT_KEY, clickhouse_s3_source, clickhouse_structure
from heatmap_core.schema import BUCKET_KEY, CELL_KEY, BucketTable
from heatmap_core.settings import get_settings
from heatmap_core.sql import BUCKET_WINDOW, time_array_parameter, window_parameters
from heatmap_core.timeutil import naive_utc

GRID_CHECK = "cells_within_grid"
UNIQUE_CHECK = "no_duplicate_cells"
RAW_MATCH = "raw_events_match_hourly"
HOURLY_MATCH = "hourly_sum_matches_daily"
DAILY_MATCH = "daily_sum_matches_weekly"
FRESH_CHECK = "partitions_fresh"


def _table_specs(key: AssetKey) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(GRID_CHECK, asset=key, description=f"Every cell lies in the {GRID_W} x {GRID_H} grid."),
        AssetCheckSpec(
            UNIQUE_CHECK,
            asset=key,
            description=f"One row per ({', '.join(BUCKET_KEY)}): no duplicates.",
        ),
    ]


HOURLY_CHECKS = [
    AssetCheckSpec(
        RAW_MATCH,
        asset=HOURLY_KEY,
        additional_deps=[RAW_EVENTS],
        description="Distinct raw events in the hour's lake files (recounted by ClickHouse) = sum of the hour's cells.",
    ),
    *_table_specs(HOURLY_KEY),
]
DAILY_CHECKS = [
    AssetCheckSpec(
        HOURLY_MATCH,
        asset=DAILY_KEY,
        additional_deps=[HOURLY_KEY],
        description="The 24 hourly buckets of the day add up to the daily bucket, cell by cell.",
    ),
    *_table_specs(DAILY_KEY),
]
WEEKLY_CHECKS = [
    AssetCheckSpec(
        DAILY_MATCH,
        asset=WEEKLY_KEY,
        additional_deps=[DAILY_KEY],
        description="The 7 daily buckets of the week add up to the weekly bucket, cell by cell.",
    ),
    *_table_specs(WEEKLY_KEY),
]


# --------------------------------------------------------------------------- table checks


def table_checks(
    client, database: str, table: BucketTable, key: AssetKey, buckets: list[datetime]
) -> list[AssetCheckResult]:
    """Grid bounds and key uniqueness over the given buckets of one table; a failure names its buckets (UTC)."""
    target = f"`{database}`.`{table.name}`"
    starts = [naive_utc(b) for b in buckets]
    per_bucket = client.query(
        f"SELECT toString(bucket_start), countIf(cell_x >= {GRID_W} OR cell_y >= {GRID_H}), "
        f"count() - uniqExact({', '.join(BUCKET_KEY)}), count() "
        f"FROM {target} WHERE bucket_start IN {time_array_parameter('starts')} GROUP BY bucket_start ORDER BY bucket_start",
        parameters={"starts": starts},
    ).result_rows
    rows = sum(int(r[3]) for r in per_bucket)
    outside = {bucket: int(n) for bucket, n, _, _ in per_bucket if n}
    duplicated = {bucket: int(n) for bucket, _, n, _ in per_bucket if n}
    return [
        AssetCheckResult(
            asset_key=key,
            check_name=GRID_CHECK,
            passed=not outside,
            metadata={
                "cells_outside_grid": sum(outside.values()),
                "buckets_outside_grid": MetadataValue.json(outside),
                "rows_checked": rows,
                "buckets": len(buckets),
            },
        ),
        AssetCheckResult(
            asset_key=key,
            check_name=UNIQUE_CHECK,
            passed=not duplicated,
            metadata={
                "duplicate_rows": sum(duplicated.values()),
                "buckets_with_duplicates": MetadataValue.json(duplicated),
                "rows_checked": rows,
                "buckets": len(buckets),
            },
        ),
    ]


def bucket_sum(client, database: str, table: BucketTable, start: datetime, end: datetime) -> int:
    return int(
        client.query(
            f"SELECT sum(count) FROM `{database}`.`{table.name}` WHERE {BUCKET_WINDOW}",
            parameters=window_parameters(start, end),
        ).result_rows[0][0]
        or 0
    )


def rollup_mismatches(
    client, database: str, source: BucketTable, target: BucketTable, start: datetime, end: datetime
) -> tuple[int, int, int]:
    """(cells that differ, source sum, target sum) between a window of ``source`` and its bucket in ``target``."""
    keys = ", ".join(CELL_KEY)
    differing = int(
        client.query(
            f"SELECT count() FROM "
            f"(SELECT {keys}, sum(count) AS c FROM `{database}`.`{source.name}` WHERE {BUCKET_WINDOW} GROUP BY {keys}) AS s "
            f"FULL OUTER JOIN "
            f"(SELECT {keys}, sum(count) AS c FROM `{database}`.`{target.name}` WHERE {BUCKET_WINDOW} GROUP BY {keys}) AS t "
            f"USING ({keys}) WHERE s.c != t.c",
            parameters=window_parameters(start, end),
        ).result_rows[0][0]
    )
    return differing, bucket_sum(client, database, source, start, end), bucket_sum(client, database, target, start, end)


# --------------------------------------------------------------------------- raw recount


def lake_distinct_events(client, url_glob: str, fmt: str, access_key: str, secret_key: str) -> int:
    """Distinct counted events (EVENT_KEY) in the files matching ``url_glob``, read by ClickHouse.

    The same counting rule as the hourly Spark job (``heatmap_core.lake_schema``),
    applied by an independent engine.
    """
    event_key = ", ".join(f"assumeNotNull({name})" for name in EVENT_KEY)
    counted = " AND ".join(f"{name} IS NOT NULL" for name in COUNTED_COLUMNS)
    return int(
        client.query(
            f"SELECT uniqExact({event_key}) "
            f"FROM {clickhouse_s3_source(fmt)} "
            f"WHERE {counted} "
            "SETTINGS input_format_allow_errors_ratio = 1, input_format_skip_unknown_fields = 1",
            parameters={
                "url": url_glob,
                "key": access_key,
                "secret": secret_key,
                "structure": clickhouse_structure(COUNTED_COLUMNS),
            },
        ).result_rows[0][0]
    )


# --------------------------------------------------------------------------- late partitions


def allowed_lag() -> timedelta:
    return timedelta(minutes=get_settings().dagster.freshness_lag_minutes)


def freshness_lookback() -> timedelta:
    return timedelta(hours=get_settings().dagster.freshness_lookback_hours)


@dataclass(frozen=True)
class Edge:
    child: AssetKey
    child_def: PartitionsDefinition
    parent: AssetKey
    parent_def: PartitionsDefinition
    mapping: PartitionMapping


EDGES = {
    HOURLY_KEY: Edge(HOURLY_KEY, hourly_partitions, RAW_EVENTS, hourly_partitions, SAME_HOUR),
    DAILY_KEY: Edge(DAILY_KEY, daily_partitions, HOURLY_KEY, hourly_partitions, HOURS_OF_DAY),
    WEEKLY_KEY: Edge(WEEKLY_KEY, weekly_partitions, DAILY_KEY, daily_partitions, DAYS_OF_WEEK),
}


@dataclass
class Lateness:
    asset_key: AssetKey
    late: dict[str, datetime] = field(default_factory=dict)  # partition -> oldest unreflected upstream update
    checked: int = 0

    @property
    def passed(self) -> bool:
        return not self.late

    def metadata(self, lag: timedelta) -> dict:
        oldest = min(self.late.values()) if self.late else None
        return {
            "late_partitions": MetadataValue.json(sorted(self.late)),
            "late_count": len(self.late),
            "allowed_lag_minutes": lag.total_seconds() / 60,
            "oldest_pending_update": MetadataValue.text(oldest.isoformat() if oldest else "none"),
            "partitions_with_upstream_updates_checked": self.checked,
        }


def late_partitions(
    instance,
    child: AssetKey,
    *,
    now: datetime | None = None,
    lag: timedelta | None = None,
    lookback: timedelta | None = None,
) -> Lateness:
    """Partitions of ``child`` whose upstream was updated more than ``lag`` ago and not rebuilt since.

    Upstream partitions map to the child's through the same time-window
    partition mappings the assets declare.
    """
    edge = EDGES[child]
    now = now or datetime.now(UTC)
    lag = allowed_lag() if lag is None else lag
    lookback = freshness_lookback() if lookback is None else lookback
    result = Lateness(child)
    child_latest = instance.get_latest_storage_id_by_partition(child, DagsterEventType.ASSET_MATERIALIZATION)
    records: list[EventLogRecord] = []
    records_filter = AssetRecordsFilter(asset_key=edge.parent, after_timestamp=(now - lookback).timestamp())
    page_cursor = None
    while len(records) < 50_000:
        page = instance.fetch_materializations(records_filter, limit=5000, cursor=page_cursor)
        records.extend(page.records)
        if not page.has_more:
            break
        page_cursor = page.cursor
    children_of: dict[str, list[str]] = {}
    checked: set[str] = set()
    for record in records:
        partition = record.partition_key
        if partition is None or not edge.parent_def.has_partition_key(partition):
            continue
        if partition not in children_of:
            subset = edge.parent_def.subset_with_partition_keys([partition])
            downstream = edge.mapping.get_downstream_partitions_for_partitions(subset, edge.parent_def, edge.child_def)
            children_of[partition] = list(downstream.get_partition_keys())
        updated_at = datetime.fromtimestamp(record.timestamp, UTC)
        for key in children_of[partition]:
            checked.add(key)
            stale = record.storage_id > child_latest.get(key, -1) and now - updated_at > lag
            if stale and (key not in result.late or updated_at < result.late[key]):
                result.late[key] = updated_at
    result.checked = len(checked)
    return result


def _fresh_check(key: AssetKey, description: str):
    @asset_check(asset=key, name=FRESH_CHECK, description=description, blocking=False)
    def _check(context) -> AssetCheckResult:
        lag = allowed_lag()
        lateness = late_partitions(context.instance, key, lag=lag)
        return AssetCheckResult(
            passed=lateness.passed, severity=AssetCheckSeverity.ERROR, metadata=lateness.metadata(lag)
        )

    return _check


fresh_checks = [
    _fresh_check(
        HOURLY_KEY, "No hour whose raw events changed more than the allowed lag ago is still waiting to be rebuilt."
    ),
    _fresh_check(
        DAILY_KEY, "No day whose hourly buckets changed more than the allowed lag ago is still waiting to be rolled up."
    ),
    _fresh_check(
        WEEKLY_KEY,
        "No week whose daily buckets changed more than the allowed lag ago is still waiting to be rolled up.",
    ),
]


def all_specs() -> Iterable[AssetCheckSpec]:
    return [*HOURLY_CHECKS, *DAILY_CHECKS, *WEEKLY_CHECKS]
