"""Retention by TTL, enforced by ClickHouse's own TTL merge (not just present in the DDL)."""

import pytest

from heatmap_core.clickhouse import apply_schema, clickhouse
from heatmap_core.schema import ALL_TABLES, WRITE_LOG, WRITE_LOG_COLUMNS

# The retention the design fixes: 90 days of hours, 2 years of days, 5 years of weeks (cells and scroll alike).
RETENTION = {"hour": "INTERVAL 90 DAY", "day": "INTERVAL 2 YEAR", "week": "INTERVAL 5 YEAR"}
# A row's values by column; the position columns take ``at``, the measures ``measure``.
KEYS = {"client_id": "acme", "screen_id": "home_v1", "event_type": "click", "device": "mobile"}


def _row(table, bucket, at: int, measure: int) -> list:
    values = {**KEYS, "bucket_start": bucket, "cell_x": at, "cell_y": at, "depth_row": at}
    return [values.get(name, measure) for name in table.column_names]


@pytest.mark.parametrize("table", ALL_TABLES, ids=lambda table: table.name)
def test_a_ttl_merge_drops_buckets_past_retention_and_keeps_the_rest(settings, table):
    target = f"`{settings.clickhouse_database}`.`{table.name}`"
    measure = table.kind.measures[0]
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        expired, kept = client.query(
            f"SELECT toStartOfHour(now() - {RETENTION[table.grain]} - INTERVAL 1 DAY), "
            f"toStartOfHour(now() - {RETENTION[table.grain]} + INTERVAL 1 DAY)"
        ).result_rows[0]
        # Held back so the expired row is really stored before the merge that must remove it.
        client.command(f"SYSTEM STOP TTL MERGES {target}")
        client.insert(
            target.replace("`", ""),
            [_row(table, expired, 2, 5), _row(table, kept, 4, 7)],
            column_names=table.column_names,
        )
        stored = client.query(f"SELECT {measure} FROM {target} ORDER BY bucket_start").result_rows
        client.command(f"SYSTEM START TTL MERGES {target}")
        client.command(f"OPTIMIZE TABLE {target} FINAL")
        merged = client.query(f"SELECT bucket_start, {measure} FROM {target}").result_rows
    assert stored == [(5,), (7,)]
    assert [(b.replace(tzinfo=None), n) for b, n in merged] == [(kept.replace(tzinfo=None), 7)]


def test_the_write_log_keeps_a_row_as_long_as_the_weekly_tables_keep_its_bucket(settings):
    log = f"`{settings.clickhouse_database}`.`{WRITE_LOG}`"
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        # A month apart: each in a month partition (a part) of its own, which TTL drops whole.
        expired, kept = client.query(
            f"SELECT toStartOfDay(now() - {RETENTION['week']} - INTERVAL 40 DAY), "
            f"toStartOfDay(now() - {RETENTION['week']} + INTERVAL 40 DAY)"
        ).result_rows[0]
        client.command(f"SYSTEM STOP TTL MERGES {log}")
        client.insert(
            log.replace("`", ""),
            [("acme", "heatmap_weekly", bucket, bucket, bucket) for bucket in (expired, kept)],
            column_names=list(WRITE_LOG_COLUMNS),
        )
        stored = client.query(f"SELECT count() FROM {log}").result_rows[0][0]
        client.command(f"SYSTEM START TTL MERGES {log}")
        client.command(f"OPTIMIZE TABLE {log} FINAL")
        merged = client.query(f"SELECT bucket_start FROM {log}").result_rows
    assert stored == 2
    assert [b.replace(tzinfo=None) for (b,) in merged] == [kept.replace(tzinfo=None)]
