"""Asset checks: count reconciliation per event type and device, scroll reach, grid bounds,
unique keys, and late partitions.

The reconciliation and table checks run inside every materialization of the
aggregate they guard (declared as ``check_specs`` on the asset), over exactly
the partitions that run wrote, and are recorded with it in the UI. Each asset
writes a cells table and a scroll table of its grain (``tables_of``):

- heatmap_hourly: per (event type, device), the distinct raw events in the
  lake (recounted by ClickHouse straight from the hour's files, an engine
  independent of Spark) = the hour's cells summed; scroll reach never exceeds
  the views counted: in every (client, screen, device) of the hour, reached at
  any row <= reached at row 0 <= the distinct view_ids with scroll events in
  the raw hour.
- heatmap_daily, heatmap_weekly: the finer buckets of the window add up to the
  bucket position by position (cell by cell within each event type and device;
  depth row by depth row within each device, both scroll measures), and reached
  at any row <= reached at row 0.
- every aggregate: each table's positions lie in the grid; one row per key.

A failure's metadata names its bucket and the (event type, device), the
(client/screen/device) or the (device, depth row) that did not hold.

``partitions_fresh`` (one per aggregate) flags partitions whose upstream
gained data more than the allowed lag ago without the partition having been
rebuilt since; the freshness sensor evaluates it every minute and it can be
run from the UI on demand.
"""

from collections import defaultdict
from collections.abc import Iterable, Sequence
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
from heatmap_core.events import SCROLL as SCROLL_EVENT
from heatmap_core.events import UNKNOWN_DEVICE
from heatmap_core.grid import GRID_H, GRID_W
from heatmap_core.lake_schema import COUNTED_COLUMNS, EVENT_KEY, clickhouse_s3_source, clickhouse_structure
from heatmap_core.schema import CELLS, SCROLL, SCROLL_TABLES, TABLES, BucketTable
from heatmap_core.settings import get_settings
from heatmap_core.sql import BUCKET_WINDOW, time_array_parameter, window_parameters, window_sums
from heatmap_core.timeutil import naive_utc

GRID_CHECK = "cells_within_grid"
UNIQUE_CHECK = "no_duplicate_cells"
RAW_MATCH = "raw_events_match_hourly"
HOURLY_MATCH = "hourly_sum_matches_daily"
DAILY_MATCH = "daily_sum_matches_weekly"
HOURLY_SCROLL_MATCH = "hourly_scroll_matches_daily"
DAILY_SCROLL_MATCH = "daily_scroll_matches_weekly"
SCROLL_REACH = "scroll_reach_within_views"
FRESH_CHECK = "partitions_fresh"

# The upper bound (exclusive) of every grid position column a table kind may have.
_GRID_BOUNDS = {"cell_x": GRID_W, "cell_y": GRID_H, "depth_row": GRID_H}
# What a rollup mismatch is reported by: the dimensions of a cell, the device and depth of a scroll row.
_REPORTED_BY = {CELLS.name: ("event_type", "device"), SCROLL.name: ("device", "depth_row")}


def tables_of(grain: str) -> tuple[BucketTable, BucketTable]:
    """The two tables an aggregate of this grain writes: its cells and its scroll reach."""
    return TABLES[grain], SCROLL_TABLES[grain]


def _table_specs(key: AssetKey) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            GRID_CHECK,
            asset=key,
            description=f"Every cell lies in the {GRID_W} x {GRID_H} grid, every scroll depth row in its {GRID_H} rows.",
        ),
        AssetCheckSpec(
            UNIQUE_CHECK,
            asset=key,
            description=(
                f"One row per ({', '.join(CELLS.key)}) in the cells, per ({', '.join(SCROLL.key)}) in the scroll reach."
            ),
        ),
    ]


