"""Retention by TTL, enforced by ClickHouse's own TTL merge (not just present in the DDL)."""

from collections.abc import Callable, Sequence
from datetime import datetime

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


def _ttl_merge(
    settings,
    name: str,
    columns: list[str],
    value: str,
    retention: str,
    margin: str,
    row: Callable[[datetime, int], list],
) -> tuple[Sequence[Sequence], list[tuple], datetime]:
    """A row ``row(bucket_start, n)`` of a bucket ``margin`` past ``retention`` (n = 5) and one ``margin``
    inside it (n = 7), inserted with TTL merges held back: the (``value``,) rows stored, the
    (bucket_start, ``value``) rows left by a TTL merge, and the kept row's bucket_start."""
    target = f"`{settings.clickhouse_database}`.`{name}`"
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        expired, kept = client.query(
            f"SELECT toStartOfHour(now() - {retention} - INTERVAL {margin}), "
            f"toStartOfHour(now() - {retention} + INTERVAL {margin})"
        ).result_rows[0]
        # Held back so the expired row is really stored before the merge that must remove it.
        client.command(f"SYSTEM STOP TTL MERGES {target}")
        client.insert(target.replace("`", ""), [row(expired, 5), row(kept, 7)], column_names=columns)
        stored = client.query(f"SELECT {value} FROM {target} ORDER BY bucket_start").result_rows
        client.command(f"SYSTEM START TTL MERGES {target}")
        client.command(f"OPTIMIZE TABLE {target} FINAL")
        merged = client.query(f"SELECT bucket_start, {value} FROM {target}").result_rows
    return stored, [(b.replace(tzinfo=None), n) for b, n in merged], kept.replace(tzinfo=None)


@pytest.mark.parametrize("table", ALL_TABLES, ids=lambda table: table.name)
def test_a_ttl_merge_drops_buckets_past_retention_and_keeps_the_rest(settings, table):
    def row(bucket: datetime, n: int) -> list:
        return _row(table, bucket, n, n)

    measure = table.kind.measures[0]
    stored, merged, kept = _ttl_merge(
        settings, table.name, table.column_names, measure, RETENTION[table.grain], "1 DAY", row
    )
    assert stored == [(5,), (7,)]
    assert merged == [(kept, 7)]


def test_the_write_log_keeps_a_row_as_long_as_the_weekly_tables_keep_its_bucket(settings):
    def row(bucket: datetime, n: int) -> list:
        return [f"client{n}", "heatmap_weekly", bucket, bucket, bucket]

    # 40 days from the limit: each row in a month partition (a part) of its own, which TTL drops whole.
    stored, merged, kept = _ttl_merge(
        settings, WRITE_LOG, list(WRITE_LOG_COLUMNS), "client_id", RETENTION["week"], "40 DAY", row
    )
    assert stored == [("client5",), ("client7",)]
    assert merged == [(kept, "client7")]
