"""The PySpark transform of the hourly asset: lake lines -> cells and scroll reach per hour.

Pure Spark, no Dagster, no Python UDFs: ``read_lake`` reads each hour's explicit
list of part files with an explicit schema; ``counted_lines`` keeps the valid lines
and names the type and device of lines that lack them (every line written before
v2 lacks a device); from those lines ``hourly_cells`` counts each ingested event
once (``EVENT_KEY``) per (hour, client_id, screen_id, event_type, device,
cell_x, cell_y) and ``scroll_reach`` counts page views per (hour, client_id,
screen_id, device, depth_row), as docs/ARCHITECTURE.md's "Heatmap v2" section
defines them. The hour of a line is the hour of the lake folder it was read
from (the caller groups the files by folder), i.e. exactly the ``raw_events``
partition it belongs to.

The two results are two DataFrames whose columns are their tables' columns
(``schema.CELLS``, ``schema.SCROLL``) with ``hour`` (text) for bucket_start.
``write_hours`` has the executors write both as Parquet in one Spark write under
a staging prefix, one folder per kind and hour (``heatmap_core.lake.staging_hour_glob``),
where ClickHouse reads them into each bucket's replacement; only per-hour figures, Spark's sums
of the staged files, come back to the driver, so its memory does not grow with
the number of cells.
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
    acknowledgement, are copies of one line under one event key: each aggregation
    counts a key once (``hourly_cells``) or is not changed by its copies
    (``scroll_reach``'s maxima), so no pass removes them first.
    """
    from pyspark.sql import functions as F

    return (
        valid_lines(lines)
        .withColumn("event_type", F.coalesce(F.col("event_type"), F.lit(UNKNOWN)))
        .withColumn("device", F.coalesce(F.col("device"), F.lit(UNKNOWN)))
    )


def _table_columns(kind: TableKind) -> list[str]:
    return [HOUR if name == "bucket_start" else name for name in kind.column_names]


def hourly_cells(lines):
    """Events per (hour, client_id, screen_id, event_type, device, cell_x, cell_y): every type, scroll
    included; an event key counts once in its cell, however many copies of its line were read.

    One shuffle: the lines are hash-partitioned by their cell, so the key's copies meet and the
    cell's keys are counted where they land (the distinct keys, then their count). A separate
    dedup per key would shuffle and sort every line once more (it was the job's largest stage).
    """
    from pyspark.sql import functions as F

    cell_x, cell_y = spark_cell_columns(F.col("x_norm"), F.col("y_norm"))
    keys = [name for name in _table_columns(CELLS) if name not in CELLS.measures]
    return (
        lines.withColumn("cell_x", cell_x)
        .withColumn("cell_y", cell_y)
        .select(*dict.fromkeys((*keys, *EVENT_KEY)))  # client_id is in both
        .repartition(*keys)
        .distinct()
        .groupBy(*keys)
        .agg(F.count(F.lit(1)).alias("count"))
        .select(*_table_columns(CELLS))
    )


