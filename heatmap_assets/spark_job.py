"""The PySpark transform of the hourly asset: lake lines -> cells and scroll reach per hour.

Pure Spark, no Dagster, no Python UDFs: ``read_lake`` reads an explicit list of
part files with an explicit schema; ``unique_events`` keeps each ingested event
once (``EVENT_KEY``) and names the type and device of lines that lack them
(every line written before v2 lacks a device); from those events
``hourly_cells`` counts per (hour, client_id, screen_id, event_type, device,
cell_x, cell_y) and ``scroll_reach`` counts page views per (hour, client_id,
screen_id, device, depth_row), as docs/ARCHITECTURE.md's "Heatmap v2" section
defines them. The hour of a line is the hour of the lake folder it was read
from, i.e. exactly the ``raw_events`` partition it belongs to.

The two results are two DataFrames whose columns are their tables' columns
(``schema.CELLS``, ``schema.SCROLL``) with ``hour`` (text) for bucket_start.
``write_hours`` has the executors write them as Parquet under a staging prefix,
one folder per hour (``heatmap_core.lake.staging_hour_glob``), where ClickHouse
reads them into each bucket's replacement; only per-hour figures, computed by
Spark aggregations, come back to the driver, so its memory does not grow with
the number of cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from heatmap_core.events import SCROLL as SCROLL_EVENT
from heatmap_core.events import UNKNOWN_DEVICE
from heatmap_core.grid import spark_cell_columns, spark_row_column
from heatmap_core.lake import HOUR_FOLDERS_PATTERN, STAGING_HOUR_COLUMN
from heatmap_core.lake_schema import COUNTED_COLUMNS, EVENT_KEY, spark_schema
from heatmap_core.schema import CELLS, SCROLL, TableKind
from heatmap_core.timeutil import parse_hour

# What the job reads: the counting rule's columns, then where and how each event counts.
READ_COLUMNS = (*COUNTED_COLUMNS, "event_type", "device", "view_id", "viewport_h", "screen_h")
# The type and device of a line that carries none: every line written before v2 has no
# device. (ClickHouse's raw recount in checks.py applies the same rule.)
UNKNOWN = UNKNOWN_DEVICE
# The bucket_start column of the frames below: the hour as text (timeutil.HOUR_TEXT),
# since Python-side timestamps would pick up the driver's local zone and text cannot.
HOUR = "hour"


def read_lake(spark, paths: list[str], fmt: str):
    """Read part files (s3a:// paths) with the explicit schema, plus the folder's hour.

    Only ``READ_COLUMNS`` are read, so the JSON and the Parquet copies of the lake,
    and files written before and after v2, read the same way whatever else a line
    carries; a column a file lacks reads as null (event_time decides the folder,
    which is where the hour is taken from).
    """
    from pyspark.sql import functions as F

    reader = spark.read.schema(spark_schema(READ_COLUMNS))
    if fmt == "json":
        frame = reader.option("mode", "PERMISSIVE").json(paths)
    elif fmt == "parquet":
        frame = reader.parquet(*paths)
    else:
        raise ValueError(f"unknown lake format {fmt!r}")
    source = F.input_file_name()
    day = F.regexp_extract(source, HOUR_FOLDERS_PATTERN, 1)  # "" where the path does not match
    hour = F.concat_ws(" ", day, F.regexp_extract(source, HOUR_FOLDERS_PATTERN, 2))
    return frame.withColumn(HOUR, F.when(day != "", hour))


def valid_lines(frame):
    from pyspark.sql import functions as F

    required = [*COUNTED_COLUMNS, HOUR]
    condition = None
    for name in required:
        term = F.col(name).isNotNull()
        condition = term if condition is None else condition & term
    return frame.where(condition)


def unique_events(lines):
    """Each ingested event once, with ``event_type`` and ``device`` never null.

    Lines repeated by a landing re-flush, and a batch published again after a lost
    acknowledgement, share their event key and count once.
    """
    from pyspark.sql import functions as F

    return (
        lines.dropDuplicates(list(EVENT_KEY))
        .withColumn("event_type", F.coalesce(F.col("event_type"), F.lit(UNKNOWN)))
        .withColumn("device", F.coalesce(F.col("device"), F.lit(UNKNOWN)))
    )


def _table_columns(kind: TableKind) -> list[str]:
    return [HOUR if name == "bucket_start" else name for name in kind.column_names]


def hourly_cells(events):
    """Events per (hour, client_id, screen_id, event_type, device, cell_x, cell_y): every type, scroll included."""
    from pyspark.sql import functions as F

    cell_x, cell_y = spark_cell_columns(F.col("x_norm"), F.col("y_norm"))
    keys = [name for name in _table_columns(CELLS) if name not in CELLS.measures]
    return (
        events.withColumn("cell_x", cell_x)
        .withColumn("cell_y", cell_y)
        .groupBy(*keys)
        .agg(F.count(F.lit(1)).alias("count"))
        .select(*_table_columns(CELLS))
    )


def scroll_reach(events):
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
        events.where((F.col("event_type") == SCROLL_EVENT) & F.col("view_id").isNotNull())
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


def _stage(frame, url: str) -> None:
    """Write a frame of ``_table_columns(kind)`` as Parquet under ``url``, one folder per hour
    (``STAGING_HOUR_COLUMN=<YYYYMMDDHH>``) without the hour column: ClickHouse sets bucket_start."""
    from pyspark.sql import functions as F

    hour_id = F.regexp_replace(F.col(HOUR), "[^0-9]", "")  # "2026-11-25 23" -> "2026112523"
    frame.withColumn(STAGING_HOUR_COLUMN, hour_id).drop(HOUR).write.partitionBy(STAGING_HOUR_COLUMN).mode(
        "errorifexists"
    ).parquet(url)


def write_hours(spark, paths: list[str], fmt: str, staging: dict[str, str]) -> dict[datetime, HourFigures]:
    """Run the transform over ``paths``; the executors write each kind's rows under ``staging[kind.name]``
    (an s3a:// URL, one folder per hour); returns the per-hour figures, for hours with lines.

    Each result frame is cached, written, then summed per hour by Spark: rows are
    never collected to the driver.
    """
    from pyspark.sql import functions as F

    figures: dict[datetime, HourFigures] = {}

    def of(hour_text: str) -> HourFigures:
        hour = parse_hour(hour_text)
        return figures.setdefault(hour, HourFigures(hour))

    frame = read_lake(spark, paths, fmt).cache()
    events = unique_events(valid_lines(frame)).cache()  # read by both aggregations
    cells = hourly_cells(events).cache()
    scroll = scroll_reach(events).cache()
    try:
        for row in frame.groupBy(HOUR).agg(F.count(F.lit(1)).alias("lines")).collect():
            if row[HOUR] is not None:
                of(row[HOUR]).lines = int(row["lines"])
        _stage(cells, staging[CELLS.name])
        _stage(scroll, staging[SCROLL.name])
        for row in cells.groupBy(HOUR).agg(F.count(F.lit(1)).alias("cells"), F.sum("count").alias("events")).collect():
            of(row[HOUR]).cells, of(row[HOUR]).events = int(row["cells"]), int(row["events"])
        views = F.sum(F.when(F.col("depth_row") == 0, F.col("reached")).otherwise(0)).alias("views")
        for row in scroll.groupBy(HOUR).agg(F.count(F.lit(1)).alias("rows"), views).collect():
            of(row[HOUR]).scroll_rows, of(row[HOUR]).views = int(row["rows"]), int(row["views"])
    finally:
        for cached in (scroll, cells, events, frame):
            cached.unpersist()
    return figures
