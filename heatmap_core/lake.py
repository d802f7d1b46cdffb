"""Raw lake layout on the object store: the one path builder and parser.

    <bucket>/[<parquet_prefix>/]dt=YYYY-MM-DD/hour=HH/client_id=<id>/part-p<P>-o<first>-<last>.<ext>

dt and hour come from the event's event_time in UTC. A part file is named by
the Kafka partition and offset range it holds, so re-flushing the same range
overwrites the same object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from heatmap_core.ids import validate_id
from heatmap_core.timeutil import hour_start, parse_hour

FORMATS = {"json": "json", "parquet": "parquet"}
# What an analyst reads in the Dagster UI; the builders below write exactly this.
LAYOUT = "dt=YYYY-MM-DD/hour=HH/client_id=<id>/part-p<partition>-o<first>-<last>.<json|parquet>"

# The folders of one hour anywhere in a key or path: group 1 is dt, group 2 the
# hour. Plain groups only, so Java's regex engine (Spark's regexp_extract)
# reads it exactly as Python's does.
HOUR_FOLDERS_PATTERN = r"dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/"

_PART_RE = re.compile(
    rf"^(?:[^/]+/)?{HOUR_FOLDERS_PATTERN}"
    r"client_id=(?P<client_id>[A-Za-z0-9_-]{1,64})/"
    r"part-p(?P<partition>\d+)-o(?P<first>\d+)-(?P<last>\d+)\.(?P<ext>json|parquet)$"
)


def _root(fmt: str, parquet_prefix: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown lake format {fmt!r}")
    return f"{parquet_prefix}/" if fmt == "parquet" else ""


def hour_prefix(hour: datetime, fmt: str = "json", parquet_prefix: str = "parquet") -> str:
    """Key prefix holding every client's files of one UTC hour."""
    h = hour_start(hour)
    return f"{_root(fmt, parquet_prefix)}dt={h:%Y-%m-%d}/hour={h:%H}/"


def client_hour_prefix(hour: datetime, client_id: str, fmt: str = "json", parquet_prefix: str = "parquet") -> str:
    validate_id(client_id, "client_id")
    return f"{hour_prefix(hour, fmt, parquet_prefix)}client_id={client_id}/"


def part_key(
    hour: datetime,
    client_id: str,
    kafka_partition: int,
    first_offset: int,
    last_offset: int,
    fmt: str = "json",
    parquet_prefix: str = "parquet",
) -> str:
    if kafka_partition < 0 or first_offset < 0 or last_offset < first_offset:
        raise ValueError("invalid Kafka origin for a part file")
    return (
        f"{client_hour_prefix(hour, client_id, fmt, parquet_prefix)}"
        f"part-p{kafka_partition:04d}-o{first_offset:020d}-{last_offset:020d}.{FORMATS[fmt]}"
    )


@dataclass(frozen=True)
class PartKey:
    hour: datetime
    client_id: str
    kafka_partition: int
    first_offset: int
    last_offset: int
    fmt: str


def parse_part_key(key: str) -> PartKey | None:
    """Inverse of ``part_key``; None for keys that are not lake part files."""
    match = _PART_RE.match(key)
    if not match:
        return None
    return PartKey(
        hour=parse_hour(f"{match[1]} {match[2]}"),
        client_id=match["client_id"],
        kafka_partition=int(match["partition"]),
        first_offset=int(match["first"]),
        last_offset=int(match["last"]),
        fmt=match["ext"],
    )


def hour_glob(hour: datetime, fmt: str = "json", parquet_prefix: str = "parquet") -> str:
    """Every client's part files of one hour, as a key glob."""
    return f"{hour_prefix(hour, fmt, parquet_prefix)}client_id=*/part-*.{FORMATS[fmt]}"


# --------------------------------------------------------------------------- staging of the hourly job
#
# The hourly job's executors write the rows of both kinds (cells, scroll) as Parquet,
# in one Spark write, under
#     _staging/<run id>/kind=<cells|scroll>/hour_id=YYYYMMDDHH/part-*.parquet
# and ClickHouse reads one hour's folder of a kind into that bucket's replacement. A run
# deletes its prefix when it ends; a prefix left by a run that died is named by
# that run, read by nothing else, and swept once older than STAGING_MAX_AGE.

STAGING_PREFIX = "_staging/"
STAGING_KIND_COLUMN = "kind"  # the folder per kind (Spark's first partitionBy column)
STAGING_HOUR_COLUMN = "hour_id"  # the folder per hour within it (the second)
STAGING_HOUR_ID = "%Y%m%d%H"  # its value: the hour's digits
STAGING_MAX_AGE = timedelta(days=1)


def staging_prefix(run_id: str) -> str:
    """Everything one run stages."""
    validate_id(run_id, "run_id")
    return f"{STAGING_PREFIX}{run_id}/"


def staging_kind_prefix(run_id: str, kind_name: str) -> str:
    """Where one run's executors write the rows of one kind (``schema.TableKind.name``)."""
    validate_id(kind_name, "kind_name")
    return f"{staging_prefix(run_id)}{STAGING_KIND_COLUMN}={kind_name}/"


