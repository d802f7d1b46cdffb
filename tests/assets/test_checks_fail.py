"""Every asset check fails, by name and naming the bad bucket and dimension, when what it guards is broken.

Each test builds one Saturday's two hours as the hourly asset writes them
(ground-truth cells and scroll reach from the lake files beside them: v2 page
views of every device band and event type, and v1 lines of device unknown),
rolls them up with the real daily and weekly assets (all checks pass), then
breaks exactly one thing directly in ClickHouse and runs the checks again: the
asset checks' own code (``hourly_checks``, ``rollup_checks``), or a real
materialization where the break flows through the rollup. The other checks
must keep passing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetCheckKey, AssetMaterialization, AssetSelection, DagsterInstance, materialize

from heatmap_assets import checks
from heatmap_assets.assets import ALL_ASSETS, DAILY_ROLLUP, WEEKLY_ROLLUP, HourStats, hourly_checks, rollup_checks
from heatmap_assets.partitions import day_key, hour_key, window_of
from heatmap_assets.resources import build_resources
from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import HOURLY, SCROLL_HOURLY, SCROLL_TABLES, TABLES
from heatmap_core.settings import Settings, get_settings
from tests.assets import lakedata
from tests.assets.runs import assert_passed, outcomes, run, run_outcomes
from tests.conftest import week_of

V2_EVENTS, V1_EVENTS = 200, 30


@dataclass
class Built:
    settings: Settings
    instance: DagsterInstance
    hours: list[datetime]
    day: datetime
    week: datetime

    def bucket_of(self, grain: str) -> datetime:
        return {"hour": self.hours[0], "day": self.day, "week": self.week}[grain]


@pytest.fixture
def built(settings, instance) -> Built:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    saturday = today - timedelta(days=(today.weekday() - 5) % 7 or 7)
    hours = [saturday + timedelta(hours=10), saturday + timedelta(hours=11)]
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        for i, hour in enumerate(hours):
            events = lakedata.make_events(
                hour, "acme", "home_v1", V2_EVENTS, partition=i, offset=10, seed=40 + i, views=8
            )
            events += lakedata.make_events(hour, "acme", "home_v1", V1_EVENTS, partition=i + 2, offset=10, seed=50 + i)
            lakedata.write_part(settings, hour, events[:V2_EVENTS])
            lakedata.write_part(settings, hour, events[V2_EVENTS:])
            scroll = lakedata.scroll_rows(lakedata.scroll_views(events, hour))
            for table, rows in (
                (HOURLY, [(*key, count) for key, count in lakedata.expected_cells(events, hour).items()]),
                (SCROLL_HOURLY, [(*key, *measures) for key, measures in scroll.items()]),
            ):
                replace_bucket(client, table, hour, rows=rows, database=settings.clickhouse_database)
    build = Built(settings, instance, hours, saturday, week_of(saturday))
    assert_passed(hourly_outcomes(build), "heatmap_hourly")
    assert_passed(run_outcomes(run(settings, instance, "heatmap_daily", day_key(saturday))), "heatmap_daily")
    assert_passed(run_outcomes(run(settings, instance, "heatmap_weekly", day_key(build.week))), "heatmap_weekly")
    return build


def hourly_outcomes(build: Built):
    """The hourly asset's checks over the test's hours as stored now."""
    resources = build_resources(build.settings)
    lake_store = resources["lake_store"]
    per_hour = [HourStats(hour, len(lake_store.hour_files(hour)), 0, 0, 0, 0) for hour in build.hours]
    return outcomes(hourly_checks(resources["clickhouse"], lake_store, per_hour))


ROLLUPS = {"heatmap_daily": DAILY_ROLLUP, "heatmap_weekly": WEEKLY_ROLLUP}
UPSTREAM = {"day": "hour", "week": "day"}


def rollup_outcomes(build: Built, asset: str):
    """The rollup asset's checks over the test's bucket as stored now."""
    rollup = ROLLUPS[asset]
    key = day_key(build.bucket_of(rollup.grain))
    with clickhouse(build.settings) as client:
        return outcomes(
            rollup_checks(
                client,
                build.settings.clickhouse_database,
                rollup,
                windows={key: window_of(rollup.partitions_def, key)},
            )
        )


def checks_now(build: Built, asset: str):
    return hourly_outcomes(build) if asset == "heatmap_hourly" else rollup_outcomes(build, asset)


def table_of(grain: str, kind: str):
    return (TABLES if kind == "cells" else SCROLL_TABLES)[grain]


def bucket_rows(build: Built, grain: str, kind: str = "cells") -> list[list]:
    """The stored rows of the test's bucket of one grain and kind, in column order, largest first."""
    table = table_of(grain, kind)
    measures = ", ".join(f"{m} DESC" for m in table.kind.measures)
    with clickhouse(build.settings) as client:
        rows = client.query(
            f"SELECT {', '.join(table.column_names)} "
            f"FROM `{build.settings.clickhouse_database}`.`{table.name}` WHERE bucket_start = {{b:DateTime('UTC')}} "
            f"ORDER BY {measures}, {', '.join(table.kind.key)}",
            parameters={"b": build.bucket_of(grain).replace(tzinfo=None)},
        ).result_rows
    return [list(row) for row in rows]


