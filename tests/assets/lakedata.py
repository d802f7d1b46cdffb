"""Writing lake files and ledger entries the way landing does, with heatmap_core's builders."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from heatmap_core import lake
from heatmap_core.events import SCROLL, UNKNOWN_DEVICE, LakeEvent, PageView, device_class
from heatmap_core.grid import cell_of
from heatmap_core.s3 import s3_client
from heatmap_core.schema import CELLS
from heatmap_core.schema import SCROLL as SCROLL_KIND
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


# Viewport widths of v2 page views: every device band, both edges of tablet.
VIEWPORT_WIDTHS = (375, 767, 768, 1023, 1024, 1440)


def make_events(
    hour: datetime, client_id: str, screen_id: str, n: int, *, partition: int, offset: int, seed: int, views: int = 0
) -> list[LakeEvent]:
    """n events in ``hour`` from Kafka records starting at ``offset`` (up to 5 events per record).

    ``views`` = 0: v1 records (mousemove, no page view, device null as in lines written before v2).
    Otherwise v2 records, each from one of ``views`` page views (viewport widths over every device
    band), with every v2 event type; a scroll event's y_norm is a depth.
    """
    rng = random.Random(seed)
    pages = [
        PageView(
            view_id=f"view-{seed}-{v}",
            viewport_w=VIEWPORT_WIDTHS[v % len(VIEWPORT_WIDTHS)],
            viewport_h=rng.randrange(300, 1200),
            screen_w=1000,
            screen_h=rng.choice([800, 2000, 4000]),
        )
        for v in range(views)
    ]
    events = []
    index = 0
    view = rng.choice(pages) if pages else None
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
                event_type=rng.choice(("mousemove", "click", "rageclick", "scroll")) if view else "mousemove",
                received_at=hour + timedelta(seconds=3599),
                batch_id=f"b-{partition}-{offset}",
                kafka_partition=partition,
                kafka_offset=offset,
                batch_index=index,
                device=device_class(view.viewport_w) if view else None,
                view_id=view.view_id if view else None,
                viewport_w=view.viewport_w if view else None,
                viewport_h=view.viewport_h if view else None,
                screen_w=view.screen_w if view else None,
                screen_h=view.screen_h if view else None,
            )
        )
        index += 1
        if index == 5:
            index = 0
            offset += 1
            view = rng.choice(pages) if pages else None
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


def _unique(events: list[LakeEvent]) -> list[LakeEvent]:
    return list({(e.client_id, e.batch_id, e.batch_index): e for e in events}.values())


def expected_cells(events: list[LakeEvent], hour: datetime) -> dict[tuple, int]:
    """{(client_id, screen_id, event_type, device, bucket_start, cell_x, cell_y): count}, each ingested
    event once; a line without a device (written before v2) counts as unknown."""
    counts: Counter = Counter()
    for e in _unique(events):
        cx, cy = cell_of(e.x_norm, e.y_norm)
        counts[(e.client_id, e.screen_id, e.event_type, e.device or UNKNOWN_DEVICE, naive_utc(hour), cx, cy)] += 1
    return dict(counts)


def expected_scroll(events: list[LakeEvent], hour: datetime) -> dict[tuple, tuple[int, int]]:
    """{(client_id, screen_id, device, bucket_start, depth_row): (reached, folds)} as the contract
    defines them (docs/ARCHITECTURE.md, Heatmap v2), from the views with scroll events in the hour."""
    deepest: dict[tuple, int] = {}
    fold_of: dict[tuple, int] = {}
    for e in _unique(events):
        if e.event_type != SCROLL or e.view_id is None:
            continue
        view = (e.client_id, e.screen_id, e.device or UNKNOWN_DEVICE, e.view_id)
        deepest[view] = max(deepest.get(view, 0), cell_of(0.0, e.y_norm)[1])
        fold = cell_of(0.0, min(1.0, e.viewport_h / e.screen_h))[1]
        fold_of[view] = max(fold_of.get(view, 0), fold)
    reached: Counter = Counter()
    folds: Counter = Counter()
    for view, row in deepest.items():
        client_id, screen_id, device, _ = view
        for depth_row in range(row + 1):
            reached[(client_id, screen_id, device, naive_utc(hour), depth_row)] += 1
        folds[(client_id, screen_id, device, naive_utc(hour), fold_of[view])] += 1
    return {key: (reached[key], folds[key]) for key in reached.keys() | folds.keys()}


def table_rows(settings: Settings, table: str, start: datetime, end: datetime) -> dict[tuple, tuple[int, ...]]:
    """{key: measures} of a window of a bucket table of either kind (bucket_start naive UTC)."""
    from heatmap_core.clickhouse import clickhouse

    kind = SCROLL_KIND if table.startswith("heatmap_scroll_") else CELLS
    with clickhouse(settings) as client:
        rows = client.query(
            f"SELECT {', '.join(kind.key)}, {', '.join(kind.measures)} "
            f"FROM `{settings.clickhouse_database}`.`{table}` WHERE {BUCKET_WINDOW}",
            parameters=window_parameters(start, end),
        ).result_rows
    out: dict[tuple, tuple[int, ...]] = {}
    width = len(kind.key)
    for row in rows:
        key = tuple(part.replace(tzinfo=None) if isinstance(part, datetime) else part for part in row[:width])
        assert key not in out, f"duplicate row {key}"
        out[key] = tuple(int(value) for value in row[width:])
    return out


def table_cells(settings: Settings, table: str, start: datetime, end: datetime) -> dict[tuple, int]:
    """{(client_id, screen_id, event_type, device, bucket_start, cell_x, cell_y): count} of a cells table."""
    return {key: count for key, (count,) in table_rows(settings, table, start, end).items()}


def rollup(rows: dict[tuple, int] | dict[tuple, tuple[int, ...]], bucket_of) -> dict:
    """Rows of either kind (count, or a tuple of measures) summed into the coarser buckets ``bucket_of`` gives."""
    out: dict = {}
    for key, value in rows.items():
        at = next(i for i, part in enumerate(key) if isinstance(part, datetime))
        coarse = (*key[:at], bucket_of(key[at]), *key[at + 1 :])
        before = out.get(coarse)
        if before is None:
            out[coarse] = value
        elif isinstance(value, int):
            out[coarse] = before + value
        else:
            out[coarse] = tuple(a + b for a, b in zip(before, value, strict=True))
    return out


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
