"""The PySpark transform of the hourly asset: lake lines -> cells and scroll reach per hour.

Pure Spark, no Dagster, no Python UDFs: ``read_lake`` reads each hour's explicit
list of part files with an explicit schema; ``counted_lines`` keeps the valid lines
and names the type and device of lines that lack them (every line written before
v2 lacks a device); from those lines ``hour_rows`` counts each ingested event
once (``EVENT_KEY``) per (hour, client_id, screen_id, event_type, device,
cell_x, cell_y) and page views per (hour, client_id, screen_id, device,
depth_row), as docs/ARCHITECTURE.md's "Heatmap v2" section defines them. The
hour of a line is the hour of the lake folder it was read from (the caller
groups the files by folder), i.e. exactly the ``raw_events`` partition it
belongs to.

The two results are one DataFrame holding both tables' columns (``schema.CELLS``,
``schema.SCROLL``) and the kind of each row. ``write_hours`` has the executors
write it as Parquet in one Spark write under a staging prefix, one folder per
kind and hour (``heatmap_core.lake.staging_hour_glob``), where ClickHouse reads
them into each bucket's replacement; only per-hour figures, Spark's sums of the
staged files, come back to the driver, so its memory does not grow with the
number of cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from typing import TYPE_CHECKING

from heatmap_core.events import SCROLL as SCROLL_EVENT
from heatmap_core.events import UNKNOWN_DEVICE
from heatmap_core.grid import spark_cell_columns, spark_row_column
from heatmap_core.lake import STAGING_HOUR_COLUMN, STAGING_HOUR_ID, STAGING_KIND_COLUMN
from heatmap_core.lake_schema import COUNTED_COLUMNS, EVENT_KEY, spark_schema
from heatmap_core.schema import CELLS, SCROLL, TableKind
from heatmap_core.timeutil import HOUR_TEXT

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Observation

# What the job reads: the counting rule's columns, then where and how each event counts.
READ_COLUMNS = (*COUNTED_COLUMNS, "event_type", "device", "view_id", "viewport_h", "screen_h")
# The type and device of a line that carries none: every line written before v2 has no
# device. (ClickHouse's raw recount in checks.py applies the same rule.)
UNKNOWN = UNKNOWN_DEVICE
# The bucket_start column of the frames below: the hour as text (timeutil.HOUR_TEXT),
# since Python-side timestamps would pick up the driver's local zone and text cannot.
HOUR = "hour"


def read_lake(
    spark, paths_by_hour: dict[datetime, list[str]], fmt: str
) -> tuple[DataFrame, dict[datetime, Observation]]:
    """Read each hour's part files (s3a:// paths) with the explicit schema, the hour as a constant column.

    Only ``READ_COLUMNS`` are read, so the JSON and the Parquet copies of the lake,
    and files written before and after v2, read the same way whatever else a line
    carries; a column a file lacks reads as null. The hour is the folder's, which the
    caller knows (event_time decides the folder): a constant per hour costs nothing per
    line, where taking it from each line's file name cost a regex per line.

    Also returns, per hour, an ``Observation`` counting the lines read (duplicates and
    unreadable lines included), filled by the first action that reads them: the count
    comes with that pass instead of a pass of its own.
    """
    from pyspark.sql import Observation
    from pyspark.sql import functions as F

    reader = spark.read.schema(spark_schema(READ_COLUMNS))
    readers = {
        "json": lambda paths: reader.option("mode", "PERMISSIVE").json(paths),
        "parquet": lambda paths: reader.parquet(*paths),
    }
    if fmt not in readers:
        raise ValueError(f"unknown lake format {fmt!r}")
    read = readers[fmt]
    frames, lines = [], {}
    for hour, paths in paths_by_hour.items():
        lines[hour] = Observation()  # a name of its own: two runs in one session never share one
        frame = read(paths).withColumn(HOUR, F.lit(f"{hour:{HOUR_TEXT}}"))
        frames.append(frame.observe(lines[hour], F.count(F.lit(1)).alias("lines")))
    return reduce(lambda first, second: first.union(second), frames), lines


def valid_lines(frame):
    from pyspark.sql import functions as F

    required = [*COUNTED_COLUMNS, HOUR]
    condition = None
    for name in required:
        term = F.col(name).isNotNull()
        condition = term if condition is None else condition & term
    return frame.where(condition)


def counted_lines(lines):
    """The valid lines with ``event_type`` and ``device`` never null, copies of an event key kept.

    Lines repeated by a landing re-flush, and a batch published again after a lost
    acknowledgement, are copies of one line under one event key: ``hour_rows`` counts a
    key once in its cell, and a view's maxima do not change with copies, so no pass
    removes them first.
    """
    from pyspark.sql import functions as F

    return (
        valid_lines(lines)
        .withColumn("event_type", F.coalesce(F.col("event_type"), F.lit(UNKNOWN)))
        .withColumn("device", F.coalesce(F.col("device"), F.lit(UNKNOWN)))
    )


def _table_columns(kind: TableKind) -> list[str]:
    return [HOUR if name == "bucket_start" else name for name in kind.column_names]


# What the one shuffle partitions by: a cell's key for a cells record; for a scroll record the same
# columns with event_type, cell_x and cell_y null, i.e. its (hour, client, screen, device).
_SHUFFLE_KEY = (STAGING_KIND_COLUMN, HOUR, "client_id", "screen_id", "device", "event_type", "cell_x", "cell_y")


def hour_rows(lines):
    """Both tables' rows from the counted lines, in one frame: each kind's columns (null in the other
    kind's rows), then ``STAGING_KIND_COLUMN`` (the kind's name) and ``STAGING_HOUR_COLUMN``
    (``<YYYYMMDDHH>``) in place of the hour column: ClickHouse sets bucket_start.

    Cells: events per (hour, client_id, screen_id, event_type, device, cell_x, cell_y), every type,
    scroll included; an event key counts once in its cell, however many copies of its line were read.
    Scroll reach: page views per (hour, client_id, screen_id, device, depth_row), ``reached`` and
    ``folds``. A view is a view_id with scroll events in the hour (per client, screen and device); its
    deepest row is the largest grid row of its scroll depths (y_norm), its fold row the largest row of
    min(1, viewport_h / screen_h); reached[r] = views whose deepest row >= r, folds[r] = views whose
    fold row is r.

    One read of the lines and one shuffle for both: every line becomes a cells record, and a scroll
    line with a view also a scroll record; the records are hash-partitioned by ``_SHUFFLE_KEY``, and
    every later grouping (the distinct event keys, the views, the depth rows) contains that key, so it
    runs where the records landed. Two aggregations of their own read the lake twice, which on JSON
    is a second parse of every line (BENCHMARKS.md, 2026-11-29 11:08-12:20). The price: an hour's scroll
    records of one (client, screen, device) are aggregated by one task.
    """
    from pyspark.sql import functions as F

    kind = F.col(STAGING_KIND_COLUMN)
    is_scroll = kind == SCROLL.name
    none_int, none_text = F.lit(None).cast("int"), F.lit(None).cast("string")
    cell_x, cell_y = spark_cell_columns(F.col("x_norm"), F.col("y_norm"))
    # least() and greatest() skip nulls: without the guard a line with no sizes would get a fold row.
    ratio = F.try_divide(F.col("viewport_h"), F.col("screen_h"))  # null without sizes or with screen_h 0
    fold_row = F.when(ratio.isNotNull(), spark_row_column(F.least(F.lit(1.0), ratio)))

    def record(name: str, event_type, x, y, view_id, depth, fold):
        return F.struct(
            F.lit(name).alias(STAGING_KIND_COLUMN),
            event_type.alias("event_type"),
            x.alias("cell_x"),
            y.alias("cell_y"),
            view_id.alias("view_id"),
            depth.alias("depth"),
            fold.alias("fold"),
        )

    cell = record(CELLS.name, F.col("event_type"), cell_x, cell_y, none_text, none_int, none_int)
    view = record(SCROLL.name, none_text, none_int, none_int, F.col("view_id"), cell_y, fold_row)
    has_view = (F.col("event_type") == SCROLL_EVENT) & F.col("view_id").isNotNull()
    key_rest = [name for name in EVENT_KEY if name not in _SHUFFLE_KEY]
    records = lines.select(
        HOUR,
        "client_id",
        "screen_id",
        "device",
        *key_rest,
        F.inline(F.when(has_view, F.array(cell, view)).otherwise(F.array(cell))),
    )
    # The distinct event keys of each cell (a view's keys too: its maxima do not change with copies),
    # then one row per cell (its count) and per view (its deepest and fold rows).
    groups = (
        records.repartition(*_SHUFFLE_KEY)
        .groupBy(*_SHUFFLE_KEY, "view_id", *key_rest)
        .agg(F.max("depth").alias("depth"), F.max("fold").alias("fold"))
        .groupBy(*_SHUFFLE_KEY, "view_id")
        .agg(F.count(F.lit(1)).alias("count"), F.max("depth").alias("deepest"), F.max("fold").alias("fold"))
    )
    # A view becomes one row per depth row from 0 to the larger of its two (at most GRID_H); a cell stays one row.
    depth_rows = F.when(is_scroll, F.sequence(F.lit(0), F.greatest("deepest", "fold"))).otherwise(F.array(none_int))
    rows = groups.select(*_SHUFFLE_KEY, "count", "deepest", "fold", F.explode(depth_rows).alias("depth_row")).select(
        *_SHUFFLE_KEY,
        "depth_row",
        F.when(~is_scroll, F.col("count")).alias("count"),
        F.when(is_scroll, (F.col("depth_row") <= F.col("deepest")).cast("long")).alias("reached"),
        F.when(is_scroll, F.coalesce(F.col("depth_row") == F.col("fold"), F.lit(False)).cast("long")).alias("folds"),
    )
    summed = (
        rows.where(~is_scroll | (F.col("reached") > 0) | (F.col("folds") > 0))
        .groupBy(*_SHUFFLE_KEY, "depth_row")
        .agg(*(F.sum(name).alias(name) for name in ("count", "reached", "folds")))
    )
    columns = [name for name in dict.fromkeys((*_table_columns(CELLS), *_table_columns(SCROLL))) if name != HOUR]
    hour_id = F.regexp_replace(F.col(HOUR), "[^0-9]", "")  # "2026-11-25 23" -> "2026112523"
    return summed.select(*columns, kind, hour_id.alias(STAGING_HOUR_COLUMN))


@dataclass
class HourFigures:
    """What one hour's rows add up to: the only results the driver holds."""

    hour: datetime
    lines: int = 0  # lines read, duplicates and unreadable lines included
    events: int = 0  # distinct valid events (the cells' counts summed)
    cells: int = 0  # rows staged for the cells table
    views: int = 0  # page views with scroll events (scroll reach at row 0, summed over screens and devices)
    scroll_rows: int = 0  # rows staged for the scroll table


