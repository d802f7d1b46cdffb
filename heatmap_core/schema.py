"""ClickHouse schema: database ``heatmap``, the cell tables, the scroll tables and the write log.

Two kinds of bucket table, each at three grains (hour, day, week):

- cells (``heatmap_hourly`` ...): events per (client, screen, event type,
  device, bucket, grid cell);
- scroll (``heatmap_scroll_hourly`` ...): per (client, screen, device, bucket,
  depth row), ``reached``: the page views whose deepest scroll reached the row
  (a view reaching row r reached every row above it, so row 0 holds every
  view that scrolled), and ``folds``: the views whose fold (viewport height as
  a depth of the screen) lies in the row, from which the median fold is read.

Beside them, ``heatmap_write_log`` (``WRITE_LOG``) records which client's view of
which bucket changed when; it is bookkeeping of ``replace_bucket``, not a bucket
table (not in ``ALL_TABLES``).

A kind's ``columns`` is the one definition of its tables' columns: the DDL
below and the Dagster table schemas are both generated from it. Event type
and device lead the sort key after the screen, so a filtered read scans only
its rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from heatmap_core.grid import GRID_H, GRID_W
from heatmap_core.timeutil import BUCKET_LENGTH


@dataclass(frozen=True)
class BucketColumn:
    name: str
    type: str  # ClickHouse type
    description: str


# The type of bucket_start, and so of every query parameter compared with it.
BUCKET_TIME = "DateTime('UTC')"

_CLIENT = BucketColumn("client_id", "LowCardinality(String)", "Site that sent the events.")
_SCREEN = BucketColumn("screen_id", "LowCardinality(String)", "Page or screen of the site.")
_DEVICE = BucketColumn(
    "device", "LowCardinality(String)", "desktop, tablet, mobile (viewport width) or unknown (v1 batches)."
)
_BUCKET = BucketColumn("bucket_start", BUCKET_TIME, "Start of the hour, day (00:00) or week (Sunday 00:00), UTC.")


@dataclass(frozen=True)
class TableKind:
    """The columns shared by a kind's hour, day and week tables."""

    name: str  # "cells" or "scroll"
    columns: tuple[BucketColumn, ...]
    key: tuple[str, ...]  # one row per key: the sort key too
    measures: tuple[str, ...]  # additive columns: a rollup sums them over the finer buckets
    map_position: tuple[str, ...]  # where a map puts the measures: a cell, or a depth row

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def position_key(self) -> tuple[str, ...]:
        """The key without bucket_start: what a rollup groups a coarser bucket's finer rows by."""
        return tuple(name for name in self.key if name != "bucket_start")


CELLS = TableKind(
    "cells",
    (
        _CLIENT,
        _SCREEN,
        BucketColumn(
            "event_type",
            "LowCardinality(String)",
            "mousemove, click, rageclick, scroll, touch (v1), or unknown (rows migrated from before v2).",
        ),
        _DEVICE,
        _BUCKET,
        BucketColumn("cell_x", "UInt8", f"Grid column, 0..{GRID_W - 1}: floor(x_norm * {GRID_W}), clamped."),
        BucketColumn("cell_y", "UInt8", f"Grid row, 0..{GRID_H - 1}: floor(y_norm * {GRID_H}), clamped."),
        BucketColumn("count", "UInt64", "Events that fell in the cell during the bucket."),
    ),
    key=("client_id", "screen_id", "event_type", "device", "bucket_start", "cell_x", "cell_y"),
    measures=("count",),
    map_position=("cell_x", "cell_y"),
)
SCROLL = TableKind(
    "scroll",
    (
        _CLIENT,
        _SCREEN,
        _DEVICE,
        _BUCKET,
        BucketColumn("depth_row", "UInt8", f"Depth row, 0..{GRID_H - 1}: the grid's row of a depth (y_norm)."),
        BucketColumn("reached", "UInt64", "Page views whose deepest scroll in the hour reached this row."),
        BucketColumn("folds", "UInt64", "Page views whose fold (viewport_h / screen_h) lies in this row."),
    ),
    key=("client_id", "screen_id", "device", "bucket_start", "depth_row"),
    measures=("reached", "folds"),
    map_position=("depth_row",),
)


# Each bucket is exactly one partition, so replacing a bucket touches nothing else
# (docs/ARCHITECTURE.md, ClickHouse): an hour table is partitioned by hour, a day
# table by day, and a week table by day too, since a week's bucket_start is one day.
# Written as ClickHouse prints them in system.tables.partition_key.
_PARTITION_KEYS = {
    "hour": "(toYYYYMMDD(bucket_start) * 100) + toHour(bucket_start)",
    "day": "toYYYYMMDD(bucket_start)",
    "week": "toYYYYMMDD(bucket_start)",
}
# The id of a bucket's partition (system.parts.partition_id), from its start in UTC.
_PARTITION_IDS = {"hour": "%Y%m%d%H", "day": "%Y%m%d", "week": "%Y%m%d"}


