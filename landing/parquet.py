"""The Parquet encoder of the raw lake (Phase 2), against the schema heatmap_core.lake_schema defines.

A Parquet part file is built column by column from the runs its JSON twin was
written from (``PartFile.runs``), against the explicit schema: the two copies
hold the same lines, and no line is parsed back from JSON nor goes through a
Python object per event. Each event's columns come packed by the codec
(``landing.lines.Run``) and are joined into Arrow buffers as they are; the
fields a record gives all its lines are taken once per run and repeated by Arrow.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from heatmap_core.events import EVENT_TYPES
from heatmap_core.lake_schema import arrow_schema
from landing.buffer import RecordRun

LAKE_SCHEMA = arrow_schema()
_TYPE_NAMES = pa.array(EVENT_TYPES, pa.string())


def _view(index: int) -> Callable[[RecordRun], Any]:
    return lambda piece: None if piece.record.view is None else piece.record.view[index]


# Each line's value of a field its record gives all its lines.
_RECORD_FIELDS: dict[str, Callable[[RecordRun], Any]] = {
    "client_id": lambda piece: piece.record.client_id,
    "screen_id": lambda piece: piece.record.screen_id,
    "received_at": lambda piece: piece.record.received_at_us,
    "batch_id": lambda piece: piece.record.batch_id,
    "kafka_offset": lambda piece: piece.kafka_offset,
    "device": lambda piece: piece.record.device,
    "view_id": _view(0),
    "viewport_w": _view(1),
    "viewport_h": _view(2),
    "screen_w": _view(3),
    "screen_h": _view(4),
}
# The packed per-event columns of a run; event_type comes as indices in EVENT_TYPES.
_EVENT_FIELDS = ("event_time", "x_norm", "y_norm", "batch_index")


def _packed(pieces: list[RecordRun], name: str, type_: pa.DataType, events: int) -> pa.Array:
    data = b"".join(getattr(piece.run, name) for piece in pieces)
    return pa.Array.from_buffers(type_, events, [None, pa.py_buffer(data)])


def _column(pieces: list[RecordRun], field: pa.Field, run_ends: list[int], partition: int) -> pa.Array:
    events = run_ends[-1]
    if field.name in _EVENT_FIELDS:
        return _packed(pieces, field.name, field.type, events)
    if field.name == "event_type":
        return _TYPE_NAMES.take(_packed(pieces, "event_type", pa.uint8(), events))
    if field.name == "kafka_partition":
        return pa.repeat(pa.scalar(partition, field.type), events)
    per_run = pa.array([_RECORD_FIELDS[field.name](piece) for piece in pieces], field.type)
    return pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(run_ends, per_run))


def parquet_from_runs(pieces: list[RecordRun], partition: int) -> bytes:
    """One Parquet file of the lines of ``pieces`` (each a non-empty run of one record's lines), in order."""
    run_ends = list(accumulate(piece.run.events for piece in pieces))
    columns = [_column(pieces, field, run_ends, partition) for field in LAKE_SCHEMA]
    table = pa.Table.from_arrays(columns, schema=LAKE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
