"""Property-based tests of identifiers and the lake path builder (pure)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heatmap_core.ids import InvalidId, is_valid_id, validate_id
from heatmap_core.lake import (
    client_hour_prefix,
    hour_prefix,
    ledger_key,
    parse_part_key,
    part_key,
    staging_hour_glob,
    staging_kind_prefix,
)

valid_ids = st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z")
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@given(valid_ids)
def test_valid_ids_accepted(value):
    assert validate_id(value) == value


@given(st.text(max_size=80).filter(lambda s: not is_valid_id(s)))
def test_invalid_ids_refused_by_the_path_builder(value):
    with pytest.raises(InvalidId):
        client_hour_prefix(datetime(2026, 2, 2, 10, tzinfo=UTC), value)


@pytest.mark.parametrize("value", ["", "a" * 65, "../etc", "a/b", "a b", "x'; DROP TABLE t --", "é", "a.b", None, 7])
def test_dangerous_ids_refused(value):
    with pytest.raises(InvalidId):
        validate_id(value, "client_id")


@given(
    moments,
    valid_ids,
    st.integers(0, 9999),
    st.integers(0, 10**12),
    st.integers(0, 10**6),
    st.sampled_from(["json", "parquet"]),
)
def test_part_key_round_trips(moment, client_id, partition, first, span, fmt):
    key = part_key(moment, client_id, partition, first, first + span, fmt)
    parsed = parse_part_key(key)
    assert parsed is not None
    assert parsed.hour == moment.replace(minute=0, second=0, microsecond=0)
    assert (parsed.client_id, parsed.kafka_partition, parsed.first_offset, parsed.last_offset, parsed.fmt) == (
        client_id,
        partition,
        first,
        first + span,
        fmt,
    )
    assert key.startswith(hour_prefix(moment, fmt))


def test_layout_is_the_documented_one():
    moment = datetime(2026, 2, 2, 10, 15, tzinfo=UTC)
    assert part_key(moment, "acme", 3, 10, 20).startswith("dt=2026-02-02/hour=10/client_id=acme/part-")
    assert part_key(moment, "acme", 3, 10, 20, "parquet").startswith("parquet/dt=2026-02-02/hour=10/")


def test_hour_comes_from_utc():
    cet = timezone(timedelta(hours=1))
    assert hour_prefix(datetime(2026, 2, 2, 0, 30, tzinfo=cet)) == "dt=2026-02-01/hour=23/"
    with pytest.raises(ValueError):
        hour_prefix(datetime(2026, 2, 2, 0, 30))


@given(moments, moments)
def test_ledger_keys_sort_by_write_time(a, b):
    if a < b:
        assert ledger_key(a, 5, 0) < ledger_key(b, 0, 0)


def test_staging_paths_name_the_run_the_kind_and_the_utc_hour():
    hour = datetime(2026, 11, 26, 0, 30, tzinfo=timezone(timedelta(hours=1)))  # 2026-11-25 23:30 UTC
    assert staging_kind_prefix("run-1", "cells") == "_staging/run-1/kind=cells/"
    assert staging_hour_glob("run-1", "scroll", hour) == "_staging/run-1/kind=scroll/hour_id=2026112523/*.parquet"


@pytest.mark.parametrize("run_id", ["../x", "a/b", "", "x" * 65, "*"])
def test_staging_paths_refuse_a_bad_run_id(run_id):
    with pytest.raises(InvalidId):
        staging_kind_prefix(run_id, "cells")
