"""Writing lake files and ledger entries the way landing does, with heatmap_core's builders."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from heatmap_core import lake
from heatmap_core.events import LakeEvent
from heatmap_core.grid import cell_of
from heatmap_core.s3 import s3_client
from heatmap_core.settings import Settings
from heatmap_core.sql import BUCKET_WINDOW, window_parameters
from heatmap_core.timeutil import naive_utc

_encoder = msgspec.json.Encoder()


@dataclass
class Part:
    key: str
    events: list[LakeEvent]
    lines: int
    size: int


def make_events(
    hour: datetime, client_id: str, screen_id: str, n: int, *, partition: int, offset: int, seed: int
) -> list[LakeEvent]:
    """n events in ``hour`` from Kafka records starting at ``offset`` (up to 5 events per record)."""
    rng = random.Random(seed)
    events = []
    index = 0
    for i in range(n):
        x = rng.choice([0.0, 1.0, 0.5, 0.999, 0.25]) if i % 17 == 0 else rng.random()
        y = rng.choice([0.0, 1.0, 0.005, 0.995]) if i % 19 == 0 else rng.random()
        events.append(
            LakeEvent(
                client_id=client_id,
                screen_id=screen_id,
                event_time=hour + timedelta(seconds=rng.randrange(3600)),
                x_norm=x,
                y_norm=y,
                event_type="mousemove",
                received_at=hour + timedelta(seconds=3599),
                batch_id=f"b-{partition}-{offset}",
                kafka_partition=partition,
                kafka_offset=offset,
                batch_index=index,
            )
        )
        index += 1
        if index == 5:
            index = 0
            offset += 1
    return events


def write_part(settings: Settings, hour: datetime, events: list[LakeEvent], *, duplicate_every: int = 0) -> Part:
    """One JSON part file; ``duplicate_every`` repeats some lines as a landing re-flush would."""
    first = events[0]
    key = lake.part_key(hour, first.client_id, first.kafka_partition, first.kafka_offset, events[-1].kafka_offset)
    lines = []
    for i, event in enumerate(events):
        lines.append(_encoder.encode(event))
        if duplicate_every and i % duplicate_every == 0:
            lines.append(_encoder.encode(event))
    body = b"\n".join(lines) + b"\n"
    s3_client(settings).put_object(Bucket=settings.raw_bucket, Key=key, Body=body)
    return Part(key, events, len(lines), len(body))


def write_ledger(settings: Settings, parts: list[Part], written_at: datetime | None = None) -> str:
    written_at = written_at or datetime.now(UTC)
    first = parts[0].events[0]
    entry = lake.LedgerEntry(
        written_at=written_at,
        kafka_partition=first.kafka_partition,
        first_offset=first.kafka_offset,
        last_offset=max(e.kafka_offset for p in parts for e in p.events),
        files=[
            lake.LedgerFile.of_hour(
                p.events[0].event_time,
                key=p.key,
                client_id=p.events[0].client_id,
                events=p.lines,
                bytes=p.size,
                format="json",
            )
            for p in parts
        ],
    )
    key = lake.ledger_key(written_at, first.kafka_partition, first.kafka_offset)
    s3_client(settings).put_object(Bucket=settings.raw_bucket, Key=key, Body=lake.encode_ledger(entry))
    return key


def read(settings: Settings, key: str) -> bytes:
    return s3_client(settings).get_object(Bucket=settings.raw_bucket, Key=key)["Body"].read()


def put(settings: Settings, key: str, body: bytes) -> None:
    s3_client(settings).put_object(Bucket=settings.raw_bucket, Key=key, Body=body)


def delete(settings: Settings, key: str) -> None:
    s3_client(settings).delete_object(Bucket=settings.raw_bucket, Key=key)


def expected_cells(events: list[LakeEvent], hour: datetime) -> dict[tuple, int]:
    """{(client_id, screen_id, bucket_start, cell_x, cell_y): count}, each ingested event once."""
    unique = {(e.client_id, e.batch_id, e.batch_index): e for e in events}
    counts: Counter = Counter()
    for e in unique.values():
        cx, cy = cell_of(e.x_norm, e.y_norm)
        counts[(e.client_id, e.screen_id, naive_utc(hour), cx, cy)] += 1
    return dict(counts)


def table_cells(settings: Settings, table: str, start: datetime, end: datetime) -> dict[tuple, int]:
    from heatmap_core.clickhouse import clickhouse

    with clickhouse(settings) as client:
        rows = client.query(
            f"SELECT client_id, screen_id, bucket_start, cell_x, cell_y, count FROM `{settings.clickhouse_database}`.`{table}` "
            f"WHERE {BUCKET_WINDOW}",
            parameters=window_parameters(start, end),
        ).result_rows
    out: dict[tuple, int] = {}
    for client_id, screen_id, bucket, cx, cy, count in rows:
        key = (client_id, screen_id, bucket.replace(tzinfo=None), int(cx), int(cy))
        assert key not in out, f"duplicate row {key}"
        out[key] = int(count)
    return out


def rollup(cells: dict[tuple, int], bucket_of) -> dict[tuple, int]:
    out: Counter = Counter()
    for (client_id, screen_id, bucket, cx, cy), count in cells.items():
        out[(client_id, screen_id, bucket_of(bucket), cx, cy)] += count
    return dict(out)


def write_parquet_part(settings: Settings, hour: datetime, events: list[LakeEvent]) -> Part:
    """One Parquet part file written by landing's own writer, from the JSON lines landing buffers."""
    from landing.buffer import Flush, PartFile
    from landing.writer import LakeWriter

    first = events[0]
    lines = [_encoder.encode(event) + b"\n" for event in events]
    part = PartFile(hour, first.client_id, first.kafka_offset, events[-1].kafka_offset, lines)
    flush = Flush(first.kafka_partition, part.first_offset, part.last_offset, [part], None, None)
    writer = LakeWriter(settings, ("parquet",))
    try:
        (written,) = writer.write_parts([flush])[first.kafka_partition]
    finally:
        writer.close()
    return Part(written.key, events, len(events), written.size)