def _rollup_specs(key: AssetKey, upstream: AssetKey, cells_check: str, scroll_check: str, window: str) -> list:
    return [
        AssetCheckSpec(
            cells_check,
            asset=key,
            additional_deps=[upstream],
            description=f"{window} add up to the bucket cell by cell, within every event type and device.",
        ),
        AssetCheckSpec(
            scroll_check,
            asset=key,
            additional_deps=[upstream],
            description=f"{window}' scroll reach and folds add up to the bucket's, depth row by depth row, per device.",
        ),
        AssetCheckSpec(
            SCROLL_REACH,
            asset=key,
            description="In every client, screen and device, no depth row is reached by more views than row 0.",
        ),
        *_table_specs(key),
    ]


HOURLY_CHECKS = [
    AssetCheckSpec(
        RAW_MATCH,
        asset=HOURLY_KEY,
        additional_deps=[RAW_EVENTS],
        description=(
            "Per event type and device, distinct raw events in the hour's lake files (recounted by ClickHouse) "
            "= the hour's cells summed."
        ),
    ),
    AssetCheckSpec(
        SCROLL_REACH,
        asset=HOURLY_KEY,
        additional_deps=[RAW_EVENTS],
        description=(
            "In every client, screen and device: no depth row reached by more views than row 0, and row 0 "
            "reached by no more views than the distinct view_ids with scroll events in the hour's lake files."
        ),
    ),
    *_table_specs(HOURLY_KEY),
]
DAILY_CHECKS = _rollup_specs(
    DAILY_KEY, HOURLY_KEY, HOURLY_MATCH, HOURLY_SCROLL_MATCH, "The 24 hourly buckets of the day"
)
WEEKLY_CHECKS = _rollup_specs(WEEKLY_KEY, DAILY_KEY, DAILY_MATCH, DAILY_SCROLL_MATCH, "The 7 daily buckets of the week")


# --------------------------------------------------------------------------- table checks


def _label(values: Iterable) -> str:
    return "/".join(str(value) for value in values)


def table_checks(
    client, database: str, tables: Sequence[BucketTable], key: AssetKey, buckets: list[datetime]
) -> list[AssetCheckResult]:
    """Grid bounds and key uniqueness over the given buckets of an asset's tables;
    a failure names its table and buckets (UTC)."""
    starts = [naive_utc(b) for b in buckets]
    outside: dict[str, dict[str, int]] = {}
    duplicated: dict[str, dict[str, int]] = {}
    rows = 0
    for table in tables:
        bounds = " OR ".join(f"{name} >= {bound}" for name, bound in _GRID_BOUNDS.items() if name in table.column_names)
        per_bucket = client.query(
            f"SELECT toString(bucket_start), countIf({bounds}), count() - uniqExact({', '.join(table.kind.key)}), "
            f"count() FROM `{database}`.`{table.name}` WHERE bucket_start IN {time_array_parameter('starts')} "
            "GROUP BY bucket_start ORDER BY bucket_start",
            parameters={"starts": starts},
        ).result_rows
        rows += sum(int(r[3]) for r in per_bucket)
        if found := {bucket: int(n) for bucket, n, _, _ in per_bucket if n}:
            outside[table.name] = found
        if found := {bucket: int(n) for bucket, _, n, _ in per_bucket if n}:
            duplicated[table.name] = found
    return [
        AssetCheckResult(
            asset_key=key,
            check_name=GRID_CHECK,
            passed=not outside,
            metadata={
                "cells_outside_grid": sum(n for found in outside.values() for n in found.values()),
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
                "duplicate_rows": sum(n for found in duplicated.values() for n in found.values()),
                "buckets_with_duplicates": MetadataValue.json(duplicated),
                "rows_checked": rows,
                "buckets": len(buckets),
            },
        ),
    ]


