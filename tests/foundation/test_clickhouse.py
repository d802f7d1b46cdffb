"""ClickHouse schema and the access module, against the session's ClickHouse server."""

import multiprocessing
from datetime import UTC, datetime, timedelta

from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import HOURLY

# Written out: the TTLs and sort keys a deployment's tables must have (docs/ARCHITECTURE.md).
EXPECTED_TTL = {"hourly": "toIntervalDay(90)", "daily": "toIntervalYear(2)", "weekly": "toIntervalYear(5)"}
CELLS_KEY = "client_id, screen_id, event_type, device, bucket_start, cell_x, cell_y"
SCROLL_KEY = "client_id, screen_id, device, bucket_start, depth_row"
EXPECTED_TABLES = {
    **{f"heatmap_{grain}": (CELLS_KEY, ttl) for grain, ttl in EXPECTED_TTL.items()},
    **{f"heatmap_scroll_{grain}": (SCROLL_KEY, ttl) for grain, ttl in EXPECTED_TTL.items()},
}


def _tables(client, database):
    return {
        name: (partition_key, sorting_key, create)
        for name, partition_key, sorting_key, create in client.query(
            "SELECT name, partition_key, sorting_key, create_table_query FROM system.tables "
            "WHERE database = {db:String} AND name LIKE 'heatmap_%' ORDER BY name",
            parameters={"db": database},
        ).result_rows
    }


def test_schema_has_keys_and_ttl_and_is_idempotent(settings):
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        first = _tables(client, settings.clickhouse_database)
        apply_schema(client, settings.clickhouse_database)
        second = _tables(client, settings.clickhouse_database)
    assert first == second
    assert sorted(first) == sorted(EXPECTED_TABLES)
    for name, (partition_key, sorting_key, create) in first.items():
        assert partition_key == "toYYYYMMDD(bucket_start)"
        assert sorting_key == EXPECTED_TABLES[name][0]
        assert "ENGINE = MergeTree" in create
        assert f"TTL bucket_start + {EXPECTED_TABLES[name][1]}" in create


# Recent buckets: rows older than a table's TTL are dropped as they are written.
TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


def test_replace_bucket_swaps_exactly_one_hour(settings):
    hour = TODAY.replace(hour=10)
    neighbour = hour + timedelta(hours=1)
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        db = settings.clickhouse_database
        cell = ("acme", "home", "click", "desktop")
        replace_bucket(client, HOURLY, neighbour, rows=[(*cell, neighbour, 1, 1, 7)], database=db)
        replace_bucket(client, HOURLY, hour, rows=[(*cell, hour, 1, 1, 5), (*cell, hour, 2, 2, 3)], database=db)
        replace_bucket(client, HOURLY, hour, rows=[(*cell, hour, 9, 9, 1)], database=db)
        rows = client.query(
            f"SELECT toHour(bucket_start), cell_x, cell_y, count FROM `{db}`.heatmap_hourly ORDER BY 1, 2"
        ).result_rows
        staging_left = client.query(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name LIKE '_stage%'",
            parameters={"db": db},
        ).result_rows[0][0]
    assert rows == [(10, 9, 9, 1), (11, 1, 1, 7)]
    assert staging_left == 0


def _hammer(dsn: str, database: str, worker: int, rounds: int) -> None:
    from heatmap_core.settings import Settings

    settings = Settings(clickhouse_dsn=dsn, clickhouse_database=database)
    for i in range(rounds):
        with clickhouse(settings) as client:
            apply_schema(client, database)
            # Different days: writers of hours of one day are serialized by Dagster's pool.
            hour = TODAY - timedelta(days=worker)
            replace_bucket(
                client,
                HOURLY,
                hour,
                rows=[("acme", "home", "click", "desktop", hour, worker, i % 200, i + 1)],
                database=database,
            )


def test_two_processes_write_through_the_server_at_once(settings):
    """Both processes succeed and each one's last replacement is what stays."""
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_hammer, args=(settings.clickhouse_url, settings.clickhouse_database, w, 8))
        for w in (1, 2)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=300)
    assert [process.exitcode for process in workers] == [0, 0]
    with clickhouse(settings) as client:
        rows = client.query(
            f"SELECT dateDiff('day', bucket_start, {{today:DateTime('UTC')}}), count "
            f"FROM `{settings.clickhouse_database}`.heatmap_hourly ORDER BY 1",
            parameters={"today": TODAY.replace(tzinfo=None)},
        ).result_rows
    assert rows == [(1, 8), (2, 8)]
