"""The migration from a database of the previous version, run exactly as documented
(``python -m heatmap_core.migrate``, a process of its own, against the session's ClickHouse server).

"A database of the previous version" is written out in tests/foundation/previous_version.py with
the DDL that version created, not generated from today's schema, so it stays what existing
deployments hold whatever the schema becomes.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from heatmap_core.clickhouse import OutdatedSchema, apply_schema, clickhouse
from heatmap_core.schema import CELLS, SCROLL, SCROLL_TABLES, TABLES, WRITE_LOG
from tests.foundation.previous_version import BUCKETS, OLD_TTL, create_old_database, migrate


@pytest.fixture
def old_database(settings) -> dict[str, dict[tuple, int]]:
    """The settings' database as the previous version left it: three cell tables, no scroll tables."""
    return create_old_database(settings)


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
        assert f"{old_description(name)}: {len(rows)} rows, {sum(rows.values())} events" in dry
        assert f"{name}: would copy them into {name}_migrating with event_type, device 'unknown', verify" in dry
    for name in (*(table.name for table in SCROLL_TABLES.values()), WRITE_LOG):
        assert f"{name}: would create" in dry
    assert "heatmap_hourly_migrating: left by an interrupted run, would drop" in dry
    with clickhouse(settings) as client:
        assert tables(client, database) == before

    out = migrate(settings)
    assert "heatmap_hourly_migrating: left by an interrupted run, dropped" in out
    for name, rows in old_database.items():
        assert (
            f"{name}: copied into {name}_migrating with event_type, device 'unknown', verified: "
            f"{len(rows)} rows, {sum(rows.values())} events"
        ) in out
        assert f"{name}: swapped in (EXCHANGE TABLES), old table dropped" in out
    for name in (*(table.name for table in SCROLL_TABLES.values()), WRITE_LOG):
        assert f"{name}: created" in out
    assert out.splitlines()[-1] == "changed 8 table(s)"

    with clickhouse(settings) as client:
        after = tables(client, database)
        assert sorted(after) == sorted(after_order())
        # The write log, seeded from the migrated buckets: each client's buckets, each once.
        logged = client.query(
            f"SELECT table, client_id, bucket_start, bucket_end - bucket_start FROM `{database}`.`{WRITE_LOG}`"
        ).result_rows
        assert sorted((t, c, b.replace(tzinfo=None), length) for t, c, b, length in logged) == sorted(
            {
                (table.name, client_id, bucket, int(table.length.total_seconds()))
                for table in TABLES.values()
                for client_id, _, bucket, _, _ in old_database[table.name]
            }
        )
        for table in TABLES.values():
            assert after[table.name][0] == ", ".join(CELLS.key)
            assert v2_rows(client, database, table.name) == {
                (client_id, screen_id, "unknown", "unknown", bucket, x, y): count
                for (client_id, screen_id, bucket, x, y), count in old_database[table.name].items()
            }
        for table in SCROLL_TABLES.values():
            assert after[table.name][0] == ", ".join(SCROLL.key)
        assert partition_keys(client, database) == EXPECTED_PARTITION_KEYS
        apply_schema(client, database)  # an up-to-date database: accepted, and nothing to create

    again = migrate(settings)
    assert again.splitlines()[1:] == [f"{name}: up to date" for name in after_order()] + ["nothing to do: up to date"]
    with clickhouse(settings) as client:
        assert tables(client, database) == after
        for table in TABLES.values():
            assert sum(v2_rows(client, database, table.name).values()) == sum(old_database[table.name].values())


OLD_SORT = "sorted by (client_id, screen_id, bucket_start, cell_x, cell_y), not (client_id, screen_id, event_type, device, bucket_start, cell_x, cell_y)"
HOUR_PARTITION = "(toYYYYMMDD(bucket_start) * 100) + toHour(bucket_start)"
DAY_PARTITIONED = f"partitioned by toYYYYMMDD(bucket_start), not {HOUR_PARTITION}"
EXPECTED_PARTITION_KEYS = {
    "heatmap_hourly": HOUR_PARTITION,
    "heatmap_scroll_hourly": HOUR_PARTITION,
    **{name: "toYYYYMMDD(bucket_start)" for name in ("heatmap_daily", "heatmap_weekly")},
    **{name: "toYYYYMMDD(bucket_start)" for name in ("heatmap_scroll_daily", "heatmap_scroll_weekly")},
    WRITE_LOG: "toYYYYMM(bucket_start)",
}


