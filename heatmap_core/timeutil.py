"""Time conventions of the whole pipeline, each defined once. All times are UTC.

- A bucket is an hour, a day (from 00:00) or a week from Sunday 00:00: the
  day ClickHouse's ``toStartOfWeek`` gives by default (mode 0) and the day
  Dagster's ``WeeklyPartitionsDefinition`` starts on with ``day_offset=0``.
- The lake names an hour by its folders ``dt=YYYY-MM-DD/hour=HH``; joined, the
  two read ``"YYYY-MM-DD HH"`` (``HOUR_TEXT``), the text Spark and the ledger
  hand back.
- clickhouse-connect binds a ``DateTime('UTC')`` parameter from a naive
  datetime holding UTC wall time; every other time in the code is aware.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import overload

# Dagster's weekly day_offset and the weekday toStartOfWeek(mode 0) returns: 0 = Sunday.
WEEK_DAY_OFFSET = 0
HOUR_TEXT = "%Y-%m-%d %H"
# How long a bucket of each grain lasts: it covers [bucket_start, bucket_start + length).
BUCKET_LENGTH: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive value (as ClickHouse returns DateTime('UTC')) already is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def naive_utc(moment: datetime) -> datetime:
    """The naive UTC wall time clickhouse-connect binds a ``DateTime('UTC')`` parameter from."""
    return as_utc(moment).replace(tzinfo=None)


def hour_start(moment: datetime) -> datetime:
    """The UTC hour containing ``moment`` (which must carry a zone)."""
    if moment.tzinfo is None:
        raise ValueError("lake times must be timezone-aware")
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_start(moment: datetime) -> datetime:
    """Midnight of ``moment``'s day, in ``moment``'s own zone (or lack of one)."""
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


@overload
def week_start(day: datetime) -> datetime: ...
@overload
def week_start(day: date) -> date: ...
def week_start(day: date) -> date:
    """The Sunday that starts the week of ``day`` (a date, or a datetime: then its midnight)."""
    start = day_start(day) if isinstance(day, datetime) else day
    # isoweekday(): Monday = 1 ... Sunday = 7, so Sunday is 0 modulo 7 like WEEK_DAY_OFFSET.
    return start - timedelta(days=(start.isoweekday() - WEEK_DAY_OFFSET) % 7)


def is_week_start(day: date) -> bool:
    # The weekday alone, not week_start(day) == day: that steps back past date.min for 0001-01-01.
    return (day.isoweekday() - WEEK_DAY_OFFSET) % 7 == 0


def parse_hour(text: str) -> datetime:
    """The UTC hour named ``"YYYY-MM-DD HH"`` (a lake folder's dt and hour, joined by a space)."""
    return datetime.strptime(text, HOUR_TEXT).replace(tzinfo=UTC)
