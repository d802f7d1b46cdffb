"""Known events land exactly once, in the right folders, with their Kafka origin; late events add files."""

from __future__ import annotations

import io
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq

from heatmap_core.events import Event, RawBatchRecord
from heatmap_core.lake import (
    LEDGER_PREFIX,
    WATERMARK_PREFIX,
    decode_ledger,
    decode_watermark,
    lake_watermark,
    parse_part_key,
)
from heatmap_core.timeutil import hour_start
from landing.parquet import LAKE_SCHEMA
from tests.landing.conftest import (
    event_row,
    expected_rows,
    list_keys,
    make_records,
    produce,
    read_lake,
    read_object,
    wait_landed,
)


def _folder(key: str) -> str:
    return key.rsplit("/", 1)[0]


def _assert_in_place(files) -> None:
    for file in files:
        part = parse_part_key(file.key)
        assert part is not None, file.key
        for event in file.events:
            assert hour_start(event.event_time) == part.hour, file.key
            assert event.client_id == part.client_id
            assert event.kafka_partition == part.kafka_partition
            assert part.first_offset <= event.kafka_offset <= part.last_offset


def test_known_events_land_once_in_their_folders(settings, start_landing):
    records = make_records(events=6000, per_record=120, span=timedelta(hours=3))
    # A batch whose events straddle an hour boundary, sent with a non-UTC zone.
    straddling = RawBatchRecord(
        client_id="acme",
        screen_id="home_v1",
        batch_id="straddle",
        received_at=datetime(2026, 2, 2, 13, 0, 5, tzinfo=UTC),
        events=[
            Event(event_time=datetime(2026, 2, 2, 13, 59, 59, 500000, tzinfo=UTC).astimezone(), x_norm=0.0, y_norm=1.0),
            Event(event_time=datetime(2026, 2, 2, 14, 0, 0, tzinfo=UTC), x_norm=1.0, y_norm=0.0, event_type="click"),
        ],
    )
    records.append(straddling)
    origins = produce(settings, records)
    landing = start_landing("--flush-interval", "0.5", "--max-events", "1500")
    ends = wait_landed(settings, landing)

    json_files = read_lake(settings, "json")
    parquet_files = read_lake(settings, "parquet")
    lines = [event_row(e) for f in json_files for e in f.events]
    assert len(lines) == 6002
    assert sorted(lines) == expected_rows(records, origins)
    assert sorted(event_row(e) for f in parquet_files for e in f.events) == sorted(lines)
    _assert_in_place(json_files)
    _assert_in_place(parquet_files)
    folders = {_folder(f.key) for f in json_files}
    assert folders == {
        f"dt=2026-02-02/hour={h:02d}/client_id={c}" for h in (9, 10, 11) for c in ("acme", "globex", "initech")
    } | {"dt=2026-02-02/hour=13/client_id=acme", "dt=2026-02-02/hour=14/client_id=acme"}
    assert {_folder(f.key) for f in parquet_files} == {f"parquet/{folder}" for folder in folders}

    # The ledger names every part file exactly with its event count, before offsets were committed.
    ledger = [decode_ledger(read_object(settings, key)) for key in list_keys(settings, LEDGER_PREFIX)]
    ledgered = {file.key: file.events for entry in ledger for file in entry.files}
    assert ledgered == {f.key: len(f.events) for f in json_files + parquet_files}

    # One watermark per partition; together they have passed every hour of the data.
    watermarks = [decode_watermark(read_object(settings, key)) for key in list_keys(settings, WATERMARK_PREFIX)]
    assert {w.kafka_partition: w.landed_through_offset for w in watermarks if w.landed_through_offset >= 0} == {
        p: end - 1 for p, end in ends.items() if end > 0
    }
    landed_until = lake_watermark(watermarks, settings.topic_partitions)
    assert landed_until is not None and landed_until >= datetime(2026, 2, 2, 13, 0, 5, tzinfo=UTC)

    landing.stop_cleanly()


def test_late_events_land_as_new_files_in_their_hour(settings, start_landing):
    first = make_records(events=600, per_record=100, span=timedelta(minutes=30), clients=("acme",))
    produce(settings, first)
    landing = start_landing("--flush-interval", "0.3")
    wait_landed(settings, landing)
    before = {f.key: f.events for f in read_lake(settings, "json")}
    ledger_before = set(list_keys(settings, LEDGER_PREFIX))

    late = make_records(events=50, per_record=50, span=timedelta(minutes=1), clients=("acme",), seed=99)
    late_origins = produce(settings, late)
    wait_landed(settings, landing)
    after = {f.key: f.events for f in read_lake(settings, "json")}

    new_keys = set(after) - set(before)
    assert {key: after[key] for key in before} == before  # earlier files untouched
    assert len(new_keys) == 1
    (new_key,) = new_keys
    assert new_key.startswith("dt=2026-02-02/hour=09/client_id=acme/")
    assert sorted(event_row(e) for e in after[new_key]) == expected_rows(late, late_origins)
    new_entries = [
        decode_ledger(read_object(settings, k)) for k in set(list_keys(settings, LEDGER_PREFIX)) - ledger_before
    ]
    assert sorted(f.key for entry in new_entries for f in entry.files if f.format == "json") == [new_key]
    landing.stop_cleanly()


def test_sigterm_flushes_then_commits(settings, start_landing):
    records = make_records(events=3000, per_record=150)
    origins = produce(settings, records)
    # Nothing would be flushed for an hour: whatever lands was flushed by the shutdown.
    landing = start_landing("--flush-interval", "3600", "--max-events", "1000000")
    # Two progress lines in a row with everything buffered: the group has settled (a rejoin right after
    # the first assignment, which kafka-python sometimes makes, rewinds and re-reads the buffers).
    landing.wait_for_log(r"buffered=3000 lag=20 records\"\}\n[^\n]*progress: [^\n]*buffered=3000 lag=20 records\"")
    assert [k for k in list_keys(settings) if parse_part_key(k)] == []

    assert landing.stop(signal.SIGTERM) == 0
    lines = [event_row(e) for f in read_lake(settings, "json") for e in f.events]
    assert sorted(lines) == expected_rows(records, origins)
    ends = wait_landed(settings, landing, timeout_s=5)
    assert sum(ends.values()) == len(records)
    assert "received SIGTERM" in landing.log()


def test_parquet_schema_is_typed(settings, start_landing):
    produce(settings, make_records(events=200, per_record=100))
    landing = start_landing("--flush-interval", "0.3")
    wait_landed(settings, landing)
    keys = [k for k in list_keys(settings, settings.parquet_prefix + "/") if parse_part_key(k)]
    assert keys
    for key in keys:
        assert pq.read_schema(io.BytesIO(read_object(settings, key))) == LAKE_SCHEMA
    landing.stop_cleanly()
    assert Counter(part.fmt for k in list_keys(settings) if (part := parse_part_key(k))) == {
        "json": len(keys),
        "parquet": len(keys),
    }
