"""Every asset check fails, by name and naming the bad bucket, when what it guards is broken.

Each test builds one Saturday's two hours as the hourly asset writes them
(ground-truth cells from the lake files beside them), rolls them up with the
real daily and weekly assets (all checks pass), then breaks exactly one thing
directly in ClickHouse and runs the checks again: the asset checks' own code
(``hourly_checks``, ``rollup_checks``), or a real materialization where the
break flows through the rollup. The other checks must keep passing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from dagster import AssetCheckKey, AssetMaterialization, AssetSelection, DagsterInstance, materialize

from heatmap_assets import checks
from heatmap_assets.assets import ALL_ASSETS, HourStats, hourly_checks, rollup_checks
from heatmap_assets.partitions import daily_partitions, day_key, hour_key, weekly_partitions, window_of
from heatmap_assets.resources import build_resources
from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import DAILY, HOURLY, TABLES, WEEKLY
from heatmap_core.settings import Settings, get_settings
from tests.assets import lakedata
from tests.assets.runs import assert_passed, outcomes, run, run_outcomes
from tests.conftest import week_of


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
            events = lakedata.make_events(hour, "acme", "home_v1", 200, partition=i, offset=10, seed=40 + i)
            lakedata.write_part(settings, hour, events)
            cells = lakedata.expected_cells(events, hour)
            replace_bucket(
                client,
                HOURLY,
                hour,
                rows=[(*key, count) for key, count in cells.items()],
                database=settings.clickhouse_database,
            )
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


# How each rollup asset wires rollup_checks: (upstream table, table, asset, sum check, partitions, grain).
ROLLUPS = {
    "heatmap_daily": (HOURLY, DAILY, checks.DAILY_KEY, checks.HOURLY_MATCH, daily_partitions, "day"),
    "heatmap_weekly": (DAILY, WEEKLY, checks.WEEKLY_KEY, checks.DAILY_MATCH, weekly_partitions, "week"),
}


def rollup_outcomes(build: Built, asset: str):
    """The rollup asset's checks over the test's bucket as stored now."""
    source, target, asset_key, check_name, partitions_def, grain = ROLLUPS[asset]
    key = day_key(build.bucket_of(grain))
    with clickhouse(build.settings) as client:
        return outcomes(
            rollup_checks(
                client,
                build.settings.clickhouse_database,
                source=source,
                target=target,
                asset_key=asset_key,
                check_name=check_name,
                windows={key: window_of(partitions_def, key)},
            )
        )


def checks_now(build: Built, asset: str):
    return hourly_outcomes(build) if asset == "heatmap_hourly" else rollup_outcomes(build, asset)


def bucket_rows(build: Built, grain: str) -> list[list]:
    """The stored rows of the test's bucket of one grain, largest count first."""
    table = TABLES[grain]
    with clickhouse(build.settings) as client:
        rows = client.query(
            f"SELECT client_id, screen_id, bucket_start, cell_x, cell_y, count "
            f"FROM `{build.settings.clickhouse_database}`.`{table.name}` WHERE bucket_start = {{b:DateTime('UTC')}} "
            "ORDER BY count DESC, cell_x, cell_y",
            parameters={"b": build.bucket_of(grain).replace(tzinfo=None)},
        ).result_rows
    return [list(row) for row in rows]


def store_bucket(build: Built, grain: str, rows: list[list]) -> None:
    """The bucket now holds exactly ``rows``, whatever they break."""
    with clickhouse(build.settings) as client:
        replace_bucket(
            client, TABLES[grain], build.bucket_of(grain), rows=rows, database=build.settings.clickhouse_database
        )


def utc_text(moment: datetime) -> str:
    """A bucket as the table checks name it (ClickHouse's toString of a UTC DateTime)."""
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def test_raw_event_missing_from_the_hour_fails_the_raw_recount(built):
    rows = bucket_rows(built, "hour")
    rows[0][5] -= 1  # one raw event of the hour no longer counted
    store_bucket(built, "hour", rows)
    found = hourly_outcomes(built)
    assert_passed(found, "heatmap_hourly", failed={("heatmap_hourly", "raw_events_match_hourly")})
    assert found[("heatmap_hourly", "raw_events_match_hourly")].metadata["mismatched_hours"] == {
        hour_key(built.hours[0]): {"raw_events": 200, "hourly_sum": 199}
    }


def test_changed_hourly_row_fails_the_daily_sum(built):
    rows = bucket_rows(built, "hour")
    rows[0][5] += 3
    store_bucket(built, "hour", rows)
    found = rollup_outcomes(built, "heatmap_daily")
    assert_passed(found, "heatmap_daily", failed={("heatmap_daily", "hourly_sum_matches_daily")})
    assert found[("heatmap_daily", "hourly_sum_matches_daily")].metadata["mismatched"] == {
        day_key(built.day): {"cells_differing": 1, "upstream_sum": 403, "sum": 400}
    }


def test_changed_daily_row_fails_the_weekly_sum(built):
    rows = bucket_rows(built, "day")
    lost = rows.pop()  # a cell of the day gone: the week still counts it
    store_bucket(built, "day", rows)
    found = rollup_outcomes(built, "heatmap_weekly")
    assert_passed(found, "heatmap_weekly", failed={("heatmap_weekly", "daily_sum_matches_weekly")})
    assert found[("heatmap_weekly", "daily_sum_matches_weekly")].metadata["mismatched"] == {
        day_key(built.week): {"cells_differing": 1, "upstream_sum": 400 - lost[5], "sum": 400}
    }


@pytest.mark.parametrize(
    "asset, grain", [("heatmap_hourly", "hour"), ("heatmap_daily", "day"), ("heatmap_weekly", "week")]
)
def test_cell_outside_the_grid_fails_the_grid_check(built, asset, grain):
    rows = bucket_rows(built, grain)
    rows[-1][4] = 200  # cell_y one past the last row, same count: every sum still matches
    if grain == "hour":
        store_bucket(built, grain, rows)
        found = checks_now(built, asset)
    else:
        # Upstream broken, then the real rollup run carries the bad cell into its bucket.
        upstream = {"day": "hour", "week": "day"}[grain]
        up_rows = bucket_rows(built, upstream)
        up_rows[-1][4] = 200
        store_bucket(built, upstream, up_rows)
        partition = day_key(built.bucket_of(grain))
        found = run_outcomes(run(built.settings, built.instance, asset, partition))
    assert_passed(found, asset, failed={(asset, "cells_within_grid")})
    metadata = found[(asset, "cells_within_grid")].metadata
    assert metadata["buckets_outside_grid"] == {utc_text(built.bucket_of(grain)): 1}
    assert metadata["cells_outside_grid"] == 1


@pytest.mark.parametrize(
    "asset, grain", [("heatmap_hourly", "hour"), ("heatmap_daily", "day"), ("heatmap_weekly", "week")]
)
def test_duplicated_row_fails_the_uniqueness_check(built, asset, grain):
    rows = bucket_rows(built, grain)
    assert rows[0][5] >= 2
    rows[0][5] -= 1
    rows.append([*rows[0][:5], 1])  # the same cell twice, the same total
    store_bucket(built, grain, rows)
    found = checks_now(built, asset)
    assert_passed(found, asset, failed={(asset, "no_duplicate_cells")})
    metadata = found[(asset, "no_duplicate_cells")].metadata
    assert metadata["buckets_with_duplicates"] == {utc_text(built.bucket_of(grain)): 1}
    assert metadata["duplicate_rows"] == 1


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
