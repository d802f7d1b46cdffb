"""Writing lake files and ledger entries the way landing does, with heatmap_core's builders."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec

from heatmap_core import lake
from heatmap_core.events import UNKNOWN_DEVICE, LakeEvent
from heatmap_core.grid import cell_of
from heatmap_core.s3 import s3_client
from heatmap_core.schema import SCROLL_TABLES, TABLES, BucketTable
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


# Viewport widths of generated v2 page views: every device band, both edges of tablet.
VIEWPORT_WIDTHS = (375, 767, 768, 1023, 1024, 1440)


def make_events(
    hour: datetime, client_id: str, screen_id: str, n: int, *, partition: int, offset: int, seed: int, views: int = 0
) -> list[LakeEvent]:
    """n events in ``hour`` from Kafka records starting at ``offset`` (up to 5 events per record).

    ``views`` = 0: v1 records (mousemove, no page view, device null as in lines written before v2).
    Otherwise v2 records, each from one of ``views`` page views (viewport widths over every device
    band), with every v2 event type; a scroll event's y_norm is a depth.
    """
    from heatmap_core.events import PageView, device_class

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
    view = rng.choice(pages) if pages else None
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


def scroll_views(events: list[LakeEvent], bucket: datetime) -> dict[tuple, list[tuple[int, int]]]:
    """The views with scroll events among ``events`` (each ingested event once), as ``scroll_rows`` takes
    them: {(client_id, screen_id, device, bucket_start): [(deepest row, fold row), one per view]}, the fold
    the row of min(1, viewport_h / screen_h) (docs/ARCHITECTURE.md, Heatmap v2)."""
    from heatmap_core.events import SCROLL

    deepest: dict[tuple, int] = {}
    fold: dict[tuple, int] = {}
    for e in {(e.client_id, e.batch_id, e.batch_index): e for e in events}.values():
        if e.event_type == SCROLL and e.view_id and e.viewport_h and e.screen_h:
            view = (e.client_id, e.screen_id, e.device or UNKNOWN_DEVICE, naive_utc(bucket), e.view_id)
            deepest[view] = max(deepest.get(view, 0), cell_of(0.0, e.y_norm)[1])
            fold[view] = max(fold.get(view, 0), cell_of(0.0, min(1.0, e.viewport_h / e.screen_h))[1])
    views: dict[tuple, list[tuple[int, int]]] = {}
    for view, row in deepest.items():
        views.setdefault(view[:4], []).append((row, fold[view]))
    return views


def expected_cells(events: list[LakeEvent], hour: datetime) -> dict[tuple, int]:
    """{CELLS key (client_id, screen_id, event_type, device, bucket_start, cell_x, cell_y): count},
    each ingested event once; a line without a device (written before v2) under ``unknown``."""
    unique = {(e.client_id, e.batch_id, e.batch_index): e for e in events}
    counts: Counter = Counter()
    for e in unique.values():
        cx, cy = cell_of(e.x_norm, e.y_norm)
        counts[(e.client_id, e.screen_id, e.event_type, e.device or UNKNOWN_DEVICE, naive_utc(hour), cx, cy)] += 1
    return dict(counts)


def _table_rows(settings: Settings, table: BucketTable, start: datetime, end: datetime) -> dict[tuple, tuple]:
    """{key columns: measure columns} of ``table``'s buckets in [start, end), bucket_start naive UTC."""
    from heatmap_core.clickhouse import clickhouse

    kind = table.kind
    with clickhouse(settings) as client:
        rows = client.query(
            f"SELECT {', '.join(kind.column_names)} FROM `{settings.clickhouse_database}`.`{table.name}` "
            f"WHERE {BUCKET_WINDOW}",
            parameters=window_parameters(start, end),
        ).result_rows
    out: dict[tuple, tuple] = {}
    for row in rows:
        values = dict(zip(kind.column_names, row, strict=True))
        values["bucket_start"] = values["bucket_start"].replace(tzinfo=None)
        key = tuple(values[name] for name in kind.column_names if name not in kind.measures)
        assert key not in out, f"duplicate row {key}"
        out[key] = tuple(int(values[name]) for name in kind.measures)
    return out


