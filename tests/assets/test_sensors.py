"""The ledger sensor and the late-partition alert, evaluated in-process against a real instance."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetMaterialization,
    SensorResult,
    SkipReason,
    build_sensor_context,
    materialize,
)

from heatmap_assets import checks
from heatmap_assets.assets import ALL_ASSETS
from heatmap_assets.keys import HOURLY_KEY, RAW_EVENTS
from heatmap_assets.partitions import START, day_key, hour_key
from heatmap_assets.resources import build_resources
from heatmap_assets.sensors import heatmap_freshness, raw_events_ledger
from heatmap_core.settings import get_settings
from tests.assets import lakedata


def evaluate(sensor_def, instance, cursor=None, resources=None):
    context = build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor_def(context)
    cursor = result.cursor if isinstance(result, SensorResult) and result.cursor is not None else context.cursor
    return result, cursor


def test_ledger_sensor_reports_each_hour_once(settings, instance):
    sensor_def = raw_events_ledger
    resources = {"lake_store": build_resources(settings)["lake_store"]}
    now = datetime.now(UTC)
    h1 = (now - timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    h2 = h1 + timedelta(hours=5)
    p1 = lakedata.write_part(
        settings, h1, lakedata.make_events(h1, "acme", "home_v1", 30, partition=0, offset=10, seed=1)
    )
    p2 = lakedata.write_part(
        settings, h2, lakedata.make_events(h2, "acme", "home_v1", 12, partition=0, offset=40, seed=2)
    )
    p3 = lakedata.write_part(settings, h2, lakedata.make_events(h2, "globex", "app", 8, partition=1, offset=3, seed=3))
    lakedata.write_ledger(settings, [p1, p2], written_at=now - timedelta(minutes=5))
    lakedata.write_ledger(settings, [p3], written_at=now - timedelta(minutes=4))
    # An hour before the first partition is not tracked, and does not stall the sensor.
    old_hour = datetime(START.year, START.month, START.day, tzinfo=UTC) - timedelta(days=3)
    old = lakedata.write_part(
        settings, old_hour, lakedata.make_events(old_hour, "acme", "home_v1", 3, partition=2, offset=1, seed=4)
    )
    lakedata.write_ledger(settings, [old], written_at=now - timedelta(minutes=3))

    result, cursor = evaluate(sensor_def, instance, resources=resources)
    assert isinstance(result, SensorResult)
    by_partition = {m.partition: m for m in result.asset_events}
    assert set(by_partition) == {hour_key(h1), hour_key(h2)}
    m2 = by_partition[hour_key(h2)].metadata
    assert m2["new_files"].value == 2
    assert m2["new_events"].value == 20
    assert m2["files"].value == 2
    assert m2["bytes"].value == p2.size + p3.size
    assert by_partition[hour_key(h1)].metadata["new_events"].value == 30

    # Nothing new: skipped, cursor kept.
    result, cursor = evaluate(sensor_def, instance, cursor=cursor, resources=resources)
    assert isinstance(result, SkipReason)

    # A fresh entry (inside the settle window) is reported once, not again on the next tick.
    p4 = lakedata.write_part(
        settings, h1, lakedata.make_events(h1, "acme", "home_v1", 7, partition=0, offset=90, seed=5)
    )
    lakedata.write_ledger(settings, [p4])
    result, cursor = evaluate(sensor_def, instance, cursor=cursor, resources=resources)
    assert [m.partition for m in result.asset_events] == [hour_key(h1)]
    assert result.asset_events[0].metadata["files"].value == 2
    assert json.loads(cursor)["seen"], "a key inside the settle window is remembered"
    result, cursor = evaluate(sensor_def, instance, cursor=cursor, resources=resources)
    assert isinstance(result, SkipReason)


def _fresh_evaluations(result) -> dict[str, AssetCheckEvaluation]:
    if isinstance(result, SkipReason):
        return {}
    return {e.asset_key.to_user_string(): e for e in result.asset_events if isinstance(e, AssetCheckEvaluation)}


def test_late_partition_fires_freshness_alert(settings, instance, monkeypatch):
    """raw_events of an hour updated, heatmap_hourly kept from running: the alert fires."""
    # As HEATMAP_FRESHNESS_LAG_MINUTES=0 would, on the settings this process already read.
    monkeypatch.setattr(get_settings().dagster, "freshness_lag_minutes", 0)
    hour = (datetime.now(UTC) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    instance.report_runless_asset_event(
        AssetMaterialization(asset_key=RAW_EVENTS, partition=hour_key(hour), metadata={"new_events": 1})
    )

    result, cursor = evaluate(heatmap_freshness, instance)
    evaluations = _fresh_evaluations(result)
    hourly = evaluations["heatmap_hourly"]
    assert not hourly.passed
    assert hourly.metadata["late_partitions"].value == [hour_key(hour)]
    assert evaluations["heatmap_daily"].passed and evaluations["heatmap_weekly"].passed
    # What the sensor daemon does with the result: the failed check is stored and shown in the UI.
    for evaluation in evaluations.values():
        instance.report_runless_asset_event(evaluation)
    record = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(HOURLY_KEY, checks.FRESH_CHECK), limit=1
    )[0]
    assert record.status.value == "FAILED"

    # Unchanged state: nothing new is recorded.
    result, cursor = evaluate(heatmap_freshness, instance, cursor=cursor)
    assert isinstance(result, SkipReason)

    # The hour is rebuilt (it has no files: an empty hour, no Spark needed); now its day is late.
    result = materialize(
        ALL_ASSETS,
        selection="heatmap_hourly",
        partition_key=hour_key(hour),
        resources=build_resources(settings),
        instance=instance,
    )
    assert result.success
    result, cursor = evaluate(heatmap_freshness, instance, cursor=cursor)
    evaluations = _fresh_evaluations(result)
    assert evaluations["heatmap_hourly"].passed
    assert evaluations["heatmap_daily"].metadata["late_partitions"].value == [day_key(hour)]
    assert not evaluations["heatmap_daily"].passed