def scroll_reach(lines):
    """Page views per (hour, client_id, screen_id, device, depth_row): ``reached`` and ``folds``.

    A view is a view_id with scroll events in the hour (per client, screen and
    device). Its deepest row is the largest grid row of its scroll depths
    (y_norm), its fold row the largest row of min(1, viewport_h / screen_h).
    reached[r] = views whose deepest row >= r; folds[r] = views whose fold row
    is r. Each view becomes one row per depth row up to the larger of the two
    (at most GRID_H), so the whole computation stays two aggregations.
    """
    from pyspark.sql import functions as F

    # least() and greatest() skip nulls: without the guard a line with no sizes would get a fold row.
    ratio = F.try_divide(F.col("viewport_h"), F.col("screen_h"))  # null without sizes or with screen_h 0
    fold_row = F.when(ratio.isNotNull(), spark_row_column(F.least(F.lit(1.0), ratio)))
    views = (
        lines.where((F.col("event_type") == SCROLL_EVENT) & F.col("view_id").isNotNull())
        .groupBy(HOUR, "client_id", "screen_id", "device", "view_id")
        .agg(
            F.max(spark_row_column(F.col("y_norm"))).alias("deepest"),
            F.max(fold_row).alias("fold"),  # null when no line of the view carries a size
        )
    )
    rows = views.select(
        HOUR,
        "client_id",
        "screen_id",
        "device",
        "deepest",
        "fold",
        F.explode(F.sequence(F.lit(0), F.greatest("deepest", "fold"))).alias("depth_row"),
    )
    return (
        rows.select(
            HOUR,
            "client_id",
            "screen_id",
            "device",
            "depth_row",
            (F.col("depth_row") <= F.col("deepest")).cast("long").alias("reached"),
            F.coalesce(F.col("depth_row") == F.col("fold"), F.lit(False)).cast("long").alias("folds"),
        )
        .where((F.col("reached") > 0) | (F.col("folds") > 0))
        .groupBy(HOUR, "client_id", "screen_id", "device", "depth_row")
        .agg(F.sum("reached").alias("reached"), F.sum("folds").alias("folds"))
        .select(*_table_columns(SCROLL))
    )


@dataclass
class HourFigures:
    """What one hour's rows add up to: the only results the driver holds."""

    hour: datetime
    lines: int = 0  # lines read, duplicates and unreadable lines included
    events: int = 0  # distinct valid events (the cells' counts summed)
    cells: int = 0  # rows staged for the cells table
    views: int = 0  # page views with scroll events (scroll reach at row 0, summed over screens and devices)
    scroll_rows: int = 0  # rows staged for the scroll table


def _staged(frames: dict[str, DataFrame]):
    """One frame of every kind's rows for one Spark write: each kind's columns (null in the other
    kind's rows), then ``STAGING_KIND_COLUMN`` (the kind's name) and ``STAGING_HOUR_COLUMN``
    (``<YYYYMMDDHH>``) in place of the hour column: ClickHouse sets bucket_start."""
    from pyspark.sql import functions as F

    labelled = [frame.withColumn(STAGING_KIND_COLUMN, F.lit(kind)) for kind, frame in frames.items()]
    both = reduce(lambda first, second: first.unionByName(second, allowMissingColumns=True), labelled)
    hour_id = F.regexp_replace(F.col(HOUR), "[^0-9]", "")  # "2026-11-25 23" -> "2026112523"
    columns = [name for name in both.columns if name not in (HOUR, STAGING_KIND_COLUMN)]
    return both.select(*columns, STAGING_KIND_COLUMN, hour_id.alias(STAGING_HOUR_COLUMN))


def write_hours(spark, paths_by_hour: dict[datetime, list[str]], fmt: str, staging: str) -> dict[datetime, HourFigures]:
    """Run the transform over each hour's part files; the executors write the rows of both kinds under
    ``staging`` (an s3a:// URL, one folder per kind and hour: ``heatmap_core.lake.staging_hour_glob``);
    returns the per-hour figures, for hours with lines.

    Both kinds go out in one Spark write: a write into s3a costs about a second of its own here
    whatever its size (Spark's job setup and commit protocol, s3a's requests), so one write instead
    of two takes 0.3-0.8 s off a run of 400,000 events (BENCHMARKS.md, 2026-11-28 17:30-18:20). Nothing is
    cached: each kind reads the lake itself, and the figures are Spark's sums of the staged files
    read back (a few narrow columns of the rows just written), so rows are never collected to the
    driver. Caching the lines and both results cost more CPU than reading again (a columnar copy of
    every line, then of every cell; BENCHMARKS.md, 2026-11-26 18:55-19:35). The lines read are
    counted while the write reads them, not by a pass of their own.
    """
    from pyspark.sql import functions as F

    frame, lines = read_lake(spark, paths_by_hour, fmt)
    lines_read = counted_lines(frame)
    staged = _staged({CELLS.name: hourly_cells(lines_read), SCROLL.name: scroll_reach(lines_read)})
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