def table_cells(settings: Settings, table: str, start: datetime, end: datetime) -> dict[tuple, int]:
    """{CELLS key in column order: count} of a cells table."""
    cells = {t.name: t for t in TABLES.values()}[table]
    return {key: count for key, (count,) in _table_rows(settings, cells, start, end).items()}


def table_scroll(settings: Settings, table: str, start: datetime, end: datetime) -> dict[tuple, tuple[int, int]]:
    """{(client_id, screen_id, device, bucket_start, depth_row): (reached, folds)} of a scroll table."""
    scroll = {t.name: t for t in SCROLL_TABLES.values()}[table]
    return _table_rows(settings, scroll, start, end)


def rollup(cells: dict[tuple, int], bucket_of) -> dict[tuple, int]:
    out: Counter = Counter()
    for (client_id, screen_id, event_type, device, bucket, cx, cy), count in cells.items():
        out[(client_id, screen_id, event_type, device, bucket_of(bucket), cx, cy)] += count
    return dict(out)


def write_parquet_part(settings: Settings, hour: datetime, events: list[LakeEvent]) -> Part:
    """One Parquet part file written by landing's own writer, from the lines landing buffers."""
    from landing.buffer import Flush, PartFile, RecordRun
    from landing.lines import RecordLines, lines_run, micros
    from landing.writer import LakeWriter

    first = events[0]
    # Each line a run of its own: the events may come from several records.
    runs = []
    for event in events:
        run = lines_run([event])
        view = (
            None
            if event.view_id is None
            else (event.view_id, event.viewport_w, event.viewport_h, event.screen_w, event.screen_h)
        )
        # The line's own fields as its record's, nulls included (a line may come from before v2).
        fields = (event.client_id, event.screen_id, event.batch_id, micros(event.received_at), event.device, view)
        record = RecordLines(*fields, None, [run])  # type: ignore[arg-type]
        runs.append(RecordRun(record, event.kafka_offset, run))
    lines = [run.run.json_lines for run in runs]
    part = PartFile(hour, first.client_id, first.kafka_offset, events[-1].kafka_offset, lines, len(lines), runs)
    flush = Flush(first.kafka_partition, part.first_offset, part.last_offset, [part], None, None)
    writer = LakeWriter(settings, ("parquet",))
    try:
        (written,) = writer.write_parts([flush])[first.kafka_partition]
    finally:
        writer.close()
    return Part(written.key, events, len(events), written.size)


# The columns v2 added to a lake line: files written before v2 lack them.
V2_COLUMNS = ("device", "view_id", "viewport_w", "viewport_h", "screen_w", "screen_h")


def write_pre_v2_part(settings: Settings, hour: datetime, events: list[LakeEvent], fmt: str) -> Part:
    """A part file as landing wrote it before v2: JSON lines without the v2 keys, or Parquet with the old schema."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from heatmap_core.lake_schema import arrow_schema

    first = events[0]
    rows = [
        {name: value for name, value in msgspec.structs.asdict(e).items() if name not in V2_COLUMNS} for e in events
    ]
    if fmt == "json":
        body = b"\n".join(_encoder.encode(row) for row in rows) + b"\n"
    else:
        old_schema = pa.schema([f for f in arrow_schema() if f.name not in V2_COLUMNS])
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=old_schema), sink)
        body = sink.getvalue()
    key = lake.part_key(
        hour,
        first.client_id,
        first.kafka_partition,
        first.kafka_offset,
        events[-1].kafka_offset,
        fmt,
        settings.parquet_prefix,
    )
    put(settings, key, body)
    return Part(key, events, len(events), len(body))


def scroll_rows(views: dict[tuple, list[tuple[int, int]]]) -> dict[tuple, tuple[int, int]]:
    """The scroll table's rows from hand-stated views.

    ``views``: {(client_id, screen_id, device, bucket_start): [(deepest row, fold row), one per view]};
    returns {(client_id, screen_id, device, bucket_start, depth_row): (reached, folds)}.
    """
    reached: Counter = Counter()
    folds: Counter = Counter()
    for key, per_view in views.items():
        for deepest, fold in per_view:
            for row in range(deepest + 1):
                reached[(*key, row)] += 1
            folds[(*key, fold)] += 1
    return {key: (reached[key], folds[key]) for key in reached.keys() | folds.keys()}