def measure_sums(client, database: str, table: BucketTable, start: datetime, end: datetime) -> dict[str, int]:
    """Each measure of a window of ``table`` summed; a scroll table adds ``views``, its reached at
    row 0 (every view counted once per hour)."""
    sums = {measure: f"sum({measure})" for measure in table.kind.measures}
    if table.kind == SCROLL:
        sums["views"] = "sumIf(reached, depth_row = 0)"
    (values,) = client.query(
        f"SELECT {', '.join(sums.values())} FROM `{database}`.`{table.name}` WHERE {BUCKET_WINDOW}",
        parameters=window_parameters(start, end),
    ).result_rows
    return {name: int(value or 0) for name, value in zip(sums, values, strict=True)}


def bucket_counts(client, database: str, table: BucketTable, start: datetime, end: datetime) -> dict[str, int]:
    """Events per 'event_type/device' in a window of a cells table."""
    rows = client.query(
        f"SELECT event_type, device, sum(count) FROM `{database}`.`{table.name}` WHERE {BUCKET_WINDOW} "
        "GROUP BY event_type, device",
        parameters=window_parameters(start, end),
    ).result_rows
    return {_label((event_type, device)): int(n) for event_type, device, n in rows}


@dataclass(frozen=True)
class Difference:
    """One reported group (``_REPORTED_BY`` of the kind) of a rollup's window against its bucket."""

    label: str
    rows_differing: int  # positions whose measures differ (or exist on one side only)
    upstream: dict[str, int]  # measure -> sum over the finer buckets
    bucket: dict[str, int]  # measure -> sum in the bucket

    def metadata(self) -> dict:
        return {
            "rows_differing": self.rows_differing,
            **{f"upstream_{name}": value for name, value in self.upstream.items()},
            **self.bucket,
        }


def rollup_differences(
    client, database: str, source: BucketTable, target: BucketTable, start: datetime, end: datetime
) -> list[Difference]:
    """Every reported group of a window of ``source`` against its bucket in ``target`` (same kind),
    compared position by position with a full outer join, so a position missing on either side differs."""
    kind = source.kind
    reported = ", ".join(_REPORTED_BY[kind.name])
    differs = " OR ".join(f"s.{m} != t.{m}" for m in kind.measures)
    sums = ", ".join(f"sum(s.{m}), sum(t.{m})" for m in kind.measures)
    rows = client.query(
        f"SELECT {reported}, countIf({differs}), {sums} "
        f"FROM ({window_sums(kind, f'`{database}`.`{source.name}`')}) AS s "
        f"FULL OUTER JOIN ({window_sums(kind, f'`{database}`.`{target.name}`')}) AS t "
        f"USING ({', '.join(kind.position_key)}) GROUP BY {reported} ORDER BY {reported}",
        parameters=window_parameters(start, end),
    ).result_rows
    width = len(_REPORTED_BY[kind.name])
    differences = []
    for row in rows:
        values = [int(v) for v in row[width + 1 :]]
        differences.append(
            Difference(
                _label(row[:width]),
                int(row[width]),
                dict(zip(kind.measures, values[0::2], strict=True)),
                dict(zip(kind.measures, values[1::2], strict=True)),
            )
        )
    return differences


# --------------------------------------------------------------------------- scroll reach


