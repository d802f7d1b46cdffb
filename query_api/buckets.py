"""Bucket time arithmetic and the range plan; pure functions, no I/O.

A bucket is one hour, one UTC day or one week starting Sunday 00:00 UTC (the
day ClickHouse's ``toStartOfWeek`` and Dagster's weekly partitions start on).
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from heatmap_core.timeutil import BUCKET_LENGTH, as_utc, day_start, is_week_start, week_start

Grain = Literal["hour", "day", "week"]
# The grains a range may take whole buckets of, coarsest first (``plan_range``); each starts at midnight.
ROLLUP_GRAINS: tuple[Grain, ...] = ("week", "day")

# ClickHouse DateTime covers 1970-01-01 .. 2106-02-07; keep whole weeks inside it.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2106, 1, 1, tzinfo=UTC)
# The longest range a request may ask for: the weekly table's retention (5 years) and a bit.
MAX_RANGE = timedelta(days=5 * 366)


class BadParameter(ValueError):
    """Input that parses but makes no sense; ``parameter`` names the query parameter."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Span:
    """Consecutive buckets of one grain, [start, end)."""

    grain: Grain
    start: datetime
    end: datetime

    @property
    def buckets(self) -> int:
        return (self.end - self.start) // BUCKET_LENGTH[self.grain]


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _out_of_bounds(parameter: str) -> BadParameter:
    return BadParameter(parameter, f"{parameter} must fall between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")


def _in_bounds(moment: datetime, parameter: str) -> datetime:
    if not EARLIEST <= moment < LATEST:
        raise _out_of_bounds(parameter)
    return moment


def hour_bucket(dt: date, hour: int) -> Span:
    start = _in_bounds(midnight(dt) + timedelta(hours=hour), "dt")
    return Span("hour", start, start + BUCKET_LENGTH["hour"])


def day_bucket(dt: date) -> Span:
    start = _in_bounds(midnight(dt), "dt")
    return Span("day", start, start + BUCKET_LENGTH["day"])


def week_bucket(week_start: date) -> Span:
    if not is_week_start(week_start):
        raise BadParameter(
            "week_start", f"week_start must be a Sunday (weeks start on Sunday, UTC), got {week_start:%A %Y-%m-%d}"
        )
    start = _in_bounds(midnight(week_start), "week_start")
    return Span("week", start, start + BUCKET_LENGTH["week"])


def range_bounds(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """Validate a [from, to) range: UTC hour boundaries (a naive time counts as UTC), from <= to."""
    bounds = []
    for parameter, moment in (("from", start), ("to", end)):
        try:
            moment = as_utc(moment)
        except OverflowError:  # its offset carries it before year 1 or past 9999: out of bounds all the same
            raise _out_of_bounds(parameter) from None
        if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
            raise BadParameter(
                parameter, f"{parameter} must be on an hour boundary (HH:00:00), got {moment.isoformat()}"
            )
        bounds.append(_in_bounds(moment, parameter))
    start, end = bounds
    if start > end:
        raise BadParameter("from", f"from ({start.isoformat()}) is after to ({end.isoformat()})")
    if end - start > MAX_RANGE:
        raise BadParameter("to", f"a range may span at most {MAX_RANGE.days} days")
    return start, end


def fitting_starts(grain: Grain, lo: datetime, hi: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The starts in [lo, hi) of the ``grain`` buckets that end by ``end``, as a window [first, after)
    (empty when first >= after): of a range ending at ``end``, ``plan_range`` can take no other
    bucket of the grain, so only these need their presence asked.

    For a range ending today this leaves out the open day and week, and the weeks starting
    less than seven days before ``end``: often every weekly bucket, and then the weekly table
    is not read at all.
    """
    length = BUCKET_LENGTH[grain]
    first = week_start(lo) if grain == "week" else day_start(lo)  # the start of the bucket holding lo
    if first < lo:
        first += length
    # Bucket starts are whole hours: s + length <= end is s < end - length + 1 hour.
    return first, min(hi, end - length + BUCKET_LENGTH["hour"])


def plan_range(start: datetime, end: datetime, rollups: AbstractSet[tuple[str, datetime]]) -> list[Span]:
    """Cover [start, end) with as few bucket rows as possible.

    Walking forward, take a whole week when the weekly table holds that week,
    else a whole day when the daily table holds it, else one hour. A rollup
    has at most as many rows as the buckets it sums, so the coarsest bucket
    present always reads fewest rows; a rollup not written yet (or past its
    table's retention) is never trusted to be empty, the finer grain answers.
    ``rollups`` is the set of (grain, bucket_start) that hold rows.
    """
    spans: list[Span] = []
    moment = start
    while moment < end:
        grain: Grain = "hour"
        if moment.hour == 0:
            for coarse in ROLLUP_GRAINS:
                if moment + BUCKET_LENGTH[coarse] <= end and (coarse, moment) in rollups:
                    grain = coarse
                    break
        following = moment + BUCKET_LENGTH[grain]
        if grain == "hour":
            # Coarser buckets start at midnight only: the hours up to the next midnight form one step.
            following = min(midnight(moment.date()) + BUCKET_LENGTH["day"], end)
        if spans and spans[-1].grain == grain and spans[-1].end == moment:
            spans[-1] = Span(grain, spans[-1].start, following)
        else:
            spans.append(Span(grain, moment, following))
        moment = following
    return spans
