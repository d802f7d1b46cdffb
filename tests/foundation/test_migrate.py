"""The migration from a database of the previous version, run exactly as documented
(``python -m heatmap_core.migrate``, a process of its own, against the session's ClickHouse server).

"A database of the previous version" is written out below with the DDL that
version created, not generated from today's schema, so it stays what existing
deployments hold whatever the schema becomes.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from heatmap_core.clickhouse import OutdatedSchema, apply_schema, clickhouse
from heatmap_core.schema import CELLS, SCROLL, SCROLL_TABLES, TABLES
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


@pytest.fixture
def old_database(settings) -> dict[str, dict[tuple, int]]:
    """The settings' database as the previous version left it: three cell tables, no scroll tables."""
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


def migrate(settings, *args: str) -> str:
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


def tables(client, database: str) -> dict[str, tuple[str, str]]:
    """{table: (sorting key, create statement)} of the database."""
    rows = client.query(
        "SELECT name, sorting_key, create_table_query FROM system.tables WHERE database = {db:String}",
        parameters={"db": database},
    ).result_rows
    return {name: (key, create) for name, key, create in rows}


def v2_rows(client, database: str, name: str) -> dict[tuple, int]:
    rows = client.query(f"SELECT {', '.join(CELLS.column_names)} FROM `{database}`.`{name}`").result_rows
    found: dict[tuple, int] = {}
    for *key, count in rows:
        key = tuple(part.replace(tzinfo=None) if isinstance(part, datetime) else part for part in key)
        assert key not in found, f"duplicate row {key}"
        found[key] = count
    return found


def test_migration_keeps_every_count_and_a_second_run_changes_nothing(settings, old_database):
    database = settings.clickhouse_database
    with clickhouse(settings) as client:
        # A copy an interrupted run left behind: dropped, never swapped in.
        client.command(f"CREATE TABLE `{database}`.heatmap_hourly_migrating AS `{database}`.heatmap_hourly")
        client.command(f"INSERT INTO `{database}`.heatmap_hourly_migrating SELECT * FROM `{database}`.heatmap_hourly")
        before = tables(client, database)

    dry = migrate(settings, "--dry-run")
    for name, rows in old_database.items():
        assert f"{name}: before v2 (no event_type, device): {len(rows)} rows, {sum(rows.values())} events" in dry
        assert f"{name}: would copy them into {name}_migrating" in dry
    for table in SCROLL_TABLES.values():
        assert f"{table.name}: would create" in dry
    assert "heatmap_hourly_migrating: left by an interrupted run, would drop" in dry
    with clickhouse(settings) as client:
        assert tables(client, database) == before

    out = migrate(settings)
    assert "heatmap_hourly_migrating: left by an interrupted run, dropped" in out
    for name, rows in old_database.items():
        assert f"{name}: copied into {name}_migrating, verified: {len(rows)} rows, {sum(rows.values())} events" in out
        assert f"{name}: swapped in (EXCHANGE TABLES), old table dropped" in out
    for table in SCROLL_TABLES.values():
        assert f"{table.name}: created" in out
    assert out.splitlines()[-1] == "changed 7 table(s)"

    with clickhouse(settings) as client:
        after = tables(client, database)
        assert sorted(after) == sorted(table.name for table in (*TABLES.values(), *SCROLL_TABLES.values()))
        for table in TABLES.values():
            assert after[table.name][0] == ", ".join(CELLS.key)
            assert v2_rows(client, database, table.name) == {
                (client_id, screen_id, "unknown", "unknown", bucket, x, y): count
                for (client_id, screen_id, bucket, x, y), count in old_database[table.name].items()
            }
        for table in SCROLL_TABLES.values():
            assert after[table.name][0] == ", ".join(SCROLL.key)
        apply_schema(client, database)  # a v2 database: accepted, and nothing to create

    again = migrate(settings)
    assert again.splitlines()[1:] == [f"{name}: already v2" for name in after_order()] + ["nothing to do: v2"]
    with clickhouse(settings) as client:
        assert tables(client, database) == after
        for table in TABLES.values():
            assert sum(v2_rows(client, database, table.name).values()) == sum(old_database[table.name].values())


def after_order() -> list[str]:
    """The order the command reports tables in: cells then scroll, hour to week."""
    return [table.name for table in (*TABLES.values(), *SCROLL_TABLES.values())]


def test_apply_schema_refuses_a_database_of_the_previous_version(settings, old_database):
    database = settings.clickhouse_database
    with clickhouse(settings) as client:
        before = tables(client, database)
        with pytest.raises(OutdatedSchema) as refused:
            apply_schema(client, database)
        assert tables(client, database) == before  # nothing created beside the old tables
    assert str(refused.value) == (
        f"ClickHouse database {database!r} was created before heatmap v2 "
        "(heatmap_hourly lacks event_type, device; heatmap_daily lacks event_type, device; "
        "heatmap_weekly lacks event_type, device). Upgrade it, keeping every row, with "
        "`python -m heatmap_core.migrate` after stopping the Dagster daemon "
        "(docs/ARCHITECTURE.md, Migration from before v2)."
    )
