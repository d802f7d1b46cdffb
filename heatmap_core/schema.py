"""ClickHouse schema: database ``heatmap`` and the three bucket tables."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BucketTable:
    name: str
    grain: str  # hour, day or week
    ttl: str  # ClickHouse interval kept after bucket_start


HOURLY = BucketTable("heatmap_hourly", "hour", "INTERVAL 90 DAY")
DAILY = BucketTable("heatmap_daily", "day", "INTERVAL 2 YEAR")
WEEKLY = BucketTable("heatmap_weekly", "week", "INTERVAL 5 YEAR")
TABLES = {table.grain: table for table in (HOURLY, DAILY, WEEKLY)}

PARTITION_KEY = "toYYYYMMDD(bucket_start)"
ORDER_KEY = "(client_id, screen_id, bucket_start, cell_x, cell_y)"
COLUMNS = (
    ("client_id", "LowCardinality(String)"),
    ("screen_id", "LowCardinality(String)"),
    ("bucket_start", "DateTime('UTC')"),
    ("cell_x", "UInt8"),
    ("cell_y", "UInt8"),
    ("count", "UInt64"),
)
COLUMN_NAMES = [name for name, _ in COLUMNS]


def create_table_sql(database: str, table: BucketTable) -> str:
    columns = ",\n  ".join(f"`{name}` {ctype}" for name, ctype in COLUMNS)
    return (
        f"CREATE TABLE IF NOT EXISTS `{database}`.`{table.name}` (\n  {columns}\n)\n"
        f"ENGINE = MergeTree\nPARTITION BY {PARTITION_KEY}\nORDER BY {ORDER_KEY}\n"
        f"TTL bucket_start + {table.ttl}"
    )


def schema_statements(database: str) -> list[str]:
    return [f"CREATE DATABASE IF NOT EXISTS `{database}`"] + [
        create_table_sql(database, table) for table in TABLES.values()
    ]