def scroll_reach_violations(
    client,
    database: str,
    table: BucketTable,
    buckets: list[datetime],
    views: dict[datetime, dict[str, int]] | None = None,
) -> tuple[dict[str, dict[str, dict]], int]:
    """({bucket (UTC text): {'client/screen/device': what failed}}, groups checked) over the given
    buckets of a scroll table: a depth row reached by more views than row 0, or (with ``views``,
    {bucket: {'client/screen/device': distinct views in the raw bucket}}) row 0 reached by more
    views than were counted."""
    rows = client.query(
        "SELECT bucket_start, client_id, screen_id, device, row_0, groupArrayIf(depth_row, reached > row_0) "
        "FROM (SELECT bucket_start, client_id, screen_id, device, depth_row, reached, "
        "sumIf(reached, depth_row = 0) OVER (PARTITION BY bucket_start, client_id, screen_id, device) AS row_0 "
        f"FROM `{database}`.`{table.name}` WHERE bucket_start IN {time_array_parameter('starts')}) "
        "GROUP BY bucket_start, client_id, screen_id, device, row_0",
        parameters={"starts": [naive_utc(b) for b in buckets]},
    ).result_rows
    counted = {naive_utc(bucket): found for bucket, found in (views or {}).items()}
    violations: dict[str, dict[str, dict]] = defaultdict(dict)
    for bucket, client_id, screen_id, device, row_0, above in rows:
        group = _label((client_id, screen_id, device))
        failed: dict = {}
        if above:
            failed["rows_above_row_0"] = sorted(int(row) for row in above)[:20]
        if views is not None:
            seen = counted.get(bucket.replace(tzinfo=None), {}).get(group, 0)
            if row_0 > seen:
                failed["views"] = seen
        if failed:
            violations[f"{bucket:%Y-%m-%d %H:%M:%S}"][group] = {"reached_row_0": int(row_0), **failed}
    return dict(violations), len(rows)


def scroll_reach_check(
    client,
    database: str,
    table: BucketTable,
    key: AssetKey,
    buckets: list[datetime],
    views: dict[datetime, dict[str, int]] | None = None,
) -> AssetCheckResult:
    violations, groups = scroll_reach_violations(client, database, table, buckets, views)
    return AssetCheckResult(
        asset_key=key,
        check_name=SCROLL_REACH,
        passed=not violations,
        metadata={
            "violations": MetadataValue.json(violations),
            "groups_checked": groups,
            "buckets": len(buckets),
            "table": f"{database}.{table.name}",
        },
    )


# --------------------------------------------------------------------------- raw recount


@dataclass
class LakeCounts:
    """What the raw lake of one hour holds, by the hourly job's counting rule."""

    events: dict[str, int] = field(default_factory=dict)  # 'event_type/device' -> distinct events
    views: dict[str, int] = field(default_factory=dict)  # 'client/screen/device' -> distinct views that scrolled


def lake_counts(client, url_glob: str, fmt: str, access_key: str, secret_key: str) -> LakeCounts:
    """Distinct counted events (EVENT_KEY) per event type and device, and distinct view_ids with
    scroll events per client, screen and device, in the files matching ``url_glob``, read by ClickHouse.

    The same counting rule as the hourly Spark job (``heatmap_core.lake_schema``),
    applied by an independent engine. Lines written before v2 have no device: they
    count as ``unknown``, as the job counts them (and so does a line without a type).
    """
    event_key = ", ".join(f"assumeNotNull({name})" for name in EVENT_KEY)
    counted = " AND ".join(f"{name} IS NOT NULL" for name in COUNTED_COLUMNS)
    read = dict.fromkeys((*COUNTED_COLUMNS, "event_type", "device", "view_id"))
    rows = client.query(
        "SELECT assumeNotNull(client_id), assumeNotNull(screen_id), ifNull(event_type, {unknown:String}) AS type, "
        f"ifNull(device, {{unknown:String}}), uniqExact({event_key}), uniqExactIf(view_id, view_id IS NOT NULL) "
        f"FROM {clickhouse_s3_source(fmt)} "
        f"WHERE {counted} "
        "GROUP BY 1, 2, 3, 4 "
        "SETTINGS input_format_allow_errors_ratio = 1, input_format_skip_unknown_fields = 1",
        parameters={
            "url": url_glob,
            "key": access_key,
            "secret": secret_key,
            "structure": clickhouse_structure(read),
            "unknown": UNKNOWN_DEVICE,
        },
    ).result_rows
    counts = LakeCounts()
    for client_id, screen_id, event_type, device, events, views in rows:
        type_device = _label((event_type, device))
        counts.events[type_device] = counts.events.get(type_device, 0) + int(events)
        if event_type == SCROLL_EVENT and views:
            counts.views[_label((client_id, screen_id, device))] = int(views)
    return counts


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
