"""The raw lake line: one definition, and every engine's form generated from it.

``LakeEvent`` is the definition: its fields, in order, are the lake's columns,
each annotated with its storage type and a description; a field typed
``X | None`` is nullable. Everything else is derived from it:

- ``LAKE_COLUMNS``: the ordered (name, type, nullable, description) tuple;
- ``arrow_schema()``: the Parquet schema landing writes;
- ``spark_schema(names)``: the schema Spark reads the lake with;
- ``clickhouse_structure(names)``: the column list of a ClickHouse ``s3()`` read;
- the Dagster table schema of ``raw_events`` (built in heatmap_assets from
  ``LAKE_COLUMNS``, since heatmap_core imports no Dagster).

Adding a column is one new field here, its value in
``heatmap_core.events.lake_events`` (the reference lines), in landing's native
codec (``native/src/lib.rs``, which tests/landing/test_native.py holds to the
reference) and in landing's Parquet columns (``landing.parquet``). Lines already in the lake lack it:
make it nullable, and the readers below see null there.

Readers take columns nullable whatever the writer promises: a malformed or
older line then reads as nulls and the counting rule (``COUNTED_COLUMNS``)
drops it, instead of failing the whole hour.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import msgspec


@dataclass(frozen=True)
class LakeType:
    """A storage type of the lake: how landing writes it, and how each reader reads it."""

    name: str  # shown in the Dagster UI
    arrow: tuple[str, ...]  # written: pyarrow type factory and its arguments
    spark: str  # read: pyspark.sql.types class
    clickhouse: str  # read


STRING = LakeType("string", ("string",), "StringType", "String")
DOUBLE = LakeType("double", ("float64",), "DoubleType", "Float64")
# Readers take every integer as 64-bit: Spark widens an INT32 Parquet column to
# long but refuses an INT64 one as int, so a file of either width reads.
INT32 = LakeType("int32", ("int32",), "LongType", "Int64")
INT64 = LakeType("int64", ("int64",), "LongType", "Int64")
# Microseconds: what JSON's RFC 3339 text carries, so the JSON and Parquet copies hold the same instants.
UTC_MICROS = LakeType("timestamp (UTC, us)", ("timestamp", "us", "UTC"), "TimestampType", "DateTime64(6, 'UTC')")


@dataclass(frozen=True)
class Column:
    """Annotation of a LakeEvent field: how it is stored and what it means."""

    type: LakeType
    description: str


class LakeEvent(msgspec.Struct, kw_only=True):
    """One line of the raw lake; (kafka_partition, kafka_offset, batch_index) is unique."""

    client_id: Annotated[str, Column(STRING, "Site that sent the event.")]
    screen_id: Annotated[str, Column(STRING, "Page or screen of the site.")]
    event_time: Annotated[datetime, Column(UTC_MICROS, "When the event happened; decides the dt/hour folder.")]
    x_norm: Annotated[float, Column(DOUBLE, "0..1 from the left edge.")]
    y_norm: Annotated[float, Column(DOUBLE, "0..1 from the top edge.")]
    event_type: Annotated[str, Column(STRING, "Kind of event: one of heatmap_core.events.EVENT_TYPES.")]
    received_at: Annotated[datetime, Column(UTC_MICROS, "When the ingestion API accepted the batch.")]
    batch_id: Annotated[str, Column(STRING, "The accepted batch: with client_id and batch_index, one event.")]
    kafka_partition: Annotated[int, Column(INT32, "Kafka origin: with offset and index, one line's source.")]
    kafka_offset: Annotated[int, Column(INT64, "Offset of the batch's Kafka record.")]
    batch_index: Annotated[int, Column(INT32, "Position of the event in its batch.")]
    # v2 (request with a page view). Null in lines written before v2; readers take
    # a null device as ``unknown`` (heatmap_core.events.UNKNOWN_DEVICE).
    device: Annotated[str | None, Column(STRING, "desktop, tablet, mobile (from viewport_w) or unknown (v1).")] = None
    view_id: Annotated[str | None, Column(STRING, "Random id of the page load (v2); null for v1.")] = None
    viewport_w: Annotated[int | None, Column(INT32, "Viewport width, CSS pixels (v2).")] = None
    viewport_h: Annotated[int | None, Column(INT32, "Viewport height, CSS pixels (v2).")] = None
    screen_w: Annotated[int | None, Column(INT32, "Rendered width of the screen element, CSS pixels (v2).")] = None
    screen_h: Annotated[int | None, Column(INT32, "Rendered height of the screen element, CSS pixels (v2).")] = None


@dataclass(frozen=True)
class LakeColumn:
    name: str
    type: LakeType
    nullable: bool
    description: str


def _columns() -> tuple[LakeColumn, ...]:
    hints = typing.get_type_hints(LakeEvent, include_extras=True)
    columns = []
    for name in LakeEvent.__struct_fields__:
        python_type, *extras = typing.get_args(hints[name])
        (column,) = [extra for extra in extras if isinstance(extra, Column)]
        nullable = type(None) in typing.get_args(python_type)
        columns.append(LakeColumn(name, column.type, nullable, column.description))
    return tuple(columns)


LAKE_COLUMNS = _columns()
LAKE_COLUMN_NAMES = tuple(column.name for column in LAKE_COLUMNS)
_BY_NAME = {column.name: column for column in LAKE_COLUMNS}

# A line counts as an event only when it carries all of these (the hourly job and
# the raw recount apply the same rule); EVENT_KEY names one ingested event (a
# batch_id is one accepted batch of a client, wherever and however often its
# Kafka record was written: docs/ARCHITECTURE.md), so it counts once.
EVENT_KEY = ("client_id", "batch_id", "batch_index")
COUNTED_COLUMNS = ("client_id", "screen_id", "x_norm", "y_norm", "batch_id", "batch_index")


def _pick(names: typing.Iterable[str] | None) -> list[LakeColumn]:
    return list(LAKE_COLUMNS) if names is None else [_BY_NAME[name] for name in names]


def arrow_schema():
    """The Parquet schema of a part file, as landing writes it."""
    import pyarrow as pa

    def arrow_type(lake_type: LakeType):
        factory, *args = lake_type.arrow
        return getattr(pa, factory)(*args)

    return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable) for c in LAKE_COLUMNS])


def spark_schema(names: typing.Iterable[str] | None = None):
    """A Spark read schema of the named columns (all by default), every one nullable."""
    from pyspark.sql import types as T

    return T.StructType([T.StructField(c.name, getattr(T, c.type.spark)(), True) for c in _pick(names)])


def clickhouse_structure(names: typing.Iterable[str] | None = None) -> str:
    """The structure argument of a ClickHouse ``s3()`` read of the named columns, every one Nullable."""
    return ", ".join(f"{c.name} Nullable({c.type.clickhouse})" for c in _pick(names))


_CLICKHOUSE_FORMATS = {"json": "JSONEachRow", "parquet": "Parquet"}


def clickhouse_s3_source(fmt: str) -> str:
    """A ClickHouse ``s3()`` table of lake files in format ``fmt``.

    Parameters to bind: url (an http URL or glob of part files), key, secret,
    and structure (``clickhouse_structure(...)`` of the columns to read).
    """
    return f"s3({{url:String}}, {{key:String}}, {{secret:String}}, '{_CLICKHOUSE_FORMATS[fmt]}', {{structure:String}})"