def staging_hour_glob(run_id: str, kind_name: str, hour: datetime) -> str:
    """The Parquet files of one hour of one kind staged by one run."""
    return (
        f"{staging_kind_prefix(run_id, kind_name)}{STAGING_HOUR_COLUMN}={hour_start(hour):{STAGING_HOUR_ID}}/*.parquet"
    )


# --------------------------------------------------------------------------- change ledger
#
# After landing has durably written a flush's part files (and before it commits
# the Kafka offsets), it writes one small ledger entry naming what it wrote.
# Keys sort by write time, so the Dagster sensor reads only entries after its
# cursor instead of listing the whole lake.

LEDGER_PREFIX = "_ledger/"


class LedgerFile(msgspec.Struct, kw_only=True):
    key: str
    dt: str  # YYYY-MM-DD
    hour: int
    client_id: str
    events: int
    bytes: int
    format: str = "json"

    @classmethod
    def of_hour(cls, hour: datetime, *, key: str, client_id: str, events: int, bytes: int, format: str) -> LedgerFile:
        """The entry of a part file of the UTC hour containing ``hour``."""
        start = hour_start(hour)
        return cls(
            key=key,
            dt=f"{start:%Y-%m-%d}",
            hour=start.hour,
            client_id=client_id,
            events=events,
            bytes=bytes,
            format=format,
        )

    @property
    def utc_hour(self) -> datetime:
        """The hour (its start, UTC) of the file: the inverse of ``of_hour``."""
        return parse_hour(f"{self.dt} {self.hour:02d}")


class LedgerEntry(msgspec.Struct, kw_only=True):
    written_at: datetime
    kafka_partition: int
    first_offset: int
    last_offset: int
    files: list[LedgerFile]


REJECTED_PREFIX = "_rejected/"


def rejected_key(topic: str, kafka_partition: int, offset: int) -> str:
    """Where landing keeps an undecodable record, named by its origin so a replay overwrites it."""
    return f"{REJECTED_PREFIX}{topic}/p{kafka_partition:04d}-o{offset:020d}.bin"


def ledger_time_prefix(moment: datetime) -> str:
    """A key prefix above every entry written before ``moment`` and below every one written at or after it."""
    return f"{LEDGER_PREFIX}{moment.astimezone(UTC):%Y%m%dT%H%M%S%f}Z"


def ledger_key(written_at: datetime, kafka_partition: int, first_offset: int) -> str:
    return f"{ledger_time_prefix(written_at)}-p{kafka_partition:04d}-o{first_offset:020d}.json"


def encode_ledger(entry: LedgerEntry) -> bytes:
    return msgspec.json.encode(entry)


def decode_ledger(body: bytes) -> LedgerEntry:
    return msgspec.json.decode(body, type=LedgerEntry)


# --------------------------------------------------------------------------- partition watermarks
#
# One small object per Kafka partition, rewritten by landing at every flush and
# while a caught-up partition idles. Before a flush writes its part files it
# records the flush's offset range, so whoever consumes the partition next
# (a restarted process, another instance) re-flushes exactly that range onto
# exactly the same keys. After the files and the ledger entry are durable it
# advances the watermarks, which tell a reader how far in receive time each
# partition has landed, so it can call an hour complete (the rule is in
# docs/ARCHITECTURE.md; the raw_events sensor itself follows the ledger).

WATERMARK_PREFIX = "_watermarks/"


class PartitionWatermark(msgspec.Struct, kw_only=True):
    topic: str
    kafka_partition: int
    updated_at: datetime
    # The newest flush's Kafka offset range; it is durable once landed_through_offset reaches it.
    flush_first_offset: int = -1
    flush_last_offset: int = -1
    # The last offset whose events are durably in the lake (-1: none yet).
    landed_through_offset: int = -1
    max_event_time: datetime | None = None
    max_received_at: datetime | None = None
    # Wall time at which landing last saw this partition fully landed (nothing unread or buffered).
    caught_up_at: datetime | None = None

    @property
    def landed_until(self) -> datetime | None:
        """Receive time before which this partition's events are in the lake."""
        return max((t for t in (self.max_received_at, self.caught_up_at) if t is not None), default=None)


def watermark_key(topic: str, kafka_partition: int) -> str:
    return f"{WATERMARK_PREFIX}{topic}/p{kafka_partition:04d}.json"


def encode_watermark(watermark: PartitionWatermark) -> bytes:
    return msgspec.json.encode(watermark)


def decode_watermark(body: bytes) -> PartitionWatermark:
    return msgspec.json.decode(body, type=PartitionWatermark)


def lake_watermark(watermarks: list[PartitionWatermark], partitions: int) -> datetime | None:
    """Receive time before which every partition of the topic has landed.

    None until each of the ``partitions`` has reported. An hour may be called
    complete once this passes the hour's end plus a grace for batches still in
    flight; events for it that arrive later are late and land as new part files
    with their own ledger entries.
    """
    by_partition = {w.kafka_partition: w.landed_until for w in watermarks}
    landed = [t for t in by_partition.values() if t is not None]
    if len(by_partition) < partitions or len(landed) < len(by_partition):
        return None
    return min(landed)
