"""The range plan and bucket validation, without I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatmap_core.timeutil import BUCKET_LENGTH
from query_api.buckets import ROLLUP_GRAINS, BadParameter, fitting_starts, plan_range, range_bounds, week_bucket

ORIGIN = datetime(2026, 2, 1, tzinfo=UTC)  # a Sunday
HOUR = timedelta(hours=1)


@st.composite
def ranges_and_rollups(draw):
    start = ORIGIN + draw(st.integers(0, 24 * 21)) * HOUR
    end = start + draw(st.integers(0, 24 * 21)) * HOUR
    days = [ORIGIN + timedelta(days=i) for i in range(-1, 45)]
    present = {("day", d) for d in days if draw(st.booleans())}
    present |= {("week", d) for d in days if d.weekday() == 6 and draw(st.booleans())}
    return start, end, present


@settings(max_examples=300, deadline=None)
@given(ranges_and_rollups())
def test_plan_tiles_the_range_with_present_rollups_and_is_minimal(case):
    start, end, present = case
    spans = plan_range(start, end, present)
    buckets = [(s.grain, s.start + i * BUCKET_LENGTH[s.grain]) for s in spans for i in range(s.buckets)]
    # Exactly [start, end): contiguous, in order, no gaps or overlaps.
    moment = start
    for grain, bucket_start in buckets:
        assert bucket_start == moment
        assert grain == "hour" or (grain, bucket_start) in present
        moment += BUCKET_LENGTH[grain]
    assert moment == end
    # Greedy is minimal here: a whole present week inside the range is never split up.
    for grain, bucket_start in present:
        if grain == "week" and start <= bucket_start and bucket_start + BUCKET_LENGTH["week"] <= end:
            assert ("week", bucket_start) in buckets
    # Adjacent spans never share a grain (they would have been merged).
    assert all(a.grain != b.grain for a, b in pairwise(spans))


@settings(max_examples=300, deadline=None)
@given(ranges_and_rollups(), st.integers(0, 24 * 21))
def test_the_plan_needs_the_presence_of_fitting_buckets_only(case, split_hours):
    """Presence asked only over ``fitting_starts`` windows (split anywhere, as final and recent
    windows are) plans the range exactly as the presence of every rollup does."""
    start, end, present = case
    split = min(start + split_hours * HOUR, end)
    windows = [
        (*fitting_starts(grain, lo, hi, end), grain)
        for grain in ROLLUP_GRAINS
        for lo, hi in ((start, split), (split, end))
    ]
    seen = {(grain, s) for grain, s in present for lo, hi, g in windows if g == grain and lo <= s < hi}
    assert plan_range(start, end, seen) == plan_range(start, end, present)


def test_fitting_starts_leave_out_buckets_that_end_after_the_range():
    wednesday = ORIGIN + timedelta(days=3)  # ORIGIN is a Sunday
    # A range ending on a Wednesday: weeks starting up to seven days before it fit (here the one
    # Sunday of the window, ORIGIN - 7 days), days up to the day before it.
    last_week = fitting_starts("week", ORIGIN - timedelta(days=9), wednesday, wednesday)
    assert last_week == (ORIGIN - timedelta(days=7), wednesday - timedelta(days=7) + HOUR)
    assert fitting_starts("day", ORIGIN + HOUR, wednesday, wednesday) == (
        ORIGIN + timedelta(days=1),
        wednesday - timedelta(days=1) + HOUR,
    )
    first, after = fitting_starts("week", ORIGIN + HOUR, wednesday, wednesday)
    assert first >= after  # no week fits: the weekly table need not be read


def test_range_bounds():
    assert range_bounds(datetime(2026, 2, 1, 10), datetime(2026, 2, 1, 11, tzinfo=UTC)) == (
        datetime(2026, 2, 1, 10, tzinfo=UTC),
        datetime(2026, 2, 1, 11, tzinfo=UTC),
    )
    with pytest.raises(BadParameter) as raised:
        range_bounds(datetime(2026, 2, 1, 10, 0, 1, tzinfo=UTC), datetime(2026, 2, 1, 11, tzinfo=UTC))
    assert raised.value.parameter == "from"


def test_week_bucket_wants_a_sunday():
    assert week_bucket(date(2026, 2, 1)).end == datetime(2026, 2, 8, tzinfo=UTC)
    with pytest.raises(BadParameter) as raised:
        week_bucket(date(2026, 2, 7))
    assert raised.value.parameter == "week_start"
