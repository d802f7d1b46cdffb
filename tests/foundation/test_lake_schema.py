"""The lake line's one definition: every generated form agrees with it, and with what landing writes."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime

import msgspec
import pyarrow.parquet as pq

from heatmap_core import lake
from heatmap_core.events import Event, PageView, RawBatchRecord, encode_record
from heatmap_core.lake_schema import (
    COUNTED_COLUMNS,
    EVENT_KEY,
    LAKE_COLUMN_NAMES,
    LAKE_COLUMNS,
    UTC_MICROS,
    LakeEvent,
    arrow_schema,
    clickhouse_s3_source,
    clickhouse_structure,
    spark_schema,
)
from heatmap_core.s3 import s3_client
from heatmap_core.timeutil import as_utc
from landing.buffer import PartitionBuffer
from landing.lines import record_lines
from landing.parquet import parquet_from_runs

NAMES = (
    "client_id",
    "screen_id",
    "event_time",
    "x_norm",
    "y_norm",
    "event_type",
    "received_at",
    "batch_id",
    "kafka_partition",
    "kafka_offset",
    "batch_index",
    "device",
    "view_id",
    "viewport_w",
    "viewport_h",
    "screen_w",
    "screen_h",
)
# Added by v2: nullable, since lines written before v2 lack them.
V2_NAMES = NAMES[NAMES.index("device") :]
HOUR = datetime(2026, 2, 2, 10, tzinfo=UTC)


def _landed_part():
    """One part file as landing buffers it: its LakeEvents and its JSON lines."""
    record = RawBatchRecord(
        client_id="acme",
        screen_id="home_v1",
        batch_id="b-1",
        received_at=HOUR.replace(minute=5),
        events=[
            Event(HOUR.replace(minute=1, microsecond=123456), 0.25, 0.2, "click"),
            Event(HOUR.replace(minute=2), 1.0, 0.0),
        ],
        view=PageView(view_id="view-0001", viewport_w=390, viewport_h=844, screen_w=390, screen_h=3400),
        device="mobile",
    )
    buffer = PartitionBuffer(kafka_partition=3)
    buffer.add(41, record_lines(encode_record(record), 3, 41))
    (part,) = buffer.take().files
    events = [msgspec.json.decode(line, type=LakeEvent) for line in part.json_body().read().splitlines()]
    return part, events


def test_every_form_lists_the_columns_of_the_definition_in_order():
    assert LAKE_COLUMN_NAMES == NAMES == LakeEvent.__struct_fields__
    assert tuple(arrow_schema().names) == NAMES
    assert tuple(spark_schema().fieldNames()) == NAMES
    assert tuple(re.findall(r"(\w+) Nullable\(", clickhouse_structure())) == NAMES
    assert set(EVENT_KEY) <= set(COUNTED_COLUMNS) <= set(NAMES)


def test_generated_types_are_the_lake_types():
    assert str(arrow_schema()) == "\n".join(
        [
            "client_id: string not null",
            "screen_id: string not null",
            "event_time: timestamp[us, tz=UTC] not null",
            "x_norm: double not null",
            "y_norm: double not null",
            "event_type: string not null",
            "received_at: timestamp[us, tz=UTC] not null",
            "batch_id: string not null",
            "kafka_partition: int32 not null",
            "kafka_offset: int64 not null",
            "batch_index: int32 not null",
            "device: string",
            "view_id: string",
            "viewport_w: int32",
            "viewport_h: int32",
            "screen_w: int32",
            "screen_h: int32",
        ]
    )
    # Readers take every column nullable (a bad line reads as nulls) and every integer as 64-bit.
    assert spark_schema(COUNTED_COLUMNS).simpleString() == (
        "struct<client_id:string,screen_id:string,x_norm:double,y_norm:double,batch_id:string,batch_index:bigint>"
    )
    assert clickhouse_structure(COUNTED_COLUMNS) == (
        "client_id Nullable(String), screen_id Nullable(String), x_norm Nullable(Float64), "
        "y_norm Nullable(Float64), batch_id Nullable(String), batch_index Nullable(Int64)"
    )
    assert tuple(column.name for column in LAKE_COLUMNS if column.nullable) == V2_NAMES


def test_landing_writes_exactly_the_definition():
    part, events = _landed_part()
    for line in part.json_body().read().splitlines():
        assert tuple(msgspec.json.decode(line)) == NAMES
    parquet = pq.read_table(io.BytesIO(parquet_from_runs(part.runs, 3)))
    assert parquet.schema == arrow_schema()
    assert [LakeEvent(**row) for row in parquet.to_pylist()] == events


def test_spark_and_clickhouse_read_what_landing_writes(settings, spark):
    """Both readers, given the generated schemas, read back every column of the lines landing wrote."""
    from pyspark.sql import functions as F

    from heatmap_core.clickhouse import clickhouse

    part, events = _landed_part()
    bodies = {"json": part.json_body().read(), "parquet": parquet_from_runs(part.runs, 3)}
    expected = sorted(tuple(getattr(e, name) for name in NAMES) for e in events)
    client = s3_client(settings)
    for fmt, body in bodies.items():
        key = lake.part_key(
            part.hour, part.client_id, 3, part.first_offset, part.last_offset, fmt, settings.parquet_prefix
        )
        client.put_object(Bucket=settings.raw_bucket, Key=key, Body=body)

        # Spark hands timestamps back in the session's zone: read them as epoch microseconds.
        frame = getattr(spark.read.schema(spark_schema()), fmt)(f"s3a://{settings.raw_bucket}/{key}")
        micros = [c.name for c in LAKE_COLUMNS if c.type == UTC_MICROS]
        rows = frame.select(*[F.unix_micros(name).alias(name) if name in micros else name for name in NAMES]).collect()
        from_spark = sorted(
            tuple(datetime.fromtimestamp(row[name] / 1_000_000, UTC) if name in micros else row[name] for name in NAMES)
            for row in rows
        )
        assert from_spark == expected, fmt

        with clickhouse(settings) as ch:
            rows = ch.query(
                f"SELECT * FROM {clickhouse_s3_source(fmt)}",
                parameters={
                    "url": f"{settings.s3_endpoint.rstrip('/')}/{settings.raw_bucket}/{key}",
                    "key": settings.s3_access_key,
                    "secret": settings.s3_secret_key,
                    "structure": clickhouse_structure(),
                },
            ).result_rows
        assert sorted(tuple(as_utc(v) if isinstance(v, datetime) else v for v in row) for row in rows) == expected, fmt
