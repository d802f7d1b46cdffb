"""The daily and weekly rollups of both table kinds, exact against ground truth.

Hourly rows are written straight into ClickHouse as the hourly asset writes
them (cells per event type and device, scroll reach per device and depth row,
from generated v2 page views and v1 lines), so the rollups are tested on their
own; the real daily and weekly assets then run in process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from heatmap_assets.partitions import day_key
from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import DAILY, HOURLY, SCROLL_DAILY, SCROLL_HOURLY
from tests.assets import lakedata
from tests.assets.runs import assert_passed, run, run_outcomes
from tests.conftest import day_of, week_of


def regrouped(views: dict[tuple, list[tuple[int, int]]], bucket_of) -> dict[tuple, list[tuple[int, int]]]:
    """Each hour's views under the coarser bucket: a day or week counts every view of each of its hours."""
    out: dict[tuple, list[tuple[int, int]]] = {}
    for (client_id, screen_id, device, bucket), per_view in views.items():
        out.setdefault((client_id, screen_id, device, bucket_of(bucket)), []).extend(per_view)
    return out


def naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def test_daily_and_weekly_sum_every_dimension_and_scroll_reach(settings, instance):
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    saturday = today - timedelta(days=(today.weekday() - 5) % 7 or 7)
    # Friday and Saturday in one week, Sunday in the next.
    hours = [saturday + timedelta(hours=h) for h in (-2, 10, 23, 24, 29)]
    database = settings.clickhouse_database
    cells: dict[tuple, int] = {}
    views: dict[tuple, list[tuple[int, int]]] = {}
    with clickhouse(settings) as client:
        apply_schema(client, database)
        # A stale Saturday bucket (a device the hours no longer hold): replaced, not added to.
        stale = ("acme", "home_v1", "click", "smart-tv", saturday, 1, 1, 99)
        replace_bucket(client, DAILY, saturday, rows=[stale], database=database)
        stale_scroll = ("acme", "home_v1", "smart-tv", saturday, 0, 9, 9)
        replace_bucket(client, SCROLL_DAILY, saturday, rows=[stale_scroll], database=database)
        for i, hour in enumerate(hours):
            events = lakedata.make_events(hour, "acme", "home_v1", 150, partition=i, offset=0, seed=70 + i, views=6)
            events += lakedata.make_events(hour, "acme", "pricing", 20, partition=i, offset=500, seed=80 + i)
            hour_cells, hour_views = lakedata.expected_cells(events, hour), lakedata.scroll_views(events, hour)
            replace_bucket(client, HOURLY, hour, rows=[(*k, n) for k, n in hour_cells.items()], database=database)
            rows = [(*k, *m) for k, m in lakedata.scroll_rows(hour_views).items()]
            replace_bucket(client, SCROLL_HOURLY, hour, rows=rows, database=database)
            cells.update(hour_cells)
            views.update(hour_views)

    days = sorted({day_of(naive(hour)) for hour in hours})
    for day in days:
        result = run(settings, instance, "heatmap_daily", day_key(day))
        assert_passed(run_outcomes(result), "heatmap_daily")
        if day == naive(saturday):
            saturday_meta = result.asset_materializations_for_node("heatmap_daily")[0].metadata
    for week in sorted({week_of(day) for day in days}):
        assert_passed(run_outcomes(run(settings, instance, "heatmap_weekly", day_key(week))), "heatmap_weekly")

    span = (saturday - timedelta(days=7), saturday + timedelta(days=8))
    daily_cells = lakedata.table_cells(settings, "heatmap_daily", *span)
    daily_scroll = lakedata.table_scroll(settings, "heatmap_scroll_daily", *span)
    assert daily_cells == lakedata.rollup(cells, day_of)
    assert daily_scroll == lakedata.scroll_rows(regrouped(views, day_of))
    weekly_cells = lakedata.table_cells(settings, "heatmap_weekly", *span)
    assert weekly_cells == lakedata.rollup(cells, week_of)
    weekly_scroll = lakedata.table_scroll(settings, "heatmap_scroll_weekly", *span)
    assert weekly_scroll == lakedata.scroll_rows(regrouped(views, week_of))
    # Every dimension survives: each v2 type and device, and v1's unknown device.
    assert {(k[2], k[3]) for k in weekly_cells} >= {
        ("mousemove", "unknown"),
        *((t, d) for t in ("mousemove", "click", "rageclick", "scroll") for d in ("desktop", "tablet", "mobile")),
    }
    assert sum(weekly_cells.values()) == 5 * (150 + 20)

    saturday_cells = {k: n for k, n in cells.items() if day_of(k[4]) == naive(saturday)}
    saturday_views = {k: v for k, v in views.items() if day_of(k[3]) == naive(saturday)}
    saturday_scroll = lakedata.scroll_rows(saturday_views)
    scrolled = sum(len(per_view) for per_view in saturday_views.values())
    assert scrolled > 0
    assert saturday_meta["events_in"].value == sum(saturday_cells.values()) == 2 * 170
    assert saturday_meta["views"].value == scrolled
    assert saturday_meta["cells_out"].value == len(lakedata.rollup(saturday_cells, day_of))
    assert saturday_meta["scroll_rows_out"].value == len(lakedata.scroll_rows(regrouped(saturday_views, day_of)))
    assert saturday_meta["per_table"].value == {
        f"{database}.heatmap_daily": {
            "source": f"{database}.heatmap_hourly",
            "upstream_rows": len(saturday_cells),
            "rows_written": saturday_meta["cells_out"].value,
            "count": 2 * 170,
        },
        f"{database}.heatmap_scroll_daily": {
            "source": f"{database}.heatmap_scroll_hourly",
            "upstream_rows": len(saturday_scroll),
            "rows_written": saturday_meta["scroll_rows_out"].value,
            "reached": sum(reached for reached, _ in saturday_scroll.values()),
            "folds": scrolled,
            "views": scrolled,
        },
    }

    # Re-running a day replaces its buckets with the same rows.
    assert_passed(run_outcomes(run(settings, instance, "heatmap_daily", day_key(saturday))), "heatmap_daily")
    assert lakedata.table_cells(settings, "heatmap_daily", *span) == daily_cells
    assert lakedata.table_scroll(settings, "heatmap_scroll_daily", *span) == daily_scroll
