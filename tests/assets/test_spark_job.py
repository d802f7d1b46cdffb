"""The hourly Spark transform on small in-memory frames: cells per type and device, scroll reach per depth row,
both from ``hour_rows``' one frame (each row tagged with its kind and hour).

Every expected figure below is written out by hand from the lines above it.
"""

from __future__ import annotations

from heatmap_assets.spark_job import HOUR, READ_COLUMNS, counted_lines, hour_rows
from heatmap_core.grid import GRID_H
from heatmap_core.lake import STAGING_HOUR_COLUMN, STAGING_KIND_COLUMN
from heatmap_core.lake_schema import spark_schema
from heatmap_core.schema import CELLS, SCROLL

H1 = "2026-11-20 10"
H2 = "2026-11-20 11"


def line(hour, batch, index, *, y=0.5, x=0.5, type="scroll", device=None, view=None, vh=None, sh=None, screen="home"):
    values = {
        "client_id": "acme",
        "screen_id": screen,
        "x_norm": x,
        "y_norm": y,
        "batch_id": batch,
        "batch_index": index,
        "event_type": type,
        "device": device,
        "view_id": view,
        "viewport_h": vh,
        "screen_h": sh,
        HOUR: hour,
    }
    return tuple(values[name] for name in (*READ_COLUMNS, HOUR))


def rows_of(spark, lines, kind):
    """``hour_rows`` of the lines, the rows of one kind."""
    schema = spark_schema(READ_COLUMNS).add(HOUR, "string")
    rows = hour_rows(counted_lines(spark.createDataFrame(lines, schema))).collect()
    return [row for row in rows if row[STAGING_KIND_COLUMN] == kind.name]


def reach(first_rows: int, value: int) -> dict[int, int]:
    return dict.fromkeys(range(first_rows), value)


def test_scroll_reach_counts_each_view_once_at_its_deepest_row(spark):
    desktop = {"device": "desktop", "vh": 800, "sh": 2000}  # fold 0.4 -> row 80
    phone = {"device": "mobile", "vh": 700, "sh": 3500}  # fold 0.2 -> row 40
    tall = {"device": "mobile", "vh": 5000, "sh": 1000}  # viewport taller than the screen: fold row 199
    lines = [
        # view-a (desktop), two batches: rows 80, 125, then 110; the second line of batch 1 repeated.
        line(H1, "b1", 0, y=0.4, view="view-a", **desktop),
        line(H1, "b1", 1, y=0.625, view="view-a", **desktop),
        line(H1, "b1", 1, y=0.625, view="view-a", **desktop),
        line(H1, "b2", 0, y=0.55, view="view-a", **desktop),
        # view-b (phone) in two hours: row 40 in H1, row 180 in H2.
        line(H1, "b3", 0, y=0.2, view="view-b", **phone),
        line(H2, "b4", 0, y=0.9, view="view-b", **phone),
        # view-c: scrolled to the very bottom.
        line(H1, "b5", 0, y=1.0, view="view-c", **tall),
        # view-d: clicks and moves only, no scroll: no view counted.
        line(H1, "b6", 0, y=0.95, type="click", view="view-d", **desktop),
        line(H1, "b6", 1, y=0.97, type="mousemove", view="view-d", **desktop),
        # A line written before v2: a scroll with no view and no device adds nothing to reach.
        line(H1, "b7", 0, y=0.7),
        # The same view id on another screen is another view.
        line(H1, "b8", 0, y=0.1, view="view-a", screen="pricing", **desktop),
    ]
    got: dict[tuple[str, str, str], dict[int, tuple[int, int]]] = {}
    for row in rows_of(spark, lines, SCROLL):
        got.setdefault((row[STAGING_HOUR_COLUMN], row.screen_id, row.device), {})[row.depth_row] = (
            row.reached,
            row.folds,
        )

    def table(reached: dict[int, int], folds: dict[int, int]) -> dict[int, tuple[int, int]]:
        return {r: (reached.get(r, 0), folds.get(r, 0)) for r in reached.keys() | folds.keys()}

    assert got == {
        ("2026112010", "home", "desktop"): table(reach(126, 1), {80: 1}),
        ("2026112010", "home", "mobile"): table({**reach(200, 1), **reach(41, 2)}, {40: 1, 199: 1}),
        ("2026112011", "home", "mobile"): table(reach(181, 1), {40: 1}),
        ("2026112010", "pricing", "desktop"): table(reach(21, 1), {80: 1}),
    }


def test_fold_below_the_deepest_scroll_and_a_view_without_sizes(spark):
    """A fold deeper than the view's deepest scroll still lands in its row; a view with no sizes has no fold."""
    lines = [
        line(H1, "b1", 0, y=0.1, view="view-e", device="tablet", vh=900, sh=1000),  # deepest 20, fold 0.9 -> 180
        line(H1, "b2", 0, y=0.05, view="view-f", device="tablet"),  # deepest 10, no fold
    ]
    got = {row.depth_row: (row.reached, row.folds) for row in rows_of(spark, lines, SCROLL)}
    expected = {r: (2 if r <= 10 else 1, 0) for r in range(21)}
    expected[180] = (0, 1)
    assert got == expected


def test_cells_per_type_and_device_with_old_lines_unknown(spark):
    lines = [
        line(H1, "b1", 0, x=0.105, y=0.005, type="click", device="mobile", view="view-a", vh=1, sh=1),
        line(H1, "b1", 0, x=0.105, y=0.005, type="click", device="mobile", view="view-a", vh=1, sh=1),  # repeated
        line(H1, "b1", 1, x=0.105, y=0.005, type="rageclick", device="mobile", view="view-a", vh=1, sh=1),
        line(H1, "b2", 0, x=0.105, y=0.005, type="click", device="desktop", view="view-b", vh=1, sh=1),
        line(H1, "b3", 0, x=0.105, y=0.005, type="mousemove"),  # before v2: device unknown
        line(H1, "b3", 1, x=0.105, y=0.005, type="mousemove"),
        line(H1, "b3", 2, x=1.0, y=1.0, type=None),  # no type at all: unknown too
        line(H1, "b4", 0, x=0.5, y=0.3, type="scroll", device="desktop", view="view-b", vh=1, sh=1),
        line(H1, "b5", 0, x=None, y=0.3, type="scroll"),  # not counted: no x_norm
    ]
    got = {(r.event_type, r.device, r.cell_x, r.cell_y): r["count"] for r in rows_of(spark, lines, CELLS)}
    assert got == {
        ("click", "mobile", 10, 1): 1,
        ("rageclick", "mobile", 10, 1): 1,
        ("click", "desktop", 10, 1): 1,
        ("mousemove", "unknown", 10, 1): 2,
        ("unknown", "unknown", 99, GRID_H - 1): 1,
        ("scroll", "desktop", 50, 60): 1,
    }
