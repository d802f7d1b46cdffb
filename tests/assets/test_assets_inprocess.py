"""The assets run in-process against the real S3 server, embedded ClickHouse and local Spark."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec
import pytest

from heatmap_assets.partitions import day_key, hour_key
from heatmap_core.events import LakeEvent
from heatmap_core.timeutil import naive_utc
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
    assert metadata["cells_out"].value == len(expected) + len(lakedata.expected_cells(n, next_hour))
    assert metadata["views"].value == metadata["scroll_rows_out"].value == 0  # mouse moves only
    assert metadata["rows_written"].value == metadata["cells_out"].value
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
    assert {k[4] for k in weekly} == {week_of(hours[0].replace(tzinfo=None)), week_of(hours[-1].replace(tzinfo=None))}


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


VIEWPORT_W = {"desktop": 1280, "tablet": 800, "mobile": 390}


class View(NamedTuple):
    view_id: str
    device: str
    viewport_h: int
    screen_h: int


def view_batch(hour, view: View, events, *, partition, offset) -> list[LakeEvent]:
    """One accepted v2 batch of a page view, as lake lines: ``events`` are (event_type, x_norm, y_norm)."""
    return [
        LakeEvent(
            client_id="acme",
            screen_id="home_v1",
            event_time=hour + timedelta(minutes=offset % 60, seconds=i),
            x_norm=x,
            y_norm=y,
            event_type=event_type,
            received_at=hour + timedelta(minutes=offset % 60, seconds=30),
            batch_id=f"{view.view_id}-{offset}",
            kafka_partition=partition,
            kafka_offset=offset,
            batch_index=i,
            device=view.device,
            view_id=view.view_id,
            viewport_w=VIEWPORT_W[view.device],
            viewport_h=view.viewport_h,
            screen_w=1000,
            screen_h=view.screen_h,
        )
        for i, (event_type, x, y) in enumerate(events)
    ]


# Dyadic depths and sizes, so every row below is exact: row = floor(depth * 200).
DESK_1 = View("desk-1-view", "desktop", 800, 3200)  # fold 0.25 -> row 50
PHONE_1 = View("phone-1-view", "mobile", 600, 4800)  # fold 0.125 -> row 25
PHONE_2 = View("phone-2-view", "mobile", 700, 1400)  # fold 0.5 -> row 100
PHONE_3 = View("phone-3-view", "mobile", 800, 400)  # viewport taller than the screen: fold row 199
TABLET_1 = View("tablet-1-view", "tablet", 1000, 2000)


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_hour_mixing_files_from_before_and_after_v2(settings, spark, instance, fmt):
    """An hour whose lake holds files written before v2 (no device, no view: JSON lines without the keys,
    Parquet with the old schema) beside v2 files: old lines count under device unknown and add no scroll
    reach; every view counts once per hour at its deepest row, across batches, files and duplicates."""
    settings = settings.model_copy(update={"raw_format": fmt})
    hour = base_hour(5)
    next_hour = hour + timedelta(hours=1)
    # Before v2: 8 moves, 3 clicks and a scroll without a view.
    old = lakedata.make_events(hour, "acme", "home_v1", 12, partition=0, offset=10, seed=21)
    old = [
        msgspec.structs.replace(e, event_type="click" if i < 3 else "scroll" if i == 3 else e.event_type)
        for i, e in enumerate(old)
    ]
    scroll, move, click = "scroll", "mousemove", "click"
    desk_1 = view_batch(
        hour, DESK_1, [(scroll, 0.5, 0.25), (move, 0.3, 0.2), (click, 0.31, 0.21)], partition=1, offset=100
    )
    # The same view's second batch, in another file: rows 125 and 87.
    desk_1_later = view_batch(
        hour, DESK_1, [(scroll, 0.5, 0.625), (scroll, 0.5, 0.4375), (move, 0.7, 0.6)], partition=2, offset=200
    )
    # Rows 25 and 62 in this hour, 162 in the next.
    phone_1 = view_batch(
        hour, PHONE_1, [(scroll, 0.5, 0.125), (scroll, 0.5, 0.3125), (click, 0.5, 0.3)], partition=1, offset=101
    )
    phone_2 = view_batch(hour, PHONE_2, [(scroll, 0.5, 0.5), ("rageclick", 0.52, 0.55)], partition=1, offset=102)
    # No scroll event: not a view of the scroll reach.
    tablet_clicks = view_batch(hour, TABLET_1, [(click, 0.4, 0.4), (click, 0.41, 0.4)], partition=1, offset=103)
    phone_3 = view_batch(hour, PHONE_3, [(scroll, 0.5, 1.0)], partition=1, offset=104)
    phone_1_next_hour = view_batch(
        next_hour, PHONE_1, [(scroll, 0.5, 0.8125), (move, 0.2, 0.9)], partition=1, offset=105
    )
    # desk-1's first batch published again after a lost acknowledgement: same batch, another Kafka origin.
    republished = [msgspec.structs.replace(e, kafka_partition=3, kafka_offset=300) for e in desk_1]
    v2_file = desk_1 + phone_1 + phone_2 + tablet_clicks + phone_3

    def write_v2(at: datetime, events: list[LakeEvent]) -> None:
        if fmt == "json":
            lakedata.write_part(settings, at, events, duplicate_every=3)  # with re-flush duplicates too
        else:
            lakedata.write_parquet_part(settings, at, events)

    lakedata.write_pre_v2_part(settings, hour, old, fmt)
    for events in (v2_file, desk_1_later, republished):
        write_v2(hour, events)
    write_v2(next_hour, phone_1_next_hour)

    result = run(settings, instance, "heatmap_hourly", tags=hour_range(hour, next_hour))
    assert_passed(run_outcomes(result), "heatmap_hourly")

    this_hour = old + v2_file + desk_1_later
    cells = lakedata.table_cells(settings, "heatmap_hourly", hour, next_hour + timedelta(hours=1))
    assert cells == {
        **lakedata.expected_cells(this_hour, hour),
        **lakedata.expected_cells(phone_1_next_hour, next_hour),
    }
    per_type_device: Counter[tuple[bool, str, str]] = Counter()
    for (_, _, event_type, device, bucket, _, _), count in cells.items():
        per_type_device[(bucket.hour == hour.hour, event_type, device)] += count
    assert per_type_device == {
        (True, "mousemove", "unknown"): 8,
        (True, "click", "unknown"): 3,
        (True, "scroll", "unknown"): 1,
        (True, "scroll", "desktop"): 3,
        (True, "mousemove", "desktop"): 2,
        (True, "click", "desktop"): 1,
        (True, "scroll", "mobile"): 4,
        (True, "click", "mobile"): 1,
        (True, "rageclick", "mobile"): 1,
        (True, "click", "tablet"): 2,
        (False, "scroll", "mobile"): 1,
        (False, "mousemove", "mobile"): 1,
    }

    h, h2 = naive_utc(hour), naive_utc(next_hour)
    expected_scroll = lakedata.scroll_rows(
        {  # (deepest row, fold row) of each view, by hand from the depths above
            ("acme", "home_v1", "desktop", h): [(125, 50)],
            ("acme", "home_v1", "mobile", h): [(62, 25), (100, 100), (199, 199)],
            ("acme", "home_v1", "mobile", h2): [(162, 25)],
        }
    )
    reach = lakedata.table_scroll(settings, "heatmap_scroll_hourly", hour, next_hour + timedelta(hours=1))
    assert reach == expected_scroll
    # Spot checks of the expansion itself: row 0 is every view, the deepest rows are single views.
    assert reach[("acme", "home_v1", "mobile", h, 0)] == (3, 0)
    assert reach[("acme", "home_v1", "mobile", h, 62)] == (3, 0)
    assert reach[("acme", "home_v1", "mobile", h, 63)] == (2, 0)
    assert reach[("acme", "home_v1", "mobile", h, 199)] == (1, 1)
    assert reach[("acme", "home_v1", "desktop", h, 50)] == (1, 1)
    assert ("acme", "home_v1", "desktop", h, 126) not in reach

    metadata = {m.partition: m.metadata for m in result.asset_materializations_for_node("heatmap_hourly")}
    # One materialization per hour of the range, each with the run's totals.
    totals = metadata[hour_key(hour)]
    assert totals["events_in"].value == 26 + 2
    assert totals["views"].value == 4 + 1
    assert totals["cells_out"].value == len(cells)
    assert totals["scroll_rows_out"].value == len(expected_scroll) == 126 + 200 + 163
    assert totals["rows_written"].value == len(cells) + len(expected_scroll)
    assert totals["scroll_table"].value.endswith(".heatmap_scroll_hourly")

    # Re-running the hour alone leaves both tables identical.
    run(settings, instance, "heatmap_hourly", hour_key(hour))
    assert lakedata.table_cells(settings, "heatmap_hourly", hour, next_hour + timedelta(hours=1)) == cells
    assert lakedata.table_scroll(settings, "heatmap_scroll_hourly", hour, next_hour + timedelta(hours=1)) == reach