def old_description(name: str) -> str:
    """How the command and apply_schema describe a table of the version before v2."""
    return f"{name} lacks event_type, device; {OLD_SORT}" + (f"; {DAY_PARTITIONED}" if name == "heatmap_hourly" else "")


def partition_keys(client, database: str) -> dict[str, str]:
    rows = client.query(
        "SELECT name, partition_key FROM system.tables WHERE database = {db:String}", parameters={"db": database}
    ).result_rows
    return dict(rows)


def after_order() -> list[str]:
    """The order the command reports tables in: cells then scroll, hour to week, then the write log."""
    return [*(table.name for table in (*TABLES.values(), *SCROLL_TABLES.values())), WRITE_LOG]


def test_apply_schema_refuses_a_database_of_the_previous_version(settings, old_database):
    database = settings.clickhouse_database
    with clickhouse(settings) as client:
        before = tables(client, database)
        with pytest.raises(OutdatedSchema) as refused:
            apply_schema(client, database)
        assert tables(client, database) == before  # nothing created beside the old tables
    assert str(refused.value) == (
        f"ClickHouse database {database!r} holds tables of an earlier schema "
        f"({'; '.join(old_description(name) for name in OLD_TTL)}). Upgrade it, keeping every row, with "
        "`python -m heatmap_core.migrate` after stopping the Dagster daemon "
        "(docs/ARCHITECTURE.md, Migration)."
    )


# The hourly tables as heatmap v2 (issue 12) created them: partitioned by day, not by hour.
V2_DAY_PARTITIONED_DDL = {
    "heatmap_hourly": """CREATE TABLE `{database}`.`heatmap_hourly` (
  `client_id` LowCardinality(String),
  `screen_id` LowCardinality(String),
  `event_type` LowCardinality(String),
  `device` LowCardinality(String),
  `bucket_start` DateTime('UTC'),
  `cell_x` UInt8,
  `cell_y` UInt8,
  `count` UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(bucket_start)
ORDER BY (client_id, screen_id, event_type, device, bucket_start, cell_x, cell_y)
TTL bucket_start + INTERVAL 90 DAY""",
    "heatmap_scroll_hourly": """CREATE TABLE `{database}`.`heatmap_scroll_hourly` (
  `client_id` LowCardinality(String),
  `screen_id` LowCardinality(String),
  `device` LowCardinality(String),
  `bucket_start` DateTime('UTC'),
  `depth_row` UInt8,
  `reached` UInt64,
  `folds` UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(bucket_start)
ORDER BY (client_id, screen_id, device, bucket_start, depth_row)
TTL bucket_start + INTERVAL 90 DAY""",
}


