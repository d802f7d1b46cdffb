"""Per-partition buffer of lake lines, grouped into the part files a flush writes."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import groupby

import msgspec

from heatmap_core.events import RawBatchRecord, lake_events
from heatmap_core.lake_schema import LakeEvent

_encoder = msgspec.json.Encoder()


def latest(current: datetime | None, candidate: datetime | None) -> datetime | None:
    if current is None or (candidate is not None and candidate > current):
        return candidate
    return current


def _hour_runs(events: list[LakeEvent], newest: datetime) -> Iterable[tuple[datetime, list[LakeEvent]]]:
    """The events as runs of one UTC hour each, in order (lake_events gives UTC times).

    Per-event work in Python was most of landing's time, so a batch within one hour (nearly all
    of them) costs two hour computations, and the lines of a run are encoded in one call.
    """
    hour_of = partial(datetime.replace, minute=0, second=0, microsecond=0)
    hour = hour_of(newest)
    if hour_of(min(event.event_time for event in events)) == hour:
        return [(hour, events)]
    return [(hour, list(run)) for hour, run in groupby(events, key=lambda event: hour_of(event.event_time))]


@dataclass
class PartFile:
    """The lines of one (hour, client_id) folder taken from one flush range."""

    hour: datetime
    client_id: str
    first_offset: int
    last_offset: int
    # Whole JSON lines, one chunk per encoded run: splitting each run into a bytes object per
    # line and joining them again was about a sixth of landing's CPU.
    chunks: list[bytes] = field(default_factory=list)
    events: int = 0  # the lines of the chunks
    # The same lines, one list per encoded run (one record's lines of the hour): the Parquet copy's columns.
    runs: list[list[LakeEvent]] = field(default_factory=list)

    def json_body(self) -> bytes:
        return b"".join(self.chunks)


@dataclass
class Flush:
    """What one flush of one partition lands: the offset range and its part files."""

    kafka_partition: int
    first_offset: int
    last_offset: int
    files: list[PartFile]
    max_event_time: datetime | None
    max_received_at: datetime | None

    @property
    def events(self) -> int:
        return sum(part.events for part in self.files)


class PartitionBuffer:
    """Records of one Kafka partition read since its last flush.

    The flush range is always a contiguous run of offsets starting right after
    the last committed one, so a flush is identified by (partition, first, last).
    """

    def __init__(self, kafka_partition: int, keep_lines: bool = True):
        self.kafka_partition = kafka_partition
        # Whether part files keep their lines (``PartFile.runs``) beside the JSON: only the Parquet copy needs them.
        self.keep_lines = keep_lines
        self._clear()

    def _clear(self) -> None:
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.files: dict[tuple[datetime, str], PartFile] = {}
        self.events = 0
        self.bytes = 0
        self.started_at: float | None = None
        self.max_event_time: datetime | None = None
        self.max_received_at: datetime | None = None

    @property
    def empty(self) -> bool:
        return self.first_offset is None

    def age(self, now: float) -> float:
        return 0.0 if self.started_at is None else now - self.started_at

    def add(self, offset: int, record: RawBatchRecord | None) -> None:
        """Buffer one record; None stands for a rejected record whose offset is still covered."""
        if self.first_offset is None:
            self.first_offset = offset
            self.started_at = time.monotonic()
        self.last_offset = offset
        if record is None or not record.events:
            return
        self.max_received_at = latest(self.max_received_at, record.received_at.astimezone(UTC))
        events = lake_events(record, self.kafka_partition, offset)
        newest = max(event.event_time for event in events)
        self.max_event_time = latest(self.max_event_time, newest)
        for hour, run in _hour_runs(events, newest):
            part = self.files.get((hour, record.client_id))
            if part is None:
                part = self.files[(hour, record.client_id)] = PartFile(hour, record.client_id, offset, offset)
            lines = _encoder.encode_lines(run)
            part.last_offset = offset
            part.chunks.append(lines)
            if self.keep_lines:
                part.runs.append(run)
            part.events += len(run)
            self.bytes += len(lines)
        self.events += len(events)

    def take(self) -> Flush:
        if self.first_offset is None or self.last_offset is None:
            raise ValueError("nothing buffered")
        flush = Flush(
            kafka_partition=self.kafka_partition,
            first_offset=self.first_offset,
            last_offset=self.last_offset,
            files=list(self.files.values()),
            max_event_time=self.max_event_time,
            max_received_at=self.max_received_at,
        )
        self._clear()
        return flush
