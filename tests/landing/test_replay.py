"""A flush written but never committed is re-flushed onto exactly the same keys, whatever the rotation settings."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from heatmap_core.events import encode_record
from heatmap_core.lake import PartitionWatermark, parse_part_key
from landing.buffer import PartitionBuffer
from landing.lines import record_lines
from landing.writer import LakeWriter
from tests.landing.conftest import event_row, expected_rows, list_keys, make_records, produce, read_lake, wait_landed


def test_uncommitted_flush_is_replayed_onto_the_same_keys(settings, start_landing):
    records = make_records(events=4000, per_record=100)
    origins = produce(settings, records)
    crashed_partition = Counter(p for p, _ in origins).most_common(1)[0][0]

    # What a landing killed after writing its part files, before ledger and commit, leaves behind.
    buffer = PartitionBuffer(crashed_partition)
    for record, (partition, offset) in zip(records, origins, strict=True):
        if partition == crashed_partition:
            buffer.add(offset, record_lines(encode_record(record), partition, offset))
    flush = buffer.take()
    writer = LakeWriter(settings, ("json", "parquet"))
    writer.put_watermarks(
        [
            PartitionWatermark(
                topic=settings.topic,
                kafka_partition=crashed_partition,
                updated_at=datetime.now(UTC),
                flush_first_offset=flush.first_offset,
                flush_last_offset=flush.last_offset,
            )
        ]
    )
    writer.write_parts([flush])
    writer.close()
    crashed_keys = set(list_keys(settings))

    # A restart that would rotate after every single event still rewrites the crashed range as one flush.
    landing = start_landing("--flush-interval", "0", "--max-events", "1")
    wait_landed(settings, landing)
    landing.stop_cleanly()

    assert (
        f"partition {crashed_partition}: re-flushing offsets {flush.first_offset}-{flush.last_offset}" in landing.log()
    )
    files = read_lake(settings, "json")
    assert sorted(event_row(e) for f in files for e in f.events) == expected_rows(records, origins)
    part_keys = {f.key for f in files} | {f.key for f in read_lake(settings, "parquet")}
    crashed_parts = {k for k in crashed_keys if parse_part_key(k)}
    assert crashed_parts <= part_keys
    assert {
        k for k in part_keys if (part := parse_part_key(k)) and part.kafka_partition == crashed_partition
    } == crashed_parts