def test_day_partitioned_hourly_tables_are_rebuilt_by_hour_keeping_every_row(settings):
    database = settings.clickhouse_database
    hours = BUCKETS["heatmap_hourly"]
    cells = [("acme", "home", "click", "desktop", hour, x, 7, x + 1) for hour in hours for x in range(5)]
    scroll = [("acme", "home", "mobile", hour, row, 10 - row, row % 2) for hour in hours for row in range(4)]
    with clickhouse(settings) as client:
        client.command(f"CREATE DATABASE `{database}`")
        for ddl in V2_DAY_PARTITIONED_DDL.values():
            client.command(ddl.format(database=database))
        client.insert(f"{database}.heatmap_hourly", cells, column_names=CELLS.column_names)
        client.insert(f"{database}.heatmap_scroll_hourly", scroll, column_names=SCROLL.column_names)
        with pytest.raises(OutdatedSchema) as refused:
            apply_schema(client, database)
    assert str(refused.value).startswith(
        f"ClickHouse database {database!r} holds tables of an earlier schema "
        f"(heatmap_hourly {DAY_PARTITIONED}; heatmap_scroll_hourly {DAY_PARTITIONED})."
    )

    out = migrate(settings)
    assert f"heatmap_hourly {DAY_PARTITIONED}: {len(cells)} rows, {sum(c[-1] for c in cells)} events" in out
    reached, folds = sum(r[-2] for r in scroll), sum(r[-1] for r in scroll)
    assert f"heatmap_scroll_hourly {DAY_PARTITIONED}: {len(scroll)} rows, {reached} reached, {folds} folds" in out
    assert (
        f"heatmap_scroll_hourly: copied into heatmap_scroll_hourly_migrating, verified: "
        f"{len(scroll)} rows, {reached} reached, {folds} folds"
    ) in out
    assert out.splitlines()[-1] == "changed 7 table(s)"  # the two rebuilt, the four and the write log created

    with clickhouse(settings) as client:
        assert partition_keys(client, database) == EXPECTED_PARTITION_KEYS
        parts = client.query(
            "SELECT DISTINCT partition_id FROM system.parts WHERE database = {db:String} "
            "AND table = 'heatmap_hourly' AND active ORDER BY partition_id",
            parameters={"db": database},
        ).result_rows
        assert [p for (p,) in parts] == sorted(f"{hour:%Y%m%d%H}" for hour in hours)
        assert sorted(v2_rows(client, database, "heatmap_hourly").items()) == sorted(
            (tuple(c[:-1]), c[-1]) for c in cells
        )
        stored = client.query(f"SELECT {', '.join(SCROLL.column_names)} FROM `{database}`.heatmap_scroll_hourly")
        assert sorted(
            tuple(v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in row) for row in stored.result_rows
        ) == sorted(scroll)
        apply_schema(client, database)


# A write log of another shape than today's: no bucket_end, sorted without the table.
OTHER_WRITE_LOG_DDL = """CREATE TABLE `{database}`.`heatmap_write_log` (
  `client_id` String,
  `table` LowCardinality(String),
  `bucket_start` DateTime('UTC'),
  `written_at` DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(written_at)
PARTITION BY toYYYYMM(bucket_start)
ORDER BY (client_id, bucket_start)"""
OTHER_WRITE_LOG = (
    "heatmap_write_log lacks bucket_end; sorted by (client_id, bucket_start), not (client_id, bucket_start, `table`)"
)


def test_a_write_log_of_another_shape_is_refused_then_rebuilt_from_the_buckets(settings):
    database = settings.clickhouse_database
    hour = BUCKETS["heatmap_hourly"][0]
    cells = [(client_id, "home", "click", "desktop", hour, 3, 7, 2) for client_id in ("acme", "globex")]
    with clickhouse(settings) as client:
        apply_schema(client, database)
        client.insert(f"{database}.heatmap_hourly", cells, column_names=CELLS.column_names)
        client.command(f"DROP TABLE `{database}`.`{WRITE_LOG}` SYNC")
        client.command(OTHER_WRITE_LOG_DDL.format(database=database))
        client.command(
            f"INSERT INTO `{database}`.`{WRITE_LOG}` VALUES ('acme', 'heatmap_hourly', '2020-01-01', now64(3))"
        )
        with pytest.raises(OutdatedSchema) as refused:
            apply_schema(client, database)
    assert f"holds tables of an earlier schema ({OTHER_WRITE_LOG})." in str(refused.value)

    assert f"{OTHER_WRITE_LOG}: would drop it, to be seeded again" in migrate(settings, "--dry-run")
    out = migrate(settings)
    assert f"{OTHER_WRITE_LOG}: dropped, to be seeded again from the stored buckets" in out
    assert f"{WRITE_LOG}: created again, seeded from the stored buckets" in out
    assert out.splitlines()[-1] == "changed 1 table(s)"
    with clickhouse(settings) as client:
        logged = client.query(
            f"SELECT table, client_id, bucket_start, bucket_end - bucket_start FROM `{database}`.`{WRITE_LOG}`"
        ).result_rows
        assert sorted((t, c, b.replace(tzinfo=None), length) for t, c, b, length in logged) == [
            ("heatmap_hourly", client_id, hour, 3600) for client_id in ("acme", "globex")
        ]
        apply_schema(client, database)  # today's shape: accepted
    assert migrate(settings).splitlines()[-1] == "nothing to do: up to date"
