"""ClickHouse schema: database ``heatmap`` and the three bucket tables.

``COLUMNS`` is the one definition of a bucket table's columns: the DDL below
and the Dagster table schema of the aggregates are both generated from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from heatmap_core.grid import GRID_H, GRID_W


@dataclass(frozen=True)
class BucketTable:
    name: str
    grain: str  # hour, day or week
    ttl: str  # ClickHouse interval kept after bucket_start


HOURLY = BucketTable("heatmap_hourly", "hour", "INTERVAL 90 DAY")
DAILY = BucketTable("heatmap_daily", "day", "INTERVAL 2 YEAR")
WEEKLY = BucketTable("heatmap_weekly", "week", "INTERVAL 5 YEAR")
TABLES = {table.grain: table for table in (HOURLY, DAILY, WEEKLY)}


@dataclass(frozen=True)
class BucketColumn:
    name: str
    type: str  # ClickHouse type
    description: str


# The type of bucket_start, and so of every query parameter compared with it.
BUCKET_TIME = "DateTime('UTC')"
COLUMNS = (
    BucketColumn("client_id", "LowCardinality(String)", "Site that sent the events."),
    BucketColumn("screen_id", "LowCardinality(String)", "Page or screen of the site."),
    BucketColumn("bucket_start", BUCKET_TIME, "Start of the hour, day (00:00) or week (Sunday 00:00), UTC."),
    BucketColumn("cell_x", "UInt8", f"Grid column, 0..{GRID_W - 1}: floor(x_norm * {GRID_W}), clamped."),
    BucketColumn("cell_y", "UInt8", f"Grid row, 0..{GRID_H - 1}: floor(y_norm * {GRID_H}), clamped."),
    BucketColumn("count", "UInt64", "Events that fell in the cell during the bucket."),
)
COLUMN_NAMES = [column.name for column in COLUMNS]

PARTITION_KEY = "toYYYYMMDD(bucket_start)"
# One row per key: a screen's heatmap over time is one range scan of the sort order.
BUCKET_KEY = ("client_id", "screen_id", "bucket_start", "cell_x", "cell_y")
ORDER_KEY = f"({', '.join(BUCKET_KEY)})"
# A cell inside one bucket: what a rollup sums a coarser bucket's finer rows by.
CELL_KEY = tuple(name for name in BUCKET_KEY if name != "bucket_start")


def create_table_sql(database: str, table: BucketTable) -> str:
    columns = ",\n  ".join(f"`{column.name}` {column.type}" for column in COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{table.name}` (\n  {columns}\n)\n"
        f"ENGINE = MergeTree\nPARTITION BY {PARTITION_KEY}\nORDER BY {ORDER_KEY}\n"
        f"TTL bucket_start + {table.ttl}"
    )


def schema_statements(database: str) -> list[str]:
    return [f"CREATE DATABASE IF NOT EXISTS `{database}`"] + [
        create_table_sql(database, table) for table in TABLES.values()
    ]
