"""In-memory pieces of landing: part files and their Parquet copy, the lake watermark rule, the store's health."""

from __future__ import annotations

import io
import logging
import time
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import msgspec
import pyarrow.parquet as pq

from heatmap_core.events import Event, LakeEvent, PageView, RawBatchRecord, encode_record
from heatmap_core.lake import PartitionWatermark, lake_watermark
from landing.buffer import ChunksBody, PartitionBuffer
from landing.lines import RecordLines, record_lines
from landing.parquet import LAKE_SCHEMA, parquet_from_runs

CET = timezone(timedelta(hours=1))


def _record(client_id: str, *times: datetime) -> RawBatchRecord:
    return RawBatchRecord(
        client_id=client_id,
        screen_id="home_v1",
        batch_id=f"b-{client_id}",
        received_at=datetime(2026, 2, 2, 11, 0, 1, tzinfo=CET),
        events=[Event(event_time=t, x_norm=0.5, y_norm=0.5) for t in times],
    )


def _lines(record: RawBatchRecord, partition: int, offset: int) -> RecordLines:
    return record_lines(encode_record(record), partition, offset)


def test_a_batch_straddling_an_hour_goes_to_two_files_in_utc():
    buffer = PartitionBuffer(kafka_partition=2)
    straddling = _record("acme", datetime(2026, 2, 2, 10, 59, 59, tzinfo=CET), datetime(2026, 2, 2, 10, 0, tzinfo=UTC))
    buffer.add(7, _lines(straddling, 2, 7))
    buffer.add(8, None)  # a rejected record still belongs to the range
    buffer.add(9, _lines(_record("globex", datetime(2026, 2, 2, 9, 30, tzinfo=UTC)), 2, 9))
    flush = buffer.take()

    assert (flush.kafka_partition, flush.first_offset, flush.last_offset, flush.events) == (2, 7, 9, 3)
    parts = {(p.hour.hour, p.client_id): p for p in flush.files}
    assert {k: (p.first_offset, p.last_offset, p.events) for k, p in parts.items()} == {
        (9, "acme"): (7, 7, 1),
        (10, "acme"): (7, 7, 1),
        (9, "globex"): (9, 9, 1),
    }
    line = msgspec.json.decode(parts[(9, "acme")].json_body().read(), type=LakeEvent)
    assert (line.event_time, line.received_at) == (
        datetime(2026, 2, 2, 9, 59, 59, tzinfo=UTC),
        datetime(2026, 2, 2, 10, 0, 1, tzinfo=UTC),
    )
    assert b'"event_time":"2026-02-02T09:59:59Z"' in parts[(9, "acme")].json_body().read()
    assert (line.kafka_partition, line.kafka_offset, line.batch_index) == (2, 7, 0)
    assert flush.max_event_time == datetime(2026, 2, 2, 10, 0, tzinfo=UTC)
    assert buffer.empty


def test_a_chunks_body_reads_as_the_joined_bytes_in_any_pieces_and_after_any_seek():
    chunks = [b"first line\n", b"", b"second\nthird line\n", b"x" * 70_000, b"last\n"]
    whole = b"".join(chunks)
    body = ChunksBody(chunks)
    assert (len(body), body.read(), body.read(), body.tell()) == (len(whole), whole, b"", len(whole))
    for size in (1, 3, 16_384, 100_000):
        body.seek(0)
        pieces = list(iter(partial(body.read, size), b""))
        assert b"".join(pieces) == whole and max(map(len, pieces)) <= size
    # A read stops at the end of a chunk (a short read, as a raw file may give).
    assert (body.seek(5), body.read(10), body.tell()) == (5, whole[5:11], 11)
    assert (body.seek(-6, io.SEEK_END), body.read()) == (len(whole) - 6, whole[-6:])
    body.seek(12)
    assert (body.seek(3, io.SEEK_CUR), body.read(4)) == (15, whole[15:19])
    into = bytearray(8)
    body.seek(len(whole) - 3)
    assert (body.readinto(into), bytes(into[:3])) == (3, whole[-3:])
    assert ChunksBody([]).read() == b"" and len(ChunksBody([])) == 0


