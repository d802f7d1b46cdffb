"""A Kafka record's lake lines, as JSON lines and as Parquet columns, one run per UTC hour.

Two codecs give the same ``RecordLines`` for a record:

- ``heatmap_native.lake_record`` (Rust, ``native/``): decodes the record and writes its
  lines and their columns without a Python object per event. It takes a strict subset of
  what the reference takes and returns None for anything else.
- ``reference_lines``: the record decoded by msgspec (``heatmap_core.events``), its lines
  built by ``lake_events`` and encoded by msgspec. It decides what is rejected, and it is the
  oracle the native codec is tested against (tests/landing/test_native.py).

The native codec was written because per-event Python was most of landing's CPU
(BENCHMARKS.md, 2026-11-27, issue 14).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import NamedTuple

import heatmap_native
import msgspec

from heatmap_core.events import EVENT_TYPES, READABLE_RECORD_VERSIONS, RawBatchRecord, decode_record, lake_events
from heatmap_core.lake_schema import LakeEvent

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
_encoder = msgspec.json.Encoder()
# The native codec codes event types by their place in this tuple: a build from other sources would
# label every event wrongly, so it must not load.
if tuple(heatmap_native.EVENT_TYPES) != EVENT_TYPES:
    raise ImportError(
        f"heatmap_native codes event types as {heatmap_native.EVENT_TYPES}, heatmap_core as {EVENT_TYPES}: "
        "rebuild it with scripts/bootstrap.sh"
    )


class Run(NamedTuple):
    """A record's lines of one UTC hour, in order: JSON lines, and each per-event column packed
    little-endian (int64 microseconds, float64, float64, uint8 index in EVENT_TYPES, int32)."""

    hour_us: int
    json_lines: bytes
    events: int
    event_time: bytes
    x_norm: bytes
    y_norm: bytes
    event_type: bytes
    batch_index: bytes


class RecordLines(NamedTuple):
    """What a record gives each of its lines, and its runs (none for a record without events)."""

    client_id: str
    screen_id: str
    batch_id: str
    received_at_us: int
    device: str
    view: tuple[str, int, int, int, int] | None  # view_id, viewport_w, viewport_h, screen_w, screen_h
    newest_event_us: int | None
    runs: list[Run]


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def native_lines(value: bytes, partition: int, offset: int) -> RecordLines | None:
    """The native codec's lines of a Kafka record, None when it leaves the record to the reference."""
    answer = heatmap_native.lake_record(value, partition, offset)
    if answer is None:
        return None
    client_id, screen_id, batch_id, received_at_us, device, view, newest_event_us, runs = answer
    return RecordLines(
        client_id, screen_id, batch_id, received_at_us, device, view, newest_event_us, [Run(*run) for run in runs]
    )


def record_lines(value: bytes, partition: int, offset: int) -> RecordLines:
    """The lines of a Kafka record; raises ``msgspec.DecodeError`` or ``ValueError`` for a record to reject."""
    lines = native_lines(value, partition, offset)
    if lines is not None:
        return lines
    record = decode_record(value)
    # Older versions stay readable (a v1 record decodes with no view, device unknown).
    if record.version not in READABLE_RECORD_VERSIONS:
        raise ValueError(f"unknown record version {record.version}")
    try:
        return reference_lines(record, partition, offset)
    except OverflowError as exc:
        # An offset can carry a valid time past year 9999 or before year 1 in UTC.
        raise ValueError(f"a time of the record is out of range in UTC ({exc})") from exc


def _packed(code: str, values: list) -> bytes:
    return struct.pack(f"<{len(values)}{code}", *values)


def lines_run(lines: list[LakeEvent]) -> Run:
    """The run of lake lines of one UTC hour, packed the way the native codec packs them."""
    return Run(
        micros(lines[0].event_time) // HOUR_US * HOUR_US,
        _encoder.encode_lines(lines),
        len(lines),
        _packed("q", [micros(line.event_time) for line in lines]),
        _packed("d", [line.x_norm for line in lines]),
        _packed("d", [line.y_norm for line in lines]),
        bytes(EVENT_TYPES.index(line.event_type) for line in lines),
        _packed("i", [line.batch_index for line in lines]),
    )


def reference_lines(record: RawBatchRecord, partition: int, offset: int) -> RecordLines:
    """The reference codec: ``lake_events``'s lines, runs of one UTC hour as ``groupby`` cuts them."""
    events = lake_events(record, partition, offset)
    runs = [lines_run(list(run)) for _, run in groupby(events, key=lambda e: micros(e.event_time) // HOUR_US)]
    view = record.view
    return RecordLines(
        record.client_id,
        record.screen_id,
        record.batch_id,
        micros(record.received_at),
        record.device,
        None if view is None else (view.view_id, view.viewport_w, view.viewport_h, view.screen_w, view.screen_h),
        max(micros(event.event_time) for event in events) if events else None,
        runs,
    )
