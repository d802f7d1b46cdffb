"""The PySpark transform of the hourly asset: lake lines -> per-cell counts.

Pure Spark, no Dagster: ``read_lake`` reads an explicit list of part files with
an explicit schema, ``hourly_cells`` counts each ingested event once, buckets
with the grid of ``heatmap_core.grid`` and counts per (hour, client_id,
screen_id, cell_x, cell_y). The hour of a line is the hour of the lake folder
it was read from, i.e. exactly the ``raw_events`` partition it belongs to.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from heatmap_core.grid import spark_cell_columns
from heatmap_core.lake import HOUR_FOLDERS_PATTERN
from heatmap_core.lake_schema import COUNTED_COLUMNS, EVENT_KEY, spark_schema
from heatmap_core.timeutil import parse_hour


def read_lake(spark, paths: list[str], fmt: str):
    """Read part files (s3a:// paths) with the explicit schema, plus the folder's hour.

    Only the columns that decide whether and where a line counts are read, so the
    JSON and the Parquet copies of the lake read the same way whatever else a line
    carries (event_time decides the folder, which is where the hour is taken from).
    """
    from pyspark.sql import functions as F

    reader = spark.read.schema(spark_schema(COUNTED_COLUMNS))
    if fmt == "json":
        frame = reader.option("mode", "PERMISSIVE").json(paths)
    elif fmt == "parquet":
        frame = reader.parquet(*paths)
    else:
        raise ValueError(f"unknown lake format {fmt!r}")
    source = F.input_file_name()
    day = F.regexp_extract(source, HOUR_FOLDERS_PATTERN, 1)  # "" where the path does not match
    # Kept as text (timeutil.HOUR_TEXT): Python-side timestamps would pick up the
    # driver's local zone, text cannot.
    hour = F.concat_ws(" ", day, F.regexp_extract(source, HOUR_FOLDERS_PATTERN, 2))
    return frame.withColumn("hour", F.when(day != "", hour))


def valid_lines(frame):
    from pyspark.sql import functions as F

    required = [*COUNTED_COLUMNS, "hour"]
    condition = None
    for name in required:
        term = F.col(name).isNotNull()
        condition = term if condition is None else condition & term
    return frame.where(condition)


def hourly_cells(frame):
    """(hour, client_id, screen_id, cell_x, cell_y, count) from valid lake lines.

    Lines repeated by a landing re-flush, and a batch published again after a lost
    acknowledgement, share their event key and count once.
    """
    from pyspark.sql import functions as F

    unique = frame.dropDuplicates(list(EVENT_KEY))
    cell_x, cell_y = spark_cell_columns(F.col("x_norm"), F.col("y_norm"))
    return (
        unique.select("hour", "client_id", "screen_id", cell_x.alias("cell_x"), cell_y.alias("cell_y"))
        .groupBy("hour", "client_id", "screen_id", "cell_x", "cell_y")
        .agg(F.count(F.lit(1)).alias("count"))
    )


@dataclass
class HourResult:
    hour: datetime
    lines: int = 0  # lines read, duplicates and unreadable lines included
    events: int = 0  # distinct valid events
    rows: list[tuple] = field(default_factory=list)  # COLUMN_NAMES tuples


def aggregate_hours(spark, paths: list[str], fmt: str) -> dict[datetime, HourResult]:
    """Run the transform over ``paths`` and collect per-hour results to the driver.

    At most GRID_W * GRID_H cells per client, screen and hour come back, so the
    collected rows stay small.
    """
    from pyspark.sql import functions as F

    results: dict[datetime, HourResult] = defaultdict(lambda: HourResult(hour=datetime.min))
    if not paths:
        return {}
    frame = read_lake(spark, paths, fmt).cache()
    try:
        for row in frame.groupBy("hour").agg(F.count(F.lit(1)).alias("lines")).collect():
            if row["hour"] is None:
                continue
            hour = parse_hour(row["hour"])
            results[hour].lines = int(row["lines"])
        for row in hourly_cells(valid_lines(frame)).collect():
            hour = parse_hour(row["hour"])
            result = results[hour]
            result.events += int(row["count"])
            result.rows.append(
                (row["client_id"], row["screen_id"], hour, int(row["cell_x"]), int(row["cell_y"]), int(row["count"]))
            )
    finally:
        frame.unpersist()
    for hour, result in results.items():
        result.hour = hour
    return dict(results)
