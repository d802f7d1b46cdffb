"""ClickHouse schema and the access module, against the session's ClickHouse server."""

import multiprocessing
from datetime import UTC, datetime, timedelta

from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import HOURLY, WEEKLY

# Written out: the TTLs and sort keys a deployment's tables must have (docs/ARCHITECTURE.md).
EXPECTED_TTL = {"hourly": "toIntervalDay(90)", "daily": "toIntervalYear(2)", "weekly": "toIntervalYear(5)"}
CELLS_KEY = "client_id, screen_id, event_type, device, bucket_start, cell_x, cell_y"
SCROLL_KEY = "client_id, screen_id, device, bucket_start, depth_row"
# One partition per bucket: an hour per partition in the hourly tables (a week's bucket_start is one day).
EXPECTED_PARTITION_KEYS = {
    "hourly": "(toYYYYMMDD(bucket_start) * 100) + toHour(bucket_start)",
    "daily": "toYYYYMMDD(bucket_start)",
    "weekly": "toYYYYMMDD(bucket_start)",
}
EXPECTED_TABLES = {
    **{f"heatmap_{grain}": (CELLS_KEY, ttl) for grain, ttl in EXPECTED_TTL.items()},
    **{f"heatmap_scroll_{grain}": (SCROLL_KEY, ttl) for grain, ttl in EXPECTED_TTL.items()},
}
# The write log: (partition key, sort key, engine, TTL); its rows live as long as the weekly buckets.
EXPECTED_WRITE_LOG = (
    "toYYYYMM(bucket_start)",
    "client_id, bucket_start, `table`",
    "ENGINE = ReplacingMergeTree(written_at)",
    "TTL bucket_start + toIntervalYear(5)",
)


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
    assert sorted(first) == sorted([*EXPECTED_TABLES, "heatmap_write_log"])
    partition_key, sorting_key, create = first.pop("heatmap_write_log")
    engine, ttl = EXPECTED_WRITE_LOG[2:]
    assert (partition_key, sorting_key, engine in create, ttl in create) == (*EXPECTED_WRITE_LOG[:2], True, True)
    assert "SETTINGS ttl_only_drop_parts = 1" in create
    for name, (partition_key, sorting_key, create) in first.items():
        assert partition_key == EXPECTED_PARTITION_KEYS[name.rsplit("_", 1)[-1]]
        assert sorting_key == EXPECTED_TABLES[name][0]
        assert "ENGINE = MergeTree" in create
        assert f"TTL bucket_start + {EXPECTED_TABLES[name][1]}" in create
        assert "SETTINGS ttl_only_drop_parts = 1" in create


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


def _log_since(client, database: str, since: datetime | None) -> tuple[list[tuple], datetime | None]:
    """The write log's (client, table, start, end) written after ``since``, and its newest written_at.

    Only rows newer than every earlier read: a merge keeps the newest row of a (client, bucket, table)."""
    rows = client.query(
        "SELECT client_id, table, bucket_start, bucket_end, written_at FROM {db:Identifier}.heatmap_write_log "
        "WHERE written_at > {since:DateTime64(3, 'UTC')} ORDER BY client_id, table",
        parameters={"db": database, "since": since or datetime(1970, 1, 2)},
    ).result_rows
    newest = max((row[-1] for row in rows), default=since)
    return [(c, t, b.replace(tzinfo=None), e.replace(tzinfo=None)) for c, t, b, e, _ in rows], newest


def test_replace_bucket_logs_the_clients_of_the_new_and_the_old_rows(settings):
    db = settings.clickhouse_database
    hour = TODAY.replace(hour=10, tzinfo=None)
    end = hour + timedelta(hours=1)

    def row(client_id: str) -> tuple:
        return (client_id, "home", "click", "desktop", hour, 1, 1, 5)

    with clickhouse(settings) as client:
        apply_schema(client, db)
        assert _log_since(client, db, None) == ([], None)
        write = replace_bucket(client, HOURLY, hour, rows=[row("acme"), row("globex")], database=db)
        assert write == (2, 2)  # the log's rows are not counted as the bucket's
        both, since = _log_since(client, db, None)
        assert both == [("acme", "heatmap_hourly", hour, end), ("globex", "heatmap_hourly", hour, end)]
        # acme's rows vanish: its view changed too.
        replace_bucket(client, HOURLY, hour, rows=[row("globex")], database=db)
        vanished, since = _log_since(client, db, since)
        assert vanished == both
        # Emptied: only globex had rows there.
        replace_bucket(client, HOURLY, hour, rows=[], database=db)
        emptied, since = _log_since(client, db, since)
        assert emptied == [("globex", "heatmap_hourly", hour, end)]
        # Empty before and after: nobody's view changed.
        replace_bucket(client, HOURLY, hour, rows=[], database=db)
        assert _log_since(client, db, since) == ([], since)


