"""Records of every readable version land (real Kafka and S3 server): a version 1 record, written
as ingestion wrote it before page views, lands with device unknown and null view fields; a version 2
record lands with its device and page view, in the JSON lines and in Parquet alike."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from heatmap_core.events import READABLE_RECORD_VERSIONS, Event, PageView, RawBatchRecord, encode_record
from heatmap_core.lake import parse_part_key
from tests.landing.conftest import list_keys, read_lake, read_object, send_raw, wait_landed

# A record exactly as the ingestion API encoded it before v2: no view and no device keys.
V1_VALUE = (
    b'{"version":1,"client_id":"acme","screen_id":"home_v1","batch_id":"b-v1",'
    b'"received_at":"2026-02-02T09:10:05Z","events":['
    b'{"event_time":"2026-02-02T09:10:00Z","x_norm":0.25,"y_norm":0.5,"event_type":"mousemove"},'
    b'{"event_time":"2026-02-02T09:10:01Z","x_norm":0.3,"y_norm":0.55,"event_type":"click"}]}'
)
V2_RECORD = RawBatchRecord(
    client_id="acme",
    screen_id="home_v1",
    batch_id="b-v2",
    received_at=datetime(2026, 2, 2, 9, 20, 5, tzinfo=UTC),
    events=[
        Event(event_time=datetime(2026, 2, 2, 9, 20, tzinfo=UTC), x_norm=0.5, y_norm=0.34, event_type="scroll"),
        Event(event_time=datetime(2026, 2, 2, 9, 20, 2, tzinfo=UTC), x_norm=0.5, y_norm=0.2, event_type="rageclick"),
    ],
    view=PageView(view_id="view-0123abcd", viewport_w=820, viewport_h=1180, screen_w=820, screen_h=3470),
    device="tablet",
)

# The v2 columns of a line: (batch_id, batch_index) -> (event_type, device, view_id, viewport_w, viewport_h, screen_w, screen_h)
EXPECTED = {
    ("b-v1", 0): ("mousemove", "unknown", None, None, None, None, None),
    ("b-v1", 1): ("click", "unknown", None, None, None, None, None),
    ("b-v2", 0): ("scroll", "tablet", "view-0123abcd", 820, 1180, 820, 3470),
    ("b-v2", 1): ("rageclick", "tablet", "view-0123abcd", 820, 1180, 820, 3470),
}


def test_a_v1_and_a_v2_record_land_with_their_device_and_view_in_json_and_parquet(settings, start_landing):
    assert READABLE_RECORD_VERSIONS == (1, 2) and V2_RECORD.version == 2
    send_raw(settings, [V1_VALUE, encode_record(V2_RECORD)], key=V2_RECORD.key)

    landing = start_landing("--flush-interval", "0.3")
    wait_landed(settings, landing)
    landing.stop_cleanly()

    assert list_keys(settings, "_rejected/") == []
    for fmt in ("json", "parquet"):
        lines = {
            (e.batch_id, e.batch_index): (
                e.event_type,
                e.device,
                e.view_id,
                e.viewport_w,
                e.viewport_h,
                e.screen_w,
                e.screen_h,
            )
            for f in read_lake(settings, fmt)
            for e in f.events
        }
        assert lines == EXPECTED, fmt

    # Parquet holds real nulls for v1 lines (not empty strings or zeros) and the v2 columns as typed.
    keys = [k for k in list_keys(settings, settings.parquet_prefix + "/") if parse_part_key(k)]
    table = pa.concat_tables([pq.read_table(io.BytesIO(read_object(settings, key))) for key in keys])
    assert {name: table.column(name).null_count for name in ("device", "view_id", "viewport_w", "screen_h")} == {
        "device": 0,
        "view_id": 2,
        "viewport_w": 2,
        "screen_h": 2,
    }
    assert (str(table.schema.field("viewport_w").type), str(table.schema.field("view_id").type)) == ("int32", "string")
