"""A database of the version before heatmap v2, and the documented migration command run on it.

The tables are written out with the DDL that version created, not generated from today's schema,
so they stay what existing deployments hold whatever the schema becomes. Shared by the migration's
own tests (tests/foundation/test_migrate.py) and the backfill after it (tests/assets).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from heatmap_core.clickhouse import clickhouse
from heatmap_core.settings import Settings
from tests.conftest import ROOT

# The cell tables as the version before heatmap v2 created them (its heatmap_core.schema.create_table_sql).
OLD_DDL = """CREATE TABLE `{database}`.`{name}` (
  `client_id` LowCardinality(String),
  `screen_id` LowCardinality(String),
  `bucket_start` DateTime('UTC'),
  `cell_x` UInt8,
  `cell_y` UInt8,
  `count` UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(bucket_start)
ORDER BY (client_id, screen_id, bucket_start, cell_x, cell_y)
TTL bucket_start + {ttl}"""
OLD_TTL = {"heatmap_hourly": "INTERVAL 90 DAY", "heatmap_daily": "INTERVAL 2 YEAR", "heatmap_weekly": "INTERVAL 5 YEAR"}
OLD_COLUMNS = "client_id, screen_id, bucket_start, cell_x, cell_y, count"

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
# Buckets across many day partitions: the daily table's span passes ClickHouse's default
# limit of 100 partitions per insert block.
BUCKETS = {
    "heatmap_hourly": [TODAY - timedelta(days=d, hours=h) for d in range(1, 4) for h in (0, 7, 23)],
    "heatmap_daily": [TODAY - timedelta(days=d) for d in range(1, 151)],
    "heatmap_weekly": [TODAY - timedelta(weeks=w, days=TODAY.isoweekday() % 7) for w in range(0, 30)],
}


def old_rows(name: str, seed: int) -> dict[tuple, int]:
    """{(client_id, screen_id, bucket_start, cell_x, cell_y): count} of one old table."""
    rng = random.Random(seed)
    rows = {}
    for bucket in BUCKETS[name]:
        for client_id, screen_id in (("acme", "home_v1"), ("acme", "pricing"), ("globex", "home_v1")):
            for _ in range(rng.randrange(1, 6)):
                rows[(client_id, screen_id, bucket, rng.randrange(100), rng.randrange(200))] = rng.randrange(1, 10**6)
    return rows


def create_old_database(settings: Settings) -> dict[str, dict[tuple, int]]:
    """The settings' database as the previous version left it: three cell tables, no scroll tables;
    {table: its rows as ``old_rows`` gives them}."""
    database = settings.clickhouse_database
    stored = {}
    with clickhouse(settings) as client:
        client.command(f"CREATE DATABASE `{database}`")
        for seed, (name, ttl) in enumerate(OLD_TTL.items()):
            client.command(OLD_DDL.format(database=database, name=name, ttl=ttl))
            stored[name] = old_rows(name, seed)
            client.insert(
                f"{database}.{name}",
                [(*key, count) for key, count in stored[name].items()],
                column_names=OLD_COLUMNS.split(", "),
                settings={"max_partitions_per_insert_block": 0},
            )
    return stored


def migrate(settings: Settings, *args: str) -> str:
    """The documented command in a process of its own; its printed progress."""
    done = subprocess.run(
        [sys.executable, "-m", "heatmap_core.migrate", *args],
        cwd=ROOT,
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