def test_creating_the_write_log_seeds_it_from_the_buckets_already_stored(settings):
    """A database written before the log existed: each client's bucket gets a row written when its part was."""
    db = settings.clickhouse_database
    hour = TODAY.replace(hour=10, tzinfo=None)
    sunday = (TODAY - timedelta(days=TODAY.isoweekday() % 7)).replace(tzinfo=None)
    with clickhouse(settings) as client:
        apply_schema(client, db)
        client.command(f"DROP TABLE `{db}`.heatmap_write_log SYNC")
        for table, bucket, clients in ((HOURLY, hour, ("acme", "globex")), (WEEKLY, sunday, ("acme",))):
            rows = [(c, "home", "click", "desktop", bucket, x, 1, 5) for c in clients for x in (1, 2)]
            client.insert(f"{db}.{table.name}", rows, column_names=table.column_names)
        parts = {
            table: modified
            for table, modified in client.query(
                "SELECT table, max(modification_time) FROM system.parts WHERE database = {db:String} AND active "
                "GROUP BY table",
                parameters={"db": db},
            ).result_rows
        }
        apply_schema(client, db)
        seeded = client.query(
            f"SELECT client_id, table, bucket_start, bucket_end, written_at FROM `{db}`.heatmap_write_log "
            "ORDER BY table, client_id"
        ).result_rows
        apply_schema(client, db)  # the log holds rows now: not seeded again
        again = client.query(f"SELECT count() FROM `{db}`.heatmap_write_log").result_rows[0][0]
        # A process that died after creating the log, before seeding it: the next start seeds it.
        client.command(f"TRUNCATE TABLE `{db}`.heatmap_write_log")
        apply_schema(client, db)
        reseeded = client.query(
            f"SELECT client_id, table, bucket_start, bucket_end, written_at FROM `{db}`.heatmap_write_log "
            "ORDER BY table, client_id"
        ).result_rows
    assert [(c, t, b.replace(tzinfo=None), e.replace(tzinfo=None), w) for c, t, b, e, w in seeded] == [
        ("acme", "heatmap_hourly", hour, hour + timedelta(hours=1), parts["heatmap_hourly"]),
        ("globex", "heatmap_hourly", hour, hour + timedelta(hours=1), parts["heatmap_hourly"]),
        ("acme", "heatmap_weekly", sunday, sunday + timedelta(weeks=1), parts["heatmap_weekly"]),
    ]
    assert again == len(seeded)
    assert reseeded == seeded


def _active_parts(client, database: str) -> dict[str, list[str]]:
    """{partition id: names of its active parts} of heatmap_hourly, from ClickHouse's system.parts."""
    rows = client.query(
        "SELECT partition_id, groupArray(name) FROM (SELECT partition_id, name FROM system.parts "
        "WHERE database = {db:String} AND table = 'heatmap_hourly' AND active ORDER BY name) GROUP BY partition_id",
        parameters={"db": database},
    ).result_rows
    return dict(rows)


def test_replacing_one_hour_writes_that_hours_rows_and_no_others(settings):
    """Hour 0 and hour 23 of a full day cost the same: ClickHouse's own count of the rows
    written (written_rows of each statement's X-ClickHouse-Summary) is the hour's rows,
    and the other 23 hours' parts are untouched."""
    db = settings.clickhouse_database
    per_hour, new_rows = 20_000, 5_000
    with clickhouse(settings) as client:
        apply_schema(client, db)
        # 24 hours of 20,000 cells each: 480,000 rows in the day.
        client.command(
            f"INSERT INTO `{db}`.heatmap_hourly SELECT 'acme', 'home', 'click', 'desktop', "
            "{day:DateTime('UTC')} + toIntervalHour(h.number), n % 100, intDiv(n, 100), 1 "
            "FROM numbers(24) AS h ARRAY JOIN range({cells:UInt32}) AS n",
            parameters={"day": TODAY.replace(tzinfo=None), "cells": per_hour},
        )
        written = {}
        for hour_of_day in (0, 23):
            hour = TODAY.replace(hour=hour_of_day)
            others = {p: names for p, names in _active_parts(client, db).items() if p != HOURLY.partition_id(hour)}
            rows = [("acme", "home", "click", "desktop", hour, n % 100, n // 100, 2) for n in range(new_rows)]
            written[hour_of_day] = replace_bucket(client, HOURLY, hour, rows=rows, database=db)
            after = _active_parts(client, db)
            assert {p: names for p, names in after.items() if p != HOURLY.partition_id(hour)} == others
        per_hour_stored = client.query(
            f"SELECT toHour(bucket_start), count(), sum(count) FROM `{db}`.heatmap_hourly GROUP BY 1 ORDER BY 1"
        ).result_rows
    print(f"rows written by ClickHouse: hour 0 {written[0].written_rows}, hour 23 {written[23].written_rows}")
    assert written == {0: (new_rows, new_rows), 23: (new_rows, new_rows)}
    assert per_hour_stored == [
        (h, new_rows, 2 * new_rows) if h in (0, 23) else (h, per_hour, per_hour) for h in range(24)
    ]


def _hammer(dsn: str, database: str, worker: int, rounds: int) -> None:
    from heatmap_core.settings import Settings

    settings = Settings(clickhouse_dsn=dsn, clickhouse_database=database)
    for i in range(rounds):
        with clickhouse(settings) as client:
            apply_schema(client, database)
            # Different hours of one day: each is its own partition, so the writers never meet.
            hour = TODAY + timedelta(hours=worker)
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
            f"SELECT dateDiff('hour', {{today:DateTime('UTC')}}, bucket_start), count "
            f"FROM `{settings.clickhouse_database}`.heatmap_hourly ORDER BY 1",
            parameters={"today": TODAY.replace(tzinfo=None)},
        ).result_rows
    assert rows == [(1, 8), (2, 8)]