def store_bucket(build: Built, grain: str, rows: list[list], kind: str = "cells") -> None:
    """The bucket now holds exactly ``rows``, whatever they break."""
    with clickhouse(build.settings) as client:
        replace_bucket(
            client,
            table_of(grain, kind),
            build.bucket_of(grain),
            rows=rows,
            database=build.settings.clickhouse_database,
        )


def utc_text(moment: datetime) -> str:
    """A bucket as the table checks name it (ClickHouse's toString of a UTC DateTime)."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def type_device_sums(rows: list[list]) -> dict[str, int]:
    """Events per 'event_type/device' of cell rows (client, screen, type, device, bucket, x, y, count)."""
    sums: dict[str, int] = {}
    for row in rows:
        label = f"{row[2]}/{row[3]}"
        sums[label] = sums.get(label, 0) + row[7]
    return sums


def move_cell(rows: list[list], index: int, **to) -> tuple[str, str, int]:
    """The cell ``rows[index]`` moved whole to another event type or device (merged if that cell
    exists): every total and every cell position keeps its count. Returns (from, to, count) labels."""
    row = rows.pop(index)
    moved = [*row]
    for column, value in to.items():
        moved[{"event_type": 2, "device": 3}[column]] = value
    same = next((r for r in rows if r[:7] == moved[:7]), None)
    if same:
        same[7] += moved[7]
    else:
        rows.append(moved)
    return f"{row[2]}/{row[3]}", f"{moved[2]}/{moved[3]}", row[7]


def test_good_data_reconciles_per_type_and_device(built):
    """The built hour holds every v2 type and device, v1 lines as unknown, and scroll reach."""
    found = hourly_outcomes(built)
    per_type = found[("heatmap_hourly", "raw_events_match_hourly")].metadata["per_type_and_device"]
    assert {label.split("/")[1] for label in per_type} == {"desktop", "tablet", "mobile", "unknown"}
    assert {label.split("/")[0] for label in per_type} == {"mousemove", "click", "rageclick", "scroll"}
    assert per_type["mousemove/unknown"] == {"raw_events": 2 * V1_EVENTS, "hourly_sum": 2 * V1_EVENTS}
    assert sum(v["raw_events"] for v in per_type.values()) == 2 * (V2_EVENTS + V1_EVENTS)
    assert found[("heatmap_hourly", "scroll_reach_within_views")].metadata["groups_checked"] == 2 * 3


def test_raw_event_missing_from_the_hour_fails_the_raw_recount(built):
    rows = bucket_rows(built, "hour")
    rows[0][7] -= 1  # one raw event of the hour no longer counted
    store_bucket(built, "hour", rows)
    found = hourly_outcomes(built)
    assert_passed(found, "heatmap_hourly", failed={("heatmap_hourly", "raw_events_match_hourly")})
    label = f"{rows[0][2]}/{rows[0][3]}"
    raw = type_device_sums(rows)[label] + 1
    metadata = found[("heatmap_hourly", "raw_events_match_hourly")].metadata
    assert metadata["mismatched_hours"] == {
        hour_key(built.hours[0]): {label: {"raw_events": raw, "hourly_sum": raw - 1}}
    }
    assert (metadata["raw_distinct_events"], metadata["hourly_sum"]) == (
        2 * (V2_EVENTS + V1_EVENTS),
        2 * (V2_EVENTS + V1_EVENTS) - 1,
    )


@pytest.mark.parametrize("to", [{"event_type": "rageclick"}, {"device": "tablet"}])
def test_counts_moved_between_types_or_devices_fail_the_raw_recount(built, to):
    """Same total, same cells: only the per-(type, device) reconciliation sees it."""
    rows = bucket_rows(built, "hour")
    before = type_device_sums(rows)
    index = next(i for i, r in enumerate(rows) if r[2] == "click" and r[3] == "desktop")
    source, target, moved = move_cell(rows, index, **to)
    store_bucket(built, "hour", rows)
    found = hourly_outcomes(built)
    assert_passed(found, "heatmap_hourly", failed={("heatmap_hourly", "raw_events_match_hourly")})
    assert found[("heatmap_hourly", "raw_events_match_hourly")].metadata["mismatched_hours"] == {
        hour_key(built.hours[0]): {
            source: {"raw_events": before[source], "hourly_sum": before[source] - moved},
            target: {"raw_events": before.get(target, 0), "hourly_sum": before.get(target, 0) + moved},
        }
    }


def test_counts_moved_between_types_in_an_hour_fail_the_daily_sum(built):
    rows = bucket_rows(built, "hour")
    day_sums = type_device_sums(bucket_rows(built, "day"))
    index = next(i for i, r in enumerate(rows) if r[2] == "click" and r[3] == "mobile")
    source, target, moved = move_cell(rows, index, event_type="mousemove")
    store_bucket(built, "hour", rows)
    found = rollup_outcomes(built, "heatmap_daily")
    assert_passed(found, "heatmap_daily", failed={("heatmap_daily", "hourly_sum_matches_daily")})
    assert found[("heatmap_daily", "hourly_sum_matches_daily")].metadata["mismatched"] == {
        day_key(built.day): {
            source: {"rows_differing": 1, "upstream_count": day_sums[source] - moved, "count": day_sums[source]},
            target: {"rows_differing": 1, "upstream_count": day_sums[target] + moved, "count": day_sums[target]},
        }
    }


def test_changed_daily_row_fails_the_weekly_sum(built):
    rows = bucket_rows(built, "day")
    lost = rows.pop()  # a cell of the day gone: the week still counts it
    store_bucket(built, "day", rows)
    label = f"{lost[2]}/{lost[3]}"
    week = type_device_sums(bucket_rows(built, "week"))[label]
    found = rollup_outcomes(built, "heatmap_weekly")
    assert_passed(found, "heatmap_weekly", failed={("heatmap_weekly", "daily_sum_matches_weekly")})
    assert found[("heatmap_weekly", "daily_sum_matches_weekly")].metadata["mismatched"] == {
        day_key(built.week): {label: {"rows_differing": 1, "upstream_count": week - lost[7], "count": week}}
    }


@pytest.mark.parametrize("asset, grain", [("heatmap_daily", "day"), ("heatmap_weekly", "week")])
def test_changed_scroll_row_fails_the_scroll_sum(built, asset, grain):
    upstream = UPSTREAM[grain]
    rows = bucket_rows(built, upstream, "scroll")
    # A row below row 0 loses a view: still within row 0, so only the sum check sees it.
    index = next(i for i, r in enumerate(rows) if r[4] > 0 and r[5] > 0)
    rows[index][5] -= 1
    store_bucket(built, upstream, rows, "scroll")
    device, depth_row = rows[index][2], rows[index][4]
    reached, folds = next(r[5:] for r in bucket_rows(built, grain, "scroll") if (r[2], r[4]) == (device, depth_row))
    found = rollup_outcomes(built, asset)
    check = {"day": "hourly_scroll_matches_daily", "week": "daily_scroll_matches_weekly"}[grain]
    assert_passed(found, asset, failed={(asset, check)})
    assert found[(asset, check)].metadata["mismatched"] == {
        day_key(built.bucket_of(grain)): {
            f"{device}/{depth_row}": {
                "rows_differing": 1,
                "upstream_reached": reached - 1,
                "reached": reached,
                "upstream_folds": folds,
                "folds": folds,
            }
        }
    }


def break_upstream_then_run(build: Built, asset: str, grain: str, kind: str, breaks) -> dict:
    """``breaks`` applied to the rows of ``grain`` (hour: then its checks run) or of the grain below
    (then the real rollup run carries the break into its bucket, so its sums still match)."""
    if grain == "hour":
        rows = bucket_rows(build, grain, kind)
        breaks(rows)
        store_bucket(build, grain, rows, kind)
        return checks_now(build, asset)
    upstream = UPSTREAM[grain]
    rows = bucket_rows(build, upstream, kind)
    breaks(rows)
    store_bucket(build, upstream, rows, kind)
    return run_outcomes(run(build.settings, build.instance, asset, day_key(build.bucket_of(grain))))


GRAINS = [("heatmap_hourly", "hour"), ("heatmap_daily", "day"), ("heatmap_weekly", "week")]


@pytest.mark.parametrize("kind, column", [("cells", 6), ("scroll", 4)])
@pytest.mark.parametrize("asset, grain", GRAINS)
def test_position_outside_the_grid_fails_the_grid_check(built, asset, grain, kind, column):
    def breaks(rows):
        rows[-1][column] = 200  # cell_y or depth_row one past the last row, same measures: every sum still matches

    found = break_upstream_then_run(built, asset, grain, kind, breaks)
    assert_passed(found, asset, failed={(asset, "cells_within_grid")})
    metadata = found[(asset, "cells_within_grid")].metadata
    assert metadata["buckets_outside_grid"] == {table_of(grain, kind).name: {utc_text(built.bucket_of(grain)): 1}}
    assert metadata["cells_outside_grid"] == 1


@pytest.mark.parametrize("kind", ["cells", "scroll"])
@pytest.mark.parametrize("asset, grain", GRAINS)
def test_duplicated_row_fails_the_uniqueness_check(built, asset, grain, kind):
    rows = bucket_rows(built, grain, kind)
    measures = len(table_of(grain, kind).kind.measures)
    rows.append([*rows[0][:-measures], *[0] * measures])  # the same key twice, every total the same
    store_bucket(built, grain, rows, kind)
    found = checks_now(built, asset)
    assert_passed(found, asset, failed={(asset, "no_duplicate_cells")})
    metadata = found[(asset, "no_duplicate_cells")].metadata
    assert metadata["buckets_with_duplicates"] == {table_of(grain, kind).name: {utc_text(built.bucket_of(grain)): 1}}
    assert metadata["duplicate_rows"] == 1


@pytest.mark.parametrize("asset, grain", GRAINS)
def test_row_reached_by_more_views_than_row_0_fails_the_scroll_reach_check(built, asset, grain):
    bucket = bucket_rows(built, grain, "scroll")
    broken: dict[str, object] = {}

    def breaks(rows):
        row = next(r for r in rows if r[4] == 3)
        group = row[:3]
        row_0, row_3 = (next(r[5] for r in bucket if r[:3] == group and r[4] == depth) for depth in (0, 3))
        row[5] += row_0 - row_3 + 1  # the bucket's row 3 now one view above its row 0
        broken.update(group="/".join(group), reached_row_0=row_0)

    found = break_upstream_then_run(built, asset, grain, "scroll", breaks)
    assert_passed(found, asset, failed={(asset, "scroll_reach_within_views")})
    assert found[(asset, "scroll_reach_within_views")].metadata["violations"] == {
        utc_text(built.bucket_of(grain)): {
            broken["group"]: {"reached_row_0": broken["reached_row_0"], "rows_above_row_0": [3]}
        }
    }


def test_row_0_above_the_views_of_the_raw_hour_fails_the_scroll_reach_check(built):
    rows = bucket_rows(built, "hour", "scroll")
    row_0 = next(r for r in rows if r[4] == 0)
    views = row_0[5]
    row_0[5] += 1  # one view more than scrolled in the lake, every other row still within it
    store_bucket(built, "hour", rows, "scroll")
    found = hourly_outcomes(built)
    assert_passed(found, "heatmap_hourly", failed={("heatmap_hourly", "scroll_reach_within_views")})
    assert found[("heatmap_hourly", "scroll_reach_within_views")].metadata["violations"] == {
        utc_text(built.hours[0]): {f"{row_0[0]}/{row_0[1]}/{row_0[2]}": {"reached_row_0": views + 1, "views": views}}
    }


def test_partitions_fresh_fails_naming_the_late_hour(settings, instance, monkeypatch):
    """The on-demand freshness check (as run from the UI): an hour whose raw events changed
    more than the allowed lag ago and was not rebuilt since fails it, by partition."""

    def run_fresh_checks():
        keys = [
            AssetCheckKey(key, "partitions_fresh") for key in (checks.HOURLY_KEY, checks.DAILY_KEY, checks.WEEKLY_KEY)
        ]
        result = materialize(
            [*ALL_ASSETS, *checks.fresh_checks],
            selection=AssetSelection.checks(*keys),
            instance=instance,
            resources=build_resources(settings),
        )
        return run_outcomes(result)

    monkeypatch.setattr(get_settings().dagster, "freshness_lag_minutes", 0)
    fresh = {(asset, "partitions_fresh") for asset in ("heatmap_hourly", "heatmap_daily", "heatmap_weekly")}
    found = run_fresh_checks()
    assert set(found) == fresh and all(outcome.passed for outcome in found.values()), found

    hour = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key=checks.RAW_EVENTS, partition=hour_key(hour), metadata={"new_events": 1})
    )
    found = run_fresh_checks()
    assert set(found) == fresh
    assert {key for key, outcome in found.items() if not outcome.passed} == {("heatmap_hourly", "partitions_fresh")}
    assert found[("heatmap_hourly", "partitions_fresh")].metadata["late_partitions"] == [hour_key(hour)]