def test_the_parquet_copy_holds_exactly_the_json_lines_of_each_part():
    """Several records per part, a batch across an hour, v1 and v2 records (the v2 columns null in v1 lines)."""
    buffer = PartitionBuffer(kafka_partition=4)
    straddling = _record(
        "acme", datetime(2026, 2, 2, 10, 59, 59, tzinfo=CET), datetime(2026, 2, 2, 10, 0, 0, 5, tzinfo=UTC)
    )
    buffer.add(10, _lines(straddling, 4, 10))
    v2 = _record("acme", datetime(2026, 2, 2, 9, 15, tzinfo=UTC), datetime(2026, 2, 2, 9, 16, tzinfo=UTC))
    v2.view = PageView(view_id="view-0002", viewport_w=800, viewport_h=600, screen_w=800, screen_h=2400)
    v2.device, v2.batch_id, v2.events[1].event_type = "tablet", "b-v2", "click"
    buffer.add(11, _lines(v2, 4, 11))
    buffer.add(12, _lines(_record("globex", datetime(2026, 2, 2, 9, 30, tzinfo=UTC)), 4, 12))
    parts = {(p.hour.hour, p.client_id): p for p in buffer.take().files}

    assert {key: len(part.runs) for key, part in parts.items()} == {(9, "acme"): 2, (10, "acme"): 1, (9, "globex"): 1}
    for part in parts.values():
        lines = [msgspec.json.decode(line, type=LakeEvent) for line in part.json_body().read().splitlines()]
        table = pq.read_table(io.BytesIO(parquet_from_runs(part.runs, 4)))
        assert table.schema == LAKE_SCHEMA
        assert [LakeEvent(**row) for row in table.to_pylist()] == lines
    lines = [msgspec.json.decode(line, type=LakeEvent) for line in parts[(9, "acme")].json_body().read().splitlines()]
    assert [(e.kafka_offset, e.batch_index, e.device, e.view_id) for e in lines] == [
        (10, 0, "unknown", None),
        (11, 0, "tablet", "view-0002"),
        (11, 1, "tablet", "view-0002"),
    ]


def test_lake_watermark_waits_for_every_partition_and_takes_the_slowest():
    t0 = datetime(2026, 2, 2, 10, 0, tzinfo=UTC)

    def mark(partition, received=None, caught_up=None):
        return PartitionWatermark(
            topic="t", kafka_partition=partition, updated_at=t0, max_received_at=received, caught_up_at=caught_up
        )

    busy = mark(0, received=t0 + timedelta(minutes=5))
    idle = mark(1, received=t0, caught_up=t0 + timedelta(minutes=9))
    assert lake_watermark([busy, idle], partitions=3) is None
    assert lake_watermark([busy, idle, mark(2)], partitions=3) is None
    assert lake_watermark([busy, idle, mark(2, caught_up=t0 + timedelta(minutes=7))], partitions=3) == t0 + timedelta(
        minutes=5
    )


def test_a_write_sent_before_a_refusal_began_does_not_end_it(caplog):
    """Parallel writes as the store goes away: one is stored, sent just before, while another fails."""
    from botocore.exceptions import EndpointConnectionError

    from landing.health import StoreHealth

    caplog.set_level(logging.INFO, logger="landing.health")
    health = StoreHealth("heatmap-raw")
    sent_before = time.monotonic()
    health.refused(EndpointConnectionError(endpoint_url="http://127.0.0.1:9000"))
    health.accepted(sent_before)
    assert health.report().status == "degraded"
    health.accepted(time.monotonic())
    assert health.report().status == "ok"
    assert [r.msg for r in caplog.records if r.name == "landing.health"] == [
        "object_store_refusing",
        "object_store_back",
    ]
