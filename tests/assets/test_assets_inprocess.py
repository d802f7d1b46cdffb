"""The assets run in-process against the real S3 server, embedded ClickHouse and local Spark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec

from heatmap_assets.partitions import day_key, hour_key
from tests.assets import lakedata
from tests.assets.runs import assert_passed, run, run_outcomes
from tests.conftest import day_of, week_of


def base_hour(days_back: int = 3) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days_back)).replace(minute=0, second=0, microsecond=0)


def hour_range(first: datetime, last: datetime) -> dict:
    return {"dagster/asset_partition_range_start": hour_key(first), "dagster/asset_partition_range_end": hour_key(last)}


def test_hour_exact_idempotent_and_replaced(settings, spark, instance):
    hour = base_hour()
    next_hour = hour + timedelta(hours=1)
    a = lakedata.make_events(hour, "acme", "home_v1", 300, partition=0, offset=100, seed=1)
    b = lakedata.make_events(hour, "acme", "pricing", 120, partition=1, offset=7, seed=2)
    c = lakedata.make_events(hour, "globex", "home_v1", 80, partition=0, offset=900, seed=3)
    # A neighbouring hour that must stay untouched by hour H's runs.
    n = lakedata.make_events(next_hour, "acme", "home_v1", 50, partition=2, offset=1, seed=4)
    # The first three batches of ``a`` published again after a lost ack: same batches, a new Kafka origin.
    republished = [
        msgspec.structs.replace(e, kafka_partition=3, kafka_offset=e.kafka_offset + 5000, received_at=next_hour)
        for e in a[:15]
    ]
    parts = [
        lakedata.write_part(settings, hour, a, duplicate_every=7),  # re-flush duplicates
        lakedata.write_part(settings, hour, b),
        lakedata.write_part(settings, hour, c),
        lakedata.write_part(settings, hour, republished),
    ]
    lakedata.write_part(settings, next_hour, n)
    # H and its neighbour in one range run (one Spark read), each replaced on its own.
    result = run(settings, instance, "heatmap_hourly", tags=hour_range(hour, next_hour))
    expected = lakedata.expected_cells(a + b + c, hour)
    got = lakedata.table_cells(settings, "heatmap_hourly", hour, next_hour)
    assert got == expected
    assert sum(got.values()) == 500
    assert_passed(run_outcomes(result), "heatmap_hourly")
    metadata = result.asset_materializations_for_node("heatmap_hourly")[0].metadata
    assert metadata["events_in"].value == 500 + 50
    assert metadata["duplicate_or_unreadable_lines"].value == parts[0].lines - len(a) + len(republished)
    assert metadata["rows_written"].value == len(expected) + len(lakedata.expected_cells(n, next_hour))
    assert metadata["files_read"].value == 5

    # Re-running the same hour gives identical rows.
    run(settings, instance, "heatmap_hourly", hour_key(hour))
    assert lakedata.table_cells(settings, "heatmap_hourly", hour, next_hour) == expected

    # The hour's files change: one file disappears, another is rewritten with other events.
    lakedata.delete(settings, parts[1].key)
    # Same Kafka range, so the same object key (a re-flush), with other content.
    c2 = lakedata.make_events(hour, "globex", "home_v1", 80, partition=0, offset=900, seed=99)
    lakedata.write_part(settings, hour, c2)
    result = run(settings, instance, "heatmap_hourly", hour_key(hour))
    expected2 = lakedata.expected_cells(a + c2, hour)
    assert lakedata.table_cells(settings, "heatmap_hourly", hour, next_hour) == expected2
    assert not any(k[1] == "pricing" for k in lakedata.table_cells(settings, "heatmap_hourly", hour, next_hour))
    assert_passed(run_outcomes(result), "heatmap_hourly")
    # The neighbouring hour kept its rows.
    assert lakedata.table_cells(settings, "heatmap_hourly", next_hour, next_hour + timedelta(hours=1)) == (
        lakedata.expected_cells(n, next_hour)
    )

    # Every file of the hour gone: the hour empties, nothing crashes.
    for key in (parts[0].key, parts[2].key, parts[3].key):
        lakedata.delete(settings, key)
    result = run(settings, instance, "heatmap_hourly", hour_key(hour))
    assert lakedata.table_cells(settings, "heatmap_hourly", hour, next_hour) == {}
    assert_passed(run_outcomes(result), "heatmap_hourly")


def test_range_run_rollups_and_checks(settings, spark, instance):
    """A 3-hour range in one run (as a backfill does), then the day and week rollups."""
    # Saturday 22:00 .. Sunday 01:00: two days in two different weeks.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    saturday = today - timedelta(days=(today.weekday() - 5) % 7 or 7)
    hours = [saturday + timedelta(hours=22 + i) for i in range(3)]
    events = {}
    for i, hour in enumerate(hours):
        events[hour] = lakedata.make_events(hour, "acme", "home_v1", 60 + i, partition=3, offset=1000 * i, seed=10 + i)
        lakedata.write_part(settings, hour, events[hour])
    empty_hour = hours[-1] + timedelta(hours=1)  # in range, no files
    result = run(
        settings,
        instance,
        "heatmap_hourly",
        tags={
            "dagster/asset_partition_range_start": hour_key(hours[0]),
            "dagster/asset_partition_range_end": hour_key(empty_hour),
        },
    )
    materializations = result.asset_materializations_for_node("heatmap_hourly")
    assert sorted(m.partition for m in materializations) == sorted(hour_key(h) for h in [*hours, empty_hour])
    assert_passed(run_outcomes(result), "heatmap_hourly")
    hourly = {}
    for hour in hours:
        hourly.update(lakedata.expected_cells(events[hour], hour))
    got = lakedata.table_cells(settings, "heatmap_hourly", hours[0], empty_hour + timedelta(hours=1))
    assert got == hourly

    for day in (hours[0], hours[-1]):
        result = run(settings, instance, "heatmap_daily", day_key(day))
        assert_passed(run_outcomes(result), "heatmap_daily")
    daily = lakedata.table_cells(settings, "heatmap_daily", saturday, saturday + timedelta(days=2))
    assert daily == lakedata.rollup(hourly, day_of)

    for week_start in (saturday - timedelta(days=6), saturday + timedelta(days=1)):
        result = run(settings, instance, "heatmap_weekly", day_key(week_start))
        assert_passed(run_outcomes(result), "heatmap_weekly")
        meta = result.asset_materializations_for_node("heatmap_weekly")[0].metadata
        assert meta["table"].value.endswith("heatmap_weekly")
    weekly = lakedata.table_cells(
        settings, "heatmap_weekly", saturday - timedelta(days=6), saturday + timedelta(days=8)
    )
    assert weekly == lakedata.rollup(daily, week_of)
    assert sum(weekly.values()) == sum(hourly.values()) == 60 + 61 + 62
    assert {k[2] for k in weekly} == {week_of(hours[0].replace(tzinfo=None)), week_of(hours[-1].replace(tzinfo=None))}


def test_parquet_lake_reads_the_same(settings, spark, instance):
    """raw_format=parquet: the same hour from the Parquet copy of the lake gives the same cells."""
    settings = settings.model_copy(update={"raw_format": "parquet"})
    hour = base_hour(2)
    events = lakedata.make_events(hour, "acme", "home_v1", 90, partition=1, offset=300, seed=5)
    lakedata.write_parquet_part(settings, hour, events[:50])
    lakedata.write_parquet_part(settings, hour, events[45:])  # overlapping origins count once
    result = run(settings, instance, "heatmap_hourly", hour_key(hour))
    assert lakedata.table_cells(settings, "heatmap_hourly", hour, hour + timedelta(hours=1)) == (
        lakedata.expected_cells(events, hour)
    )
    assert_passed(run_outcomes(result), "heatmap_hourly")


def test_unreadable_lines_are_counted_and_left_out(settings, spark, instance):
    """Lines Spark cannot use (broken JSON, a missing field, a wrong type) are reported, not aggregated,
    and ClickHouse's raw recount leaves out the same ones: the reconciliation still holds."""
    hour = base_hour(4)
    events = lakedata.make_events(hour, "acme", "home_v1", 40, partition=2, offset=50, seed=8)
    part = lakedata.write_part(settings, hour, events)
    body = lakedata.read(settings, part.key)
    unreadable = [
        b'{"client_id": "acme", "screen_id": "home_v1", "x_norm": 0.5',  # cut short
        b'{"client_id": "acme", "screen_id": "home_v1", "x_norm": 0.5, "batch_id": "b-x", "batch_index": 0}',  # no y_norm
        b'{"client_id": "acme", "screen_id": "home_v1", "x_norm": "left", "y_norm": 0.5, "batch_id": "b-y", "batch_index": 0}',
    ]
    lakedata.put(settings, part.key, body + b"\n".join(unreadable) + b"\n")
    result = run(settings, instance, "heatmap_hourly", hour_key(hour))
    assert lakedata.table_cells(settings, "heatmap_hourly", hour, hour + timedelta(hours=1)) == (
        lakedata.expected_cells(events, hour)
    )
    metadata = result.asset_materializations_for_node("heatmap_hourly")[0].metadata
    assert metadata["events_in"].value == 40
    assert metadata["duplicate_or_unreadable_lines"].value == len(unreadable)
    assert_passed(run_outcomes(result), "heatmap_hourly")
