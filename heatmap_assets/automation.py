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

import os
from datetime import timedelta

from dagster import AutomationCondition, AutomationConditionSensorDefinition, DefaultSensorStatus

LOOKBACK_ENV = "HEATMAP_AUTOMATION_LOOKBACK_DAYS"
INTERVAL_ENV = "HEATMAP_AUTOMATION_INTERVAL_SECONDS"


def lookback() -> timedelta:
    return timedelta(days=float(os.environ.get(LOOKBACK_ENV, "14")))


def _quiet_upstream_and_self() -> AutomationCondition:
    return ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()


def _window(bucket: timedelta) -> AutomationCondition:
    # Dagster measures the lookback back from the end of the latest partition,
    # which is the bucket in progress (end_offset=1): add one bucket length so a
    # week (or day) that started within the lookback still qualifies.
    return AutomationCondition.in_latest_time_window(lookback() + bucket)


def hourly_condition() -> AutomationCondition:
    return (
        _window(timedelta(hours=1))
        & (AutomationCondition.newly_missing() | AutomationCondition.any_deps_updated()).since_last_handled()
        & ~AutomationCondition.any_deps_missing()
        & _quiet_upstream_and_self()
    ).with_label("raw events of the hour new or changed")


def rollup_condition(bucket: timedelta) -> AutomationCondition:
    return (
        _window(bucket)
        & AutomationCondition.any_deps_updated().since_last_handled()
        & _quiet_upstream_and_self()
    ).with_label("an upstream bucket of the window changed")


def automation_sensor(target) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        "heatmap_automation",
        target=target,
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=int(os.environ.get(INTERVAL_ENV, "30")),
        emit_backfills=True,
        description="Evaluates the automation conditions of the heatmap aggregates.",
    )
