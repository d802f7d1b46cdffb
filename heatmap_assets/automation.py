"""Declarative automation: new raw data for an hour rebuilds the hour, its day and its week.

- heatmap_hourly runs for an hour when ``raw_events`` of that hour was updated
  (the ledger sensor reported new or changed files) or when the hour became
  missing while its raw data exists; never for an hour without raw data.
- heatmap_daily / heatmap_weekly run when any of their upstream partitions was
  updated. Assets with different partition sets cannot share a run, so the
  chain advances tick by tick: the hour lands, the next tick requests its day,
  then its week. A day or week without any hourly data never runs.
- Requests for many partitions of one asset at once (a burst of late data)
  become one backfill (``emit_backfills``), which the single-run backfill
  policy executes as one run: one Spark session for all the hours.
- Nothing runs while an upstream partition or the partition itself is in
  progress, and only partitions in the recent lookback window are considered
  (older corrections are backfilled by hand).

The condition sensor is declared explicitly and starts RUNNING, so a fresh
``dagster dev`` automates without anyone flipping a switch in the UI.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, cast

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

from heatmap_assets.keys import AGGREGATES
from heatmap_core.settings import get_settings

if TYPE_CHECKING:  # Dagster does not export the class eager() returns
    from dagster._core.definitions.declarative_automation.operators.boolean_operators import AndAutomationCondition


def lookback() -> timedelta:
    return timedelta(days=get_settings().dagster.automation_lookback_days)


def _window(bucket: timedelta) -> AutomationCondition:
    # Dagster measures the lookback back from the end of the latest partition,
    # which is the bucket in progress (end_offset=1): add one bucket length so a
    # week (or day) that started within the lookback still qualifies.
    return AutomationCondition.in_latest_time_window(lookback() + bucket)


def _eager_over(bucket: timedelta) -> AndAutomationCondition:
    """Dagster's ``eager()``, over the lookback window rather than only the latest partition.

    eager() alone never rebuilds yesterday's hour when its late data lands.
    """
    # replace() keeps eager()'s top-level And (Dagster types it as Self | the replacement).
    return cast("AndAutomationCondition", AutomationCondition.eager().replace("in_latest_time_window", _window(bucket)))


def hourly_condition() -> AutomationCondition:
    return _eager_over(timedelta(hours=1)).with_label("raw events of the hour new or changed")


def rollup_condition(bucket: timedelta) -> AutomationCondition:
    return (
        _eager_over(bucket)
        # A day with traffic in only some hours must still roll up: missing hours add zero rows.
        .without(~AutomationCondition.any_deps_missing())
        # Without that guard, newly_missing would run each new (still empty) day or week as it appears.
        .replace(
            AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated(),
            AutomationCondition.any_deps_updated(),
        )
        .with_label("an upstream bucket of the window changed")
    )


heatmap_automation = AutomationConditionSensorDefinition(
    "heatmap_automation",
    target=AssetSelection.assets(*AGGREGATES),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=get_settings().dagster.automation_interval_seconds,
    emit_backfills=True,
    description="Evaluates the automation conditions of the heatmap aggregates.",
)
