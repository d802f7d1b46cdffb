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
from datetime import UTC, datetime

from heatmap_core.grid import spark_cell_columns

# Only the columns the aggregation needs, so the JSON and the Parquet copies of
# the lake read the same way whatever else a line carries (event_time and
# received_at decide the folder, which is where the hour is taken from).
RAW_COLUMNS = (
    ("client_id", "string"),
    ("screen_id", "string"),
    ("x_norm", "double"),
    ("y_norm", "double"),
    ("event_type", "string"),
    ("batch_id", "string"),
    ("batch_index", "long"),
)
# One ingested event: a batch_id names one accepted batch of a client, wherever
# and however often its Kafka record was written (see docs/ARCHITECTURE.md).
EVENT_KEY = ["client_id", "batch_id", "batch_index"]
HOUR_FROM_PATH = r"dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/"


def raw_schema():
    from pyspark.sql import types as T

    kinds = {"string": T.StringType(), "double": T.DoubleType(), "long": T.LongType()}
    return T.StructType([T.StructField(name, kinds[kind], True) for name, kind in RAW_COLUMNS])


def read_lake(spark, paths: list[str], fmt: str):
    """Read part files (s3a:// paths) with the explicit schema, plus the folder's hour."""
    from pyspark.sql import functions as F

    reader = spark.read.schema(raw_schema())
    if fmt == "json":
        frame = reader.option("mode", "PERMISSIVE").json(paths)
    elif fmt == "parquet":
        frame = reader.parquet(*paths)
    else:
        raise ValueError(f"unknown lake format {fmt!r}")
    source = F.input_file_name()
    hour = F.concat_ws(
        " ", F.regexp_extract(source, HOUR_FROM_PATH, 1), F.regexp_extract(source, HOUR_FROM_PATH, 2)
    )
    # Kept as text ("YYYY-MM-DD HH"): Python-side timestamps would pick up the
    # driver's local zone, text cannot.
    return frame.withColumn("hour", F.when(F.length(hour) == 13, hour))


def valid_lines(frame):
    from pyspark.sql import functions as F

    required = ["screen_id", "x_norm", "y_norm", "hour", *EVENT_KEY]
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

    unique = frame.dropDuplicates(EVENT_KEY)
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


def _hour(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=UTC)


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
            hour = _hour(row["hour"])
            results[hour].lines = int(row["lines"])
        for row in hourly_cells(valid_lines(frame)).collect():
            hour = _hour(row["hour"])
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
