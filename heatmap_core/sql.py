"""SQL fragments that several queries over the bucket tables share, each written once.

Values always travel as ``{name:Type}`` parameters: a fragment names the
parameters, the caller binds them (``window_parameters``).
"""

from __future__ import annotations

from datetime import datetime

from heatmap_core.lake_schema import clickhouse_s3_source
from heatmap_core.schema import BUCKET_TIME, TableKind
from heatmap_core.timeutil import naive_utc


def time_parameter(name: str) -> str:
    """A placeholder compared with bucket_start; bind it to ``naive_utc(moment)``."""
    return f"{{{name}:{BUCKET_TIME}}}"


def time_array_parameter(name: str) -> str:
    return f"{{{name}:Array({BUCKET_TIME})}}"


def in_window(lo: str, hi: str) -> str:
    """Rows whose bucket starts in [lo, hi).

    Half-open, so adjacent windows never share a bucket, and the window of a
    day or a week holds exactly the finer buckets it is made of. ``lo`` and
    ``hi`` are SQL expressions: placeholders, or lambda arguments.
    """
    return f"bucket_start >= {lo} AND bucket_start < {hi}"


# The bucket window over parameters {start} and {end}: bind ``window_parameters(start, end)``.
BUCKET_WINDOW = in_window(time_parameter("start"), time_parameter("end"))


def window_parameters(start: datetime, end: datetime) -> dict[str, datetime]:
    return {"start": naive_utc(start), "end": naive_utc(end)}


def window_sums(kind: TableKind, table_ref: str) -> str:
    """One row per position (``kind.position_key``) of the rows of ``table_ref`` in the bucket window,
    every measure summed under its own name; bind ``window_parameters``.

    The window filter sits in a subquery over renamed measures: in ClickHouse an
    outer alias named like a column (``count``, ``bucket_start``) would shadow
    that column inside WHERE and inside the aggregate.
    """
    keys = ", ".join(kind.position_key)
    renamed = ", ".join(f"{measure} AS _{measure}" for measure in kind.measures)
    sums = ", ".join(f"sum(_{measure}) AS {measure}" for measure in kind.measures)
    return (
        f"SELECT {keys}, {sums} FROM (SELECT {keys}, {renamed} FROM {table_ref} WHERE {BUCKET_WINDOW}) GROUP BY {keys}"
    )


def rollup_select(kind: TableKind, table_ref: str) -> str:
    """The coarser bucket ``{bucket}`` made of the window's finer rows of ``table_ref``: grouped by
    position, every measure summed, columns in ``kind.column_names`` order (what ``replace_bucket`` inserts).

    Bind ``{"bucket": naive_utc(start), **window_parameters(start, end)}``.
    """
    columns = ", ".join(
        f"{time_parameter('bucket')} AS bucket_start" if name == "bucket_start" else name for name in kind.column_names
    )
    return f"SELECT {columns} FROM ({window_sums(kind, table_ref)})"


def staged_select(kind: TableKind) -> str:
    """The bucket ``{start}`` of ``kind`` read by ClickHouse from the Parquet files the hourly job's
    executors staged for it (``heatmap_core.lake.staging_hour_glob``), columns in ``kind.column_names``
    order (what ``replace_bucket`` inserts). The files carry every column but bucket_start.

    Bind ``staged_parameters(...)``.
    """
    columns = ", ".join(
        f"{time_parameter('start')} AS bucket_start" if name == "bucket_start" else name for name in kind.column_names
    )
    return f"SELECT {columns} FROM {clickhouse_s3_source('parquet')}"


def staged_parameters(kind: TableKind, start: datetime, url: str, key: str, secret: str) -> dict:
    """The parameters of ``staged_select(kind)``: the bucket's start, the http URL (a glob) of its
    staged files and the object store's credentials, which travel as parameters, never in the SQL."""
    structure = ", ".join(f"{column.name} {column.type}" for column in kind.columns if column.name != "bucket_start")
    return {"start": naive_utc(start), "url": url, "key": key, "secret": secret, "structure": structure}