def write_hours(spark, paths_by_hour: dict[datetime, list[str]], fmt: str, staging: str) -> dict[datetime, HourFigures]:
    """Run the transform over each hour's part files; the executors write the rows of both kinds under
    ``staging`` (an s3a:// URL, one folder per kind and hour: ``heatmap_core.lake.staging_hour_glob``);
    returns the per-hour figures, for hours with lines.

    Both kinds go out in one Spark write: a write into s3a costs about a second of its own here
    whatever its size (Spark's job setup and commit protocol, s3a's requests), so one write instead
    of two takes 0.3-0.8 s off a run of 400,000 events (BENCHMARKS.md, 2026-11-28 17:30-18:20). Nothing is
    cached: ``hour_rows`` reads the lake once, and the figures are Spark's sums of the staged files
    read back (a few narrow columns of the rows just written), so rows are never collected to the
    driver. The lines read are counted while the write reads them, not by a pass of their own.
    """
    from pyspark.sql import functions as F

    frame, lines = read_lake(spark, paths_by_hour, fmt)
    lines_read = counted_lines(frame)
    staged = hour_rows(lines_read)
    staged.write.partitionBy(STAGING_KIND_COLUMN, STAGING_HOUR_COLUMN).mode("errorifexists").parquet(staging)
    figures = {hour: HourFigures(hour, lines=int(observed.get["lines"])) for hour, observed in lines.items()}
    by_id = {f"{hour:{STAGING_HOUR_ID}}": figure for hour, figure in figures.items()}
    # An explicit schema: a run without any row left only _SUCCESS, where inference would fail.
    sums = (
        spark.read.schema(staged.schema)
        .parquet(staging)
        .groupBy(STAGING_KIND_COLUMN, STAGING_HOUR_COLUMN)
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.sum("count").alias("events"),
            F.sum(F.when(F.col("depth_row") == 0, F.col("reached")).otherwise(0)).alias("views"),
        )
    )
    for row in sums.collect():
        figure = by_id[row[STAGING_HOUR_COLUMN]]
        if row[STAGING_KIND_COLUMN] == CELLS.name:
            figure.cells, figure.events = int(row["rows"]), int(row["events"])
        else:
            figure.scroll_rows, figure.views = int(row["rows"]), int(row["views"])
    return {hour: figure for hour, figure in figures.items() if figure.lines}
