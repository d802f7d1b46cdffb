"""The native lake-line codec against the reference: the same lines for every record it takes, and
the reference's verdict for every record it leaves (landing.lines)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmap_core.events import DEVICES, EVENT_TYPES, Event, PageView, RawBatchRecord, decode_record, encode_record
from landing.lines import RecordLines, native_lines, record_lines, reference_lines

ids = st.text("abcXYZ019_-", min_size=1, max_size=64)
# Offsets the reference writes as +HH:MM (whole minutes); at the ends of years 1 and 9999 an offset
# can carry a time out of range in UTC, which both codecs must refuse.
zones = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda minutes: timezone(timedelta(minutes=minutes)))
edges = st.one_of(
    st.datetimes(max_value=datetime(1, 1, 2), timezones=zones),
    st.datetimes(min_value=datetime(9999, 12, 31), timezones=zones),
)
# About one time in thirty at an edge, so most records still take the native path.
moments = st.integers(0, 29).flatmap(
    lambda draw: edges if draw == 0 else st.datetimes(timezones=st.one_of(st.just(UTC), zones))
)
norms = st.one_of(st.sampled_from([0.0, 1.0, -0.0, 0.5, 1e-7, 5e-324]), st.floats(0.0, 1.0))
events = st.builds(Event, event_time=moments, x_norm=norms, y_norm=norms, event_type=st.sampled_from(EVENT_TYPES))
views = st.builds(
    PageView,
    view_id=st.text("abcXYZ019_-", min_size=8, max_size=64),
    viewport_w=st.integers(1, 16_384),
    viewport_h=st.integers(1, 16_384),
    screen_w=st.integers(1, 1_000_000),
    screen_h=st.integers(1, 1_000_000),
)
records = st.builds(
    RawBatchRecord,
    version=st.sampled_from([1, 2]),
    client_id=ids,
    screen_id=ids,
    # Unicode too; quotes and backslashes, which the record escapes, leave the record to the reference.
    batch_id=st.text(max_size=40),
    received_at=moments,
    events=st.lists(events, max_size=30),
    view=st.one_of(st.none(), views),
    device=st.sampled_from(DEVICES),
)


def native(value: bytes) -> RecordLines | None:
    return native_lines(value, 5, 77)


@settings(max_examples=400, deadline=None)
@given(records)
def test_the_native_codec_gives_the_reference_lines_for_every_record_it_takes(record):
    value = encode_record(record)
    lines = native(value)
    try:
        expected = reference_lines(decode_record(value), 5, 77)
    except OverflowError:  # a time out of range in UTC: record_lines rejects it
        assert lines is None
        return
    if lines is None:
        # Only an escaped string sends a valid record to the reference.
        assert "\\" in value.decode()
    else:
        assert lines == expected


def test_plain_records_take_the_native_path():
    """So the property above compares the two codecs and does not hold vacuously."""
    now = datetime(2026, 2, 2, 10, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=1)))
    record = RawBatchRecord(
        client_id="acme",
        screen_id="home",
        batch_id="b-1",
        received_at=now,
        events=[Event(now, 0.1, 0.2, "click"), Event(now + timedelta(hours=1, microseconds=1), 1.0, 0.0)],
        view=PageView(view_id="view-0001", viewport_w=390, viewport_h=844, screen_w=390, screen_h=3400),
        device="mobile",
    )
    lines = native(encode_record(record))
    assert lines is not None
    assert lines == reference_lines(record, 5, 77)
    assert [(run.hour_us, run.events) for run in lines.runs] == [(1_770_022_800_000_000, 1), (1_770_030_000_000_000, 1)]
    assert b'"event_time":"2026-02-02T09:59:59.999999Z"' in lines.runs[0].json_lines


@pytest.mark.parametrize(
    "value",
    [
        # forms the reference reads and the native codec leaves to it
        b'{"client_id":"a","screen_id":"s","batch_id":"b\\"1","received_at":"2026-01-01T00:00:00Z","events":[]}',
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00.123456789Z",'
        b'"events":[{"event_time":"2026-01-01 00:00:00z","x_norm":0,"y_norm":1}]}',
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00+0100",'
        b'"events":[{"event_time":"2026-01-01T00:00:00Z","x_norm":0,"y_norm":1}]}',
    ],
)
def test_odd_but_valid_records_get_the_reference_lines(value):
    assert native(value) is None
    assert record_lines(value, 5, 77) == reference_lines(decode_record(value), 5, 77)


EVENT = '{"event_time":"2026-01-01T00:00:00Z","x_norm":0.5,"y_norm":0.5}'


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"{}",
        b'{"version":3,"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","events":[]}',
        b'{"client_id":"a/b","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","events":[]}',
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00","events":[]}',
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","device":null,"events":[]}',
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-02-29T00:00:00Z","events":[]}',
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","events":['
        + EVENT.replace("0.5,", "1.5,", 1).encode()
        + b"]}",
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","events":['
        + EVENT.replace("}", ',"event_type":"hover"}').encode()
        + b"]}",
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","events":['
        + EVENT.replace("}", ',"extra":1}').encode()
        + b"]}",
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","events":[],'
        b'"view":{"view_id":"short","viewport_w":1,"viewport_h":1,"screen_w":1,"screen_h":1}}',
        # valid times that fall before year 1 or after year 9999 in UTC
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"0001-01-01T00:59:59+01:00","events":[]}',
        b'{"client_id":"a","screen_id":"s","batch_id":"b","received_at":"2026-01-01T00:00:00Z","events":['
        + EVENT.replace("2026-01-01T00:00:00Z", "9999-12-31T23:30:00-00:31").encode()
        + b"]}",
    ],
)
def test_what_the_reference_rejects_the_native_codec_does_not_take(value):
    assert native(value) is None
    with pytest.raises((msgspec.DecodeError, ValueError)):
        record_lines(value, 5, 77)
