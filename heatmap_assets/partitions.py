"""Time partitions of the batch side, all UTC, and the mappings between them.

Hours roll up into days and days into weeks through Dagster's time-window
partition mapping: a daily partition depends on the hourly partitions inside
its window, a weekly one on the seven daily partitions inside its window.
Weeks start on Sunday, the day ClickHouse ``toStartOfWeek`` gives by default
(``heatmap_core.timeutil.WEEK_DAY_OFFSET`` as the weekly ``day_offset``).

The partition sets start on a Sunday (so hours, days and weeks begin
together) a few weeks before today, or on ``HEATMAP_PARTITIONS_START``
(YYYY-MM-DD) when set. Each set also holds the bucket in progress
(``end_offset=1``): the current hour, day and week are materialized as their
data arrives, so dashboards are near real time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from dagster import (
    DailyPartitionsDefinition,
    HourlyPartitionsDefinition,
    TimeWindowPartitionMapping,
    WeeklyPartitionsDefinition,
)

from heatmap_core.settings import get_settings
from heatmap_core.timeutil import WEEK_DAY_OFFSET, week_start

TIMEZONE = "UTC"

HOUR_FMT = "%Y-%m-%d-%H:%M"
DAY_FMT = "%Y-%m-%d"


def partitions_start(today: date | None = None) -> date:
    """The first day of every partition set: a Sunday."""
    settings = get_settings().dagster
    if settings.partitions_start is not None:
        return week_start(settings.partitions_start)
    today = today or datetime.now(UTC).date()
    return week_start(today - timedelta(days=settings.partitions_lookback_days))


START = partitions_start()
_START = START.isoformat()

hourly_partitions = HourlyPartitionsDefinition(start_date=f"{_START}-00:00", timezone=TIMEZONE, end_offset=1)
daily_partitions = DailyPartitionsDefinition(start_date=_START, timezone=TIMEZONE, end_offset=1)
weekly_partitions = WeeklyPartitionsDefinition(
    start_date=_START, timezone=TIMEZONE, day_offset=WEEK_DAY_OFFSET, end_offset=1
)

# The default mapping between time-window partition sets, spelled out: each
# downstream window depends on every upstream partition inside it.
# The bucket in progress (today, this week) also spans hours and days that are
# not partitions yet; those simply have no rows, so they may be absent.
HOURS_OF_DAY = TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
DAYS_OF_WEEK = TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
SAME_HOUR = TimeWindowPartitionMapping()


def hour_key(hour: datetime) -> str:
    return hour.astimezone(UTC).strftime(HOUR_FMT)


def day_key(day: datetime | date) -> str:
    return day.strftime(DAY_FMT)


def window_of(partitions_def, key: str) -> tuple[datetime, datetime]:
    """[start, end) of one partition, as aware UTC datetimes."""
    window = partitions_def.time_window_for_partition_key(key)
    return window.start.astimezone(UTC), window.end.astimezone(UTC)
