"""Retention by TTL, enforced by ClickHouse's own TTL merge (not just present in the DDL)."""

import pytest

from heatmap_core.clickhouse import apply_schema, clickhouse
from heatmap_core.schema import COLUMN_NAMES

# The retention the design fixes: 90 days of hours, 2 years of days, 5 years of weeks.
RETENTION = {
    "heatmap_hourly": "INTERVAL 90 DAY",
    "heatmap_daily": "INTERVAL 2 YEAR",
    "heatmap_weekly": "INTERVAL 5 YEAR",
}


@pytest.mark.parametrize("table", sorted(RETENTION))
def test_a_ttl_merge_drops_buckets_past_retention_and_keeps_the_rest(settings, table):
    target = f"`{settings.clickhouse_database}`.`{table}`"
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        expired, kept = client.query(
            f"SELECT toStartOfHour(now() - {RETENTION[table]} - INTERVAL 1 DAY), "
            f"toStartOfHour(now() - {RETENTION[table]} + INTERVAL 1 DAY)"
        ).result_rows[0]
        # Held back so the expired row is really stored before the merge that must remove it.
        client.command(f"SYSTEM STOP TTL MERGES {target}")
        client.insert(
            target.replace("`", ""),
            [("acme", "home_v1", expired, 1, 2, 5), ("acme", "home_v1", kept, 3, 4, 7)],
            column_names=COLUMN_NAMES,
        )
        stored = client.query(f"SELECT count FROM {target} ORDER BY bucket_start").result_rows
        client.command(f"SYSTEM START TTL MERGES {target}")
        client.command(f"OPTIMIZE TABLE {target} FINAL")
        merged = client.query(f"SELECT bucket_start, cell_x, cell_y, count FROM {target}").result_rows
    assert stored == [(5,), (7,)]
    assert [(b.replace(tzinfo=None), x, y, n) for b, x, y, n in merged] == [(kept.replace(tzinfo=None), 3, 4, 7)]