@dataclass(frozen=True)
class BucketTable:
    name: str
    grain: str  # hour, day or week
    ttl: str  # ClickHouse interval kept after bucket_start
    kind: TableKind = CELLS

    @property
    def columns(self) -> tuple[BucketColumn, ...]:
        return self.kind.columns

    @property
    def sort_key(self) -> tuple[str, ...]:
        return self.kind.key

    @property
    def partition_key(self) -> str:
        """The PARTITION BY expression: one partition per bucket."""
        return _PARTITION_KEYS[self.grain]

    def partition_id(self, bucket_start: datetime) -> str:
        """The id of the one partition holding the bucket starting at ``bucket_start``."""
        return bucket_start.astimezone(UTC).strftime(_PARTITION_IDS[self.grain])

    @property
    def column_names(self) -> list[str]:
        return self.kind.column_names

    @property
    def length(self) -> timedelta:
        """How long one bucket lasts: it covers [bucket_start, bucket_start + length)."""
        return BUCKET_LENGTH[self.grain]


_TTL = {"hour": "INTERVAL 90 DAY", "day": "INTERVAL 2 YEAR", "week": "INTERVAL 5 YEAR"}
HOURLY = BucketTable("heatmap_hourly", "hour", _TTL["hour"])
DAILY = BucketTable("heatmap_daily", "day", _TTL["day"])
WEEKLY = BucketTable("heatmap_weekly", "week", _TTL["week"])
TABLES = {table.grain: table for table in (HOURLY, DAILY, WEEKLY)}
SCROLL_TABLES = {
    grain: BucketTable(f"heatmap_scroll_{name}", grain, ttl, SCROLL)
    for (grain, ttl), name in zip(_TTL.items(), ("hourly", "daily", "weekly"), strict=True)
}
SCROLL_HOURLY, SCROLL_DAILY, SCROLL_WEEKLY = SCROLL_TABLES.values()
ALL_TABLES = (*TABLES.values(), *SCROLL_TABLES.values())

# The cell tables' names, kept for readers of cells.
COLUMNS = CELLS.columns
COLUMN_NAMES = CELLS.column_names
BUCKET_KEY = CELLS.key
CELL_KEY = CELLS.position_key


def create_table_sql(database: str, table: BucketTable) -> str:
    columns = ",\n  ".join(f"`{column.name}` {column.type}" for column in table.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{table.name}` (\n  {columns}\n)\n"
        f"ENGINE = MergeTree\nPARTITION BY {table.partition_key}\nORDER BY ({', '.join(table.sort_key)})\n"
        f"TTL bucket_start + {table.ttl}\n"
        # Every row of a part shares its partition's one bucket_start, so a part expires whole:
        # dropping it is the same outcome as the row TTL without rewriting it first.
        "SETTINGS ttl_only_drop_parts = 1"
    )


# The log of bucket writes: one row per client whose view of a bucket a replacement changed (the
# clients of its new rows and of its old ones), written by ``replace_bucket`` after the swap; the
# newest ``written_at`` of a client's rows overlapping a range is when its buckets there last changed.
# ReplacingMergeTree keeps one row per (client, bucket, table), the newest, once parts merge: the log
# grows with the buckets, not with how often they are rewritten (max(written_at) is the same either way).
# A row lives as long as the longest-lived bucket table keeps a bucket (the weekly tables'), by month
# partitions that TTL drops whole.
WRITE_LOG = "heatmap_write_log"


@dataclass(frozen=True)
class WriteLogTable:
    """The write log's definition: what its DDL is made of and ``outdated_tables`` checks."""

    name: str
    columns: tuple[BucketColumn, ...]
    sort_key: tuple[str, ...]
    partition_key: str  # as ClickHouse prints it in system.tables.partition_key

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


WRITE_LOG_TABLE = WriteLogTable(
    WRITE_LOG,
    (
        BucketColumn("client_id", "String", "Client whose view of the bucket changed."),
        BucketColumn("table", "LowCardinality(String)", "The bucket table written."),
        BucketColumn("bucket_start", BUCKET_TIME, "Start of the bucket, UTC."),
        BucketColumn("bucket_end", BUCKET_TIME, "End of the bucket (exclusive), UTC."),
        BucketColumn("written_at", "DateTime64(3, 'UTC')", "When the replacement was swapped in (server clock)."),
    ),
    sort_key=("client_id", "bucket_start", "`table`"),  # a keyword: ClickHouse prints it quoted
    partition_key="toYYYYMM(bucket_start)",
)
WRITE_LOG_COLUMNS = tuple(WRITE_LOG_TABLE.column_names)


def create_write_log_sql(database: str) -> str:
    columns = ",\n  ".join(f"`{column.name}` {column.type}" for column in WRITE_LOG_TABLE.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{WRITE_LOG}` (\n  {columns}\n)\n"
        f"ENGINE = ReplacingMergeTree(written_at)\nPARTITION BY {WRITE_LOG_TABLE.partition_key}\n"
        f"ORDER BY ({', '.join(WRITE_LOG_TABLE.sort_key)})\n"
        f"TTL bucket_start + {_TTL['week']}\n"
        "SETTINGS ttl_only_drop_parts = 1"
    )


def schema_statements(database: str) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS `{database}`",
        *(create_table_sql(database, table) for table in ALL_TABLES),
        create_write_log_sql(database),
    ]
