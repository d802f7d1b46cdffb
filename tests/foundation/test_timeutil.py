"""The time conventions of heatmap_core.timeutil agree with ClickHouse and Dagster, which apply them too."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

from dagster import WeeklyPartitionsDefinition

from heatmap_core.clickhouse import clickhouse
from heatmap_core.lake import HOUR_FOLDERS_PATTERN, LedgerFile, part_key
from heatmap_core.timeutil import WEEK_DAY_OFFSET, as_utc, hour_start, naive_utc, parse_hour, week_start

DAYS = [date(2026, 1, 1) + timedelta(days=n) for n in range(21)]


def test_week_start_is_clickhouse_to_start_of_week(settings):
    with clickhouse(settings) as client:
        rows = client.query(
            "SELECT d, toStartOfWeek(d) FROM (SELECT arrayJoin({days:Array(Date)}) AS d) ORDER BY d",
            parameters={"days": DAYS},
        ).result_rows
    assert [(day, week_start(day)) for day in DAYS] == rows
    assert {week_start(day).isoweekday() for day in DAYS} == {7}  # Sunday


def test_week_start_is_the_start_of_dagsters_weekly_partitions():
    weeks = WeeklyPartitionsDefinition(start_date="2025-12-01", timezone="UTC", day_offset=WEEK_DAY_OFFSET)
    starts = [
        date.fromisoformat(key) for key in weeks.get_partition_keys(current_time=datetime(2026, 2, 1, tzinfo=UTC))
    ]
    assert len(starts) == 8
    assert all(week_start(start) == start for start in starts)
    assert {week_start(day) for day in DAYS} <= set(starts)


def test_datetimes_keep_their_zone_and_lose_their_time():
    assert week_start(datetime(2026, 1, 7, 13, 5)) == datetime(2026, 1, 4)
    assert week_start(datetime(2026, 1, 4, 0, 0, tzinfo=UTC)) == datetime(2026, 1, 4, tzinfo=UTC)


def test_utc_conversions():
    cet = timezone(timedelta(hours=1))
    assert as_utc(datetime(2026, 1, 1, 0, 30)) == datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    assert as_utc(datetime(2026, 1, 1, 0, 30, tzinfo=cet)) == datetime(2025, 12, 31, 23, 30, tzinfo=UTC)
    assert naive_utc(datetime(2026, 1, 1, 0, 30, tzinfo=cet)) == datetime(2025, 12, 31, 23, 30)
    assert hour_start(datetime(2026, 1, 1, 0, 30, tzinfo=cet)) == datetime(2025, 12, 31, 23, tzinfo=UTC)


def test_hour_folders_read_back_as_their_hour():
    hour = datetime(2026, 2, 2, 10, tzinfo=UTC)
    key = f"s3a://bucket/{part_key(hour, 'acme', 1, 2, 3, 'parquet')}"
    match = re.search(HOUR_FOLDERS_PATTERN, key)
    assert match is not None
    assert parse_hour(f"{match[1]} {match[2]}") == hour


def test_ledger_files_name_their_utc_hour():
    cet = timezone(timedelta(hours=1))
    entry = LedgerFile.of_hour(
        datetime(2026, 2, 2, 0, 30, tzinfo=cet), key="k", client_id="acme", events=1, bytes=9, format="json"
    )
    assert (entry.dt, entry.hour) == ("2026-02-01", 23)
    assert entry.utc_hour == datetime(2026, 2, 1, 23, tzinfo=UTC)
