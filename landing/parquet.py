"""The typed Parquet schema of the raw lake (Phase 2) and its encoder.

A Parquet part file is parsed by Arrow's JSON reader from the very bytes of its
JSON twin, against the explicit schema: the two copies cannot drift apart, and
no Python object conversion (which would drag pandas in) is involved.
"""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

UTC_MICROS = pa.timestamp("us", tz="UTC")

LAKE_SCHEMA = pa.schema(
    [
        pa.field("client_id", pa.string(), nullable=False),
        pa.field("screen_id", pa.string(), nullable=False),
        pa.field("event_time", UTC_MICROS, nullable=False),
        pa.field("x_norm", pa.float64(), nullable=False),
        pa.field("y_norm", pa.float64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("received_at", UTC_MICROS, nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("kafka_partition", pa.int32(), nullable=False),
        pa.field("kafka_offset", pa.int64(), nullable=False),
        pa.field("batch_index", pa.int32(), nullable=False),
    ]
)

_PARSE = pa_json.ParseOptions(explicit_schema=LAKE_SCHEMA, unexpected_field_behavior="error")
_READ = pa_json.ReadOptions(use_threads=False)


def parquet_from_json_lines(json_lines: bytes) -> bytes:
    table = pa_json.read_json(io.BytesIO(json_lines), read_options=_READ, parse_options=_PARSE).cast(LAKE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
