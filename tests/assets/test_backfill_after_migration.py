"""A backfill from the lake rebuilds the new dimensions of an hour migrated from before heatmap v2.

A database of the previous version (tests/foundation/previous_version.py: its DDL, its rows across
many hours) gains one more hour whose lake files are still there: the old tables hold that hour's
cells as the previous version counted them, every event of a cell in one count. The documented
migration (``python -m heatmap_core.migrate``) turns them into type and device ``unknown``; then
heatmap_hourly is materialized for that hour alone, in-process on the real lake, Spark and
ClickHouse. The hour must then hold exactly the lake's cells per event type and device (the types
of files written before v2, which never stored a device, under device ``unknown``; v2 files under
their devices) and the lake's scroll rows, each migrated cell split into those rows with its count
kept; every other migrated hour keeps its rows as migrated.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, timedelta

import msgspec

from heatmap_assets.partitions import hour_key
from heatmap_core.clickhouse import clickhouse
from heatmap_core.events import UNKNOWN_DEVICE
from heatmap_core.schema import HOURLY, SCROLL_HOURLY
from heatmap_core.timeutil import naive_utc
from tests.assets import lakedata
from tests.assets.runs import assert_passed, run, run_outcomes
from tests.foundation.previous_version import BUCKETS, OLD_COLUMNS, TODAY, create_old_database, migrate

# An hour none of the previous version's generated hours (BUCKETS) uses, inside the hourly TTL.
HOUR = (TODAY - timedelta(days=2) + timedelta(hours=5)).replace(tzinfo=UTC)
BUCKET = naive_utc(HOUR)  # as the tables' keys hold it
# Every old hour, the backfilled one included.
WINDOW = (HOUR - timedelta(days=5), HOUR + timedelta(days=5))


def per_cell(cells: dict[tuple, int]) -> Counter[tuple]:
    """{(client_id, screen_id, bucket_start, cell_x, cell_y): count}: the cells as the previous version
    counted them, every type and device of a cell in one count."""
    counts: Counter[tuple] = Counter()
    for (client_id, screen_id, _type, _device, bucket, cx, cy), count in cells.items():
        counts[(client_id, screen_id, bucket, cx, cy)] += count
    return counts


def migrated(old: dict[tuple, int]) -> dict[tuple, int]:
    """The migration's rows of the previous version's ``old`` rows: type and device unknown."""
    return {
        (client_id, screen_id, UNKNOWN_DEVICE, UNKNOWN_DEVICE, bucket, cx, cy): count
        for (client_id, screen_id, bucket, cx, cy), count in old.items()
    }


def test_backfill_after_migration_rebuilds_types_and_devices_of_an_old_hour(settings, spark, instance):
    assert BUCKET not in BUCKETS[HOURLY.name]
    # The hour's lake: a file written before v2 (types, no device, no view) and v2 files of two clients.
    before_v2 = lakedata.make_events(HOUR, "acme", "home_v1", 400, partition=0, offset=0, seed=11, views=30)
    lakedata.write_pre_v2_part(settings, HOUR, before_v2, "json")
    before_v2 = [msgspec.structs.replace(e, **dict.fromkeys(lakedata.V2_COLUMNS)) for e in before_v2]
    v2 = lakedata.make_events(HOUR, "acme", "home_v1", 600, partition=1, offset=0, seed=12, views=30)
    other_client = lakedata.make_events(HOUR, "globex", "home_v1", 300, partition=2, offset=0, seed=13, views=10)
    for events in (v2, other_client):
        lakedata.write_part(settings, HOUR, events)
    lake = before_v2 + v2 + other_client
    lake_cells = lakedata.expected_cells(lake, HOUR)
    lake_scroll = lakedata.scroll_rows(lakedata.scroll_views(lake, HOUR))
    assert {device for (_, _, _, device, *_) in lake_cells} == {"unknown", "desktop", "tablet", "mobile"}
    assert lake_scroll  # the v2 views scrolled

    # The previous version's database, with the hour as it counted it.
    old = create_old_database(settings)
    old_hour = per_cell(lake_cells)
    with clickhouse(settings) as client:
        client.insert(
            f"{settings.clickhouse_database}.{HOURLY.name}",
            [(*key, count) for key, count in old_hour.items()],
            column_names=OLD_COLUMNS.split(", "),
        )
    migrate(settings)
    other_hours = migrated(old[HOURLY.name])
    assert lakedata.table_cells(settings, HOURLY.name, *WINDOW) == {**other_hours, **migrated(old_hour)}
    assert lakedata.table_scroll(settings, SCROLL_HOURLY.name, *WINDOW) == {}

    result = run(settings, instance, "heatmap_hourly", partition_key=hour_key(HOUR))
    assert_passed(run_outcomes(result), "heatmap_hourly")

    cells = lakedata.table_cells(settings, HOURLY.name, *WINDOW)
    hour_cells = {key: n for key, n in cells.items() if key[4] == BUCKET}
    # The hour: exactly the lake's cells per type and device, its unknown rows replaced ...
    assert hour_cells == lake_cells
    # ... each migrated cell split into its types and devices, its count kept.
    assert per_cell(hour_cells) == old_hour
    # Every other hour as migrated; scroll rows only for the backfilled hour.
    assert {key: n for key, n in cells.items() if key[4] != BUCKET} == other_hours
    assert lakedata.table_scroll(settings, SCROLL_HOURLY.name, *WINDOW) == lake_scroll
