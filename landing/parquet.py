"""The Parquet encoder of the raw lake (Phase 2), against the schema heatmap_core.lake_schema defines.

A Parquet part file is parsed by Arrow's JSON reader from the very bytes of its
JSON twin, against the explicit schema: the two copies cannot drift apart, and
no Python object conversion (which would drag pandas in) is involved.
"""

from __future__ import annotations

import io

import pyarrow.json as pa_json
import pyarrow.parquet as pq

from heatmap_core.lake_schema import arrow_schema

LAKE_SCHEMA = arrow_schema()

_PARSE = pa_json.ParseOptions(explicit_schema=LAKE_SCHEMA, unexpected_field_behavior="error")
_READ = pa_json.ReadOptions(use_threads=False)


def parquet_from_json_lines(json_lines: bytes) -> bytes:
    table = pa_json.read_json(io.BytesIO(json_lines), read_options=_READ, parse_options=_PARSE).cast(LAKE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
