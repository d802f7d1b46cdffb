"""The hourly job's rows go from the Spark executors to ClickHouse through staged Parquet files,
never through the driver; the staging is cleaned whatever happens.

Real S3 server, ClickHouse server and local Spark; expected figures from ``tests.assets.lakedata``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from dagster import materialize

from heatmap_assets.assets import ALL_ASSETS, replace_from_staging
from heatmap_assets.partitions import hour_key
from heatmap_assets.resources import LakeResource, build_resources
from heatmap_assets.spark_job import HourFigures, write_hours
from heatmap_core.clickhouse import apply_schema, clickhouse
from heatmap_core.lake import STAGING_MAX_AGE, STAGING_PREFIX, staging_kind_prefix, staging_prefix
from heatmap_core.schema import CELLS, HOURLY, SCROLL, SCROLL_HOURLY
from tests.assets import lakedata
from tests.assets.runs import run
from tests.conftest import free_port


def _hour(days_back: int) -> datetime:
    return (datetime.now(UTC) - timedelta(days=days_back)).replace(minute=0, second=0, microsecond=0)


def _lake(settings) -> LakeResource:
    return build_resources(settings)["lake_store"]


def _keys(settings, prefix: str) -> list[str]:
    return sorted(obj.key for obj in _lake(settings).list(prefix))


def test_executors_stage_each_hour_and_clickhouse_reads_it_exactly(settings, spark):
    first = _hour(2)
    second = first + timedelta(hours=1)
    events = {
        first: lakedata.make_events(first, "acme", "home_v1", 400, partition=0, offset=10, seed=21, views=12),
        second: lakedata.make_events(second, "globex", "pricing", 150, partition=1, offset=5, seed=22, views=5),
    }
    parts = {hour: lakedata.write_part(settings, hour, found, duplicate_every=9) for hour, found in events.items()}
    lake = _lake(settings)
    run_id = "run-under-test"
    staging = lake.s3a_path(staging_prefix(run_id))

    figures = write_hours(spark, {hour: [lake.s3a_path(part.key)] for hour, part in parts.items()}, "json", staging)

    expected_cells = {hour: lakedata.expected_cells(found, hour) for hour, found in events.items()}
    expected_scroll = {hour: lakedata.scroll_rows(lakedata.scroll_views(found, hour)) for hour, found in events.items()}
    assert figures == {
        hour: HourFigures(
            hour,
            lines=parts[hour].lines,
            events=len(events[hour]),
            cells=len(expected_cells[hour]),
            views=sum(len(v) for v in lakedata.scroll_views(events[hour], hour).values()),
            scroll_rows=len(expected_scroll[hour]),
        )
        for hour in events
    }
    # One Spark write: its commit marker, then one folder per kind and hour of Parquet part files only.
    staged = _keys(settings, STAGING_PREFIX)
    assert f"{staging_prefix(run_id)}_SUCCESS" in staged
    for kind in (CELLS, SCROLL):
        prefix = staging_kind_prefix(run_id, kind.name)
        mine = [key.removeprefix(prefix) for key in staged if key.startswith(prefix)]
        assert {key.split("/")[0] for key in mine} == {f"hour_id={hour:%Y%m%d%H}" for hour in events}
        assert all(re.fullmatch(r"hour_id=\d{10}/part-[^/]+\.parquet", key) for key in mine)

    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        for hour, figure in figures.items():
            for table, rows in ((HOURLY, figure.cells), (SCROLL_HOURLY, figure.scroll_rows)):
                written = replace_from_staging(client, lake, run_id, table, hour, rows, settings.clickhouse_database)
                assert written == (rows, rows)
    end = second + timedelta(hours=1)
    assert lakedata.table_cells(settings, HOURLY.name, first, end) == expected_cells[first] | expected_cells[second]
    assert lakedata.table_scroll(settings, SCROLL_HOURLY.name, first, end) == (
        expected_scroll[first] | expected_scroll[second]
    )


def test_a_run_cleans_its_staging_and_a_failed_one_leaves_the_live_bucket(settings, spark, instance):
    hour = _hour(3)
    old = lakedata.make_events(hour, "acme", "home_v1", 120, partition=0, offset=1, seed=31, views=4)
    part = lakedata.write_part(settings, hour, old)
    result = run(settings, instance, "heatmap_hourly", hour_key(hour))
    end = hour + timedelta(hours=1)
    assert lakedata.table_cells(settings, HOURLY.name, hour, end) == lakedata.expected_cells(old, hour)
    metadata = result.asset_materializations_for_node("heatmap_hourly")[0].metadata
    assert metadata["staging_prefix"].value == (
        f"s3://{settings.raw_bucket}/{STAGING_PREFIX}{result.run_id}/ (deleted)"
    )
    assert _keys(settings, STAGING_PREFIX) == []

    # The hour's files change, and the run fails after the executors staged the new rows
    # (ClickHouse cannot be reached): the live bucket keeps the old rows, the staging is gone.
    lakedata.delete(settings, part.key)
    new = lakedata.make_events(hour, "acme", "home_v1", 60, partition=0, offset=500, seed=32, views=2)
    lakedata.write_part(settings, hour, new)
    unreachable = settings.model_copy(update={"clickhouse_dsn": f"http://127.0.0.1:{free_port()}"})
    failed = materialize(
        ALL_ASSETS,
        selection="heatmap_hourly",
        partition_key=hour_key(hour),
        resources=build_resources(unreachable),
        instance=instance,
        raise_on_error=False,
    )
    assert not failed.success
    logged = [entry.user_message for entry in instance.all_logs(failed.run_id)]
    staged = len(lakedata.expected_cells(new, hour)), len(lakedata.scroll_rows(lakedata.scroll_views(new, hour)))
    assert any(
        message.startswith(f"staged {staged[0]} cells and {staged[1]} scroll rows under s3://{settings.raw_bucket}/")
        for message in logged
    ), logged
    assert "Connection refused" in str(failed.all_events)
    assert lakedata.table_cells(settings, HOURLY.name, hour, end) == lakedata.expected_cells(old, hour)
    assert lakedata.table_scroll(settings, SCROLL_HOURLY.name, hour, end) == (
        lakedata.scroll_rows(lakedata.scroll_views(old, hour))
    )
    assert _keys(settings, STAGING_PREFIX) == []


def test_staged_files_a_dead_run_left_are_swept_once_old(settings):
    lake = _lake(settings)
    left = [f"{staging_kind_prefix('dead-run', CELLS.name)}hour_id=2026112523/part-{n}.parquet" for n in range(3)]
    for key in left:
        lakedata.put(settings, key, b"not read by anything")
    now = datetime.now(UTC)
    assert lake.sweep_staging(now) == 0
    assert _keys(settings, STAGING_PREFIX) == left
    assert lake.sweep_staging(now + STAGING_MAX_AGE + timedelta(minutes=1)) == 3
    assert _keys(settings, STAGING_PREFIX) == []
