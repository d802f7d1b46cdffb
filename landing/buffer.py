"""Per-partition buffer of lake lines, grouped into the part files a flush writes."""

from __future__ import annotations

import io
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from typing import NamedTuple, TypeVar

from landing.lines import RecordLines, Run, from_micros

Moment = TypeVar("Moment", datetime, int)  # a datetime, or microseconds since the epoch


def latest(current: Moment | None, candidate: Moment | None) -> Moment | None:
    if current is None or (candidate is not None and candidate > current):
        return candidate
    return current


class ChunksBody(io.RawIOBase):
    """Chunks of bytes read as one seekable file, without joining them: the body of a part's PUT.

    Joining a part's chunks (up to ``max_bytes``, 16 MiB) into one bytes object wrote every page of
    fresh memory, about a sixth of landing's CPU on these machines (BENCHMARKS.md, 2026-11-28). The
    HTTP client reads the body piece by piece anyway, and seeks back to its start for a retry.
    """

    def __init__(self, chunks: list[bytes]):
        self._chunks = chunks
        self._starts = list(accumulate(map(len, chunks), initial=0))  # each chunk's offset, then the size
        self._position = 0

    def __len__(self) -> int:
        return self._starts[-1]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self)}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        """At most ``size`` bytes (all the rest when negative), from one chunk unless all are asked for."""
        if self._position >= len(self):
            return b""
        index = bisect_right(self._starts, self._position) - 1
        start = self._position - self._starts[index]
        if size is None or size < 0:
            piece = b"".join([self._chunks[index][start:], *self._chunks[index + 1 :]])
        else:
            piece = self._chunks[index][start : start + size]
        self._position += len(piece)
        return piece

    def readinto(self, buffer) -> int:
        piece = self.read(len(buffer))
        buffer[: len(piece)] = piece
        return len(piece)


class RecordRun(NamedTuple):
    """One run of a record's lines with the record they come from: a slice of a part's Parquet copy."""

    record: RecordLines
    kafka_offset: int
    run: Run


@dataclass
class PartFile:
    """The lines of one (hour, client_id) folder taken from one flush range."""

    hour: datetime
    client_id: str
    first_offset: int
    last_offset: int
    # Whole JSON lines, one chunk per run: splitting each run into a bytes object per
    # line and joining them again was about a sixth of landing's CPU.
    chunks: list[bytes] = field(default_factory=list)
    events: int = 0  # the lines of the chunks
    # The same lines as columns, one entry per chunk: the Parquet copy's input.
    runs: list[RecordRun] = field(default_factory=list)

    def json_body(self) -> ChunksBody:
        return ChunksBody(self.chunks)


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

    def __init__(self, kafka_partition: int, keep_columns: bool = True):
        self.kafka_partition = kafka_partition
        # Whether part files keep their runs' columns (``PartFile.runs``): only the Parquet copy needs them.
        self.keep_columns = keep_columns
        self._clear()

    def _clear(self) -> None:
        self.first_offset: int | None = None
        self.last_offset: int | None = None
        self.files: dict[tuple[int, str], PartFile] = {}
        self.events = 0
        self.bytes = 0
        self.started_at: float | None = None
        # Microseconds since the epoch, as the codecs give them.
        self.max_event_us: int | None = None
        self.max_received_us: int | None = None

    @property
    def empty(self) -> bool:
        return self.first_offset is None

    def age(self, now: float) -> float:
        return 0.0 if self.started_at is None else now - self.started_at

    def add(self, offset: int, record: RecordLines | None) -> None:
        """Buffer one record's lines; None stands for a rejected record whose offset is still covered."""
        if self.first_offset is None:
            self.first_offset = offset
            self.started_at = time.monotonic()
        self.last_offset = offset
        if record is None or not record.runs:
            return
        self.max_received_us = latest(self.max_received_us, record.received_at_us)
        self.max_event_us = latest(self.max_event_us, record.newest_event_us)
        for run in record.runs:
            part = self.files.get((run.hour_us, record.client_id))
            if part is None:
                part = PartFile(from_micros(run.hour_us), record.client_id, offset, offset)
                self.files[(run.hour_us, record.client_id)] = part
            part.last_offset = offset
            part.chunks.append(run.json_lines)
            if self.keep_columns:
                part.runs.append(RecordRun(record, offset, run))
            part.events += run.events
            self.bytes += len(run.json_lines)
            self.events += run.events

    def take(self) -> Flush:
        if self.first_offset is None or self.last_offset is None:
            raise ValueError("nothing buffered")
        flush = Flush(
            kafka_partition=self.kafka_partition,
            first_offset=self.first_offset,
            last_offset=self.last_offset,
            files=list(self.files.values()),
            max_event_time=None if self.max_event_us is None else from_micros(self.max_event_us),
            max_received_at=None if self.max_received_us is None else from_micros(self.max_received_us),
        )
        self._clear()
        return flush
