"""Scroll reach endpoints against hand-computed answers for the views of conftest.SCROLL_VIEWS.

Each case lists the views it covers, then its answer worked out by hand: the
depth rows as segments of equal reach (first row, last row, views reaching
them), the folds per row, and the median fold row.
"""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from tests.query.conftest import CLIENT, DAY, HOT_HOUR, HOUR, OTHER_CLIENT, SCREEN, WEEK
from tests.query.test_api import z

Query = dict[str, str | int]
HOURLY: tuple[str, Query] = ("/heatmap/scroll/hourly", {"dt": f"{HOT_HOUR:%Y-%m-%d}", "hour": HOT_HOUR.hour})
DAILY = ("/heatmap/scroll/daily", {"dt": f"{WEEK:%Y-%m-%d}"})
WEEKLY = ("/heatmap/scroll/weekly", {"week_start": f"{WEEK:%Y-%m-%d}"})
RANGE = ("/heatmap/scroll/range", {"from": z(WEEK - 2 * HOUR), "to": z(WEEK + 8 * DAY + 5 * HOUR)})

CASES = {
    # The hot hour: desktop (deepest, fold) 60/40, 100/40, 100/50, 150/60; mobile 199/20, 120/30.
    "hour": (
        *HOURLY,
        "all",
        [(0, 60, 6), (61, 100, 5), (101, 120, 3), (121, 150, 2), (151, 199, 1)],
        {20: 1, 30: 1, 40: 2, 50: 1, 60: 1},
        40,  # running folds 1, 2, 4: 4 >= 6 / 2 at row 40
    ),
    "hour desktop": (*HOURLY, "desktop", [(0, 60, 4), (61, 100, 3), (101, 150, 1)], {40: 2, 50: 1, 60: 1}, 40),
    "hour mobile": (*HOURLY, "mobile", [(0, 120, 2), (121, 199, 1)], {20: 1, 30: 1}, 20),
    # The day adds 15:00's desktop view 30/30.
    "day": (
        *DAILY,
        "all",
        [(0, 30, 7), (31, 60, 6), (61, 100, 5), (101, 120, 3), (121, 150, 2), (151, 199, 1)],
        {20: 1, 30: 2, 40: 2, 50: 1, 60: 1},
        40,  # running 1, 3, 5: 5 >= 7 / 2 first at row 40
    ),
    "day desktop": (
        *DAILY,
        "desktop",
        [(0, 30, 5), (31, 60, 4), (61, 100, 3), (101, 150, 1)],
        {30: 1, 40: 2, 50: 1, 60: 1},
        40,
    ),
    # The week adds Monday 03:00's mobile views 199/25, 199/25, 150/22.
    "week": (
        *WEEKLY,
        "all",
        [(0, 30, 10), (31, 60, 9), (61, 100, 8), (101, 120, 6), (121, 150, 5), (151, 199, 3)],
        {20: 1, 22: 1, 25: 2, 30: 2, 40: 2, 50: 1, 60: 1},
        30,  # running 1, 2, 4, 6: 6 >= 10 / 2 at row 30
    ),
    "week mobile": (*WEEKLY, "mobile", [(0, 120, 5), (121, 150, 4), (151, 199, 3)], {20: 1, 22: 1, 25: 2, 30: 1}, 25),
    # The range adds the next Monday's (not rolled up) tablet views 80/60, 80/70.
    "range": (
        *RANGE,
        "all",
        [(0, 30, 12), (31, 60, 11), (61, 80, 10), (81, 100, 8), (101, 120, 6), (121, 150, 5), (151, 199, 3)],
        {20: 1, 22: 1, 25: 2, 30: 2, 40: 2, 50: 1, 60: 2, 70: 1},
        30,  # running 1, 2, 4, 6: 6 >= 12 / 2 at row 30
    ),
    "range tablet": (*RANGE, "tablet", [(0, 80, 2)], {60: 1, 70: 1}, 60),
}


def _rows(segments: list[tuple[int, int, int]], folds: dict[int, int]) -> list[dict]:
    views = segments[0][2]
    return [
        {
            "depth_row": row,
            "y_norm": row / 200,
            "reached": reached,
            "share": reached / views,
            "folds": folds.get(row, 0),
        }
        for first, last, reached in segments
        for row in range(first, last + 1)
    ]


def _get(api: TestClient, path: str, params: dict, client: str = CLIENT, **extra: str) -> dict:
    response = api.get(path, params={"client_id": client, "screen_id": SCREEN, **params, **extra})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(("path", "params", "device", "segments", "folds", "fold_row"), CASES.values(), ids=CASES)
def test_scroll_reach_is_exact(api: TestClient, path, params, device, segments, folds, fold_row):
    body = _get(api, path, params, device=device)
    views = segments[0][2]
    assert body["views"] == views and body["device"] == device and body["grid_h"] == 200
    assert body["rows"] == _rows(segments, folds)
    assert body["fold"] == {"depth_row": fold_row, "y_norm": fold_row / 200}


def test_device_all_is_the_default(api: TestClient):
    assert _get(api, *HOURLY) == _get(api, *HOURLY, device="all")


def test_a_range_plans_over_the_scroll_rollups(api: TestClient):
    """The scroll tables' own rollups answer: the week, then hours (no scroll rollup of the Sunday after: no views)."""
    assert _get(api, *RANGE)["buckets"] == [
        {"grain": "hour", "start": z(WEEK - 2 * HOUR), "end": z(WEEK), "buckets": 2},
        {"grain": "week", "start": z(WEEK), "end": z(WEEK + 7 * DAY), "buckets": 1},
        {"grain": "hour", "start": z(WEEK + 7 * DAY), "end": z(WEEK + 8 * DAY + 5 * HOUR), "buckets": 29},
    ]
    inside = _get(api, "/heatmap/scroll/range", {"from": z(WEEK + 3 * HOUR), "to": z(WEEK + 2 * DAY)})
    assert inside["buckets"] == [
        {"grain": "hour", "start": z(WEEK + 3 * HOUR), "end": z(WEEK + DAY), "buckets": 21},
        {"grain": "day", "start": z(WEEK + DAY), "end": z(WEEK + 2 * DAY), "buckets": 1},
    ]
    assert (inside["from"], inside["to"]) == (z(WEEK + 3 * HOUR), z(WEEK + 2 * DAY))
    # Every view of the week lies inside it.
    assert inside["views"] == 10 and inside["fold"] == {"depth_row": 30, "y_norm": 0.15}


@pytest.mark.parametrize(
    ("path", "params", "device"),
    [
        ("/heatmap/scroll/hourly", {"dt": f"{WEEK:%Y-%m-%d}", "hour": 5}, "all"),  # no view in this hour
        (*HOURLY, "tablet"),
        ("/heatmap/scroll/weekly", {"week_start": f"{WEEK + 7 * DAY:%Y-%m-%d}"}, "all"),
        ("/heatmap/scroll/range", {"from": z(WEEK), "to": z(WEEK)}, "all"),
    ],
)
def test_no_views_is_an_empty_answer(api: TestClient, path, params, device):
    body = _get(api, path, params, device=device)
    assert (body["views"], body["rows"], body["fold"]) == (0, [], None)


def test_another_tenants_views_stay_apart(api: TestClient):
    theirs = _get(api, *HOURLY, client=OTHER_CLIENT)
    assert theirs["views"] == 1 and theirs["rows"] == _rows([(0, 10, 1)], {10: 1})
    assert _get(api, *HOURLY, client=CLIENT, device="desktop")["views"] == 4


def test_scroll_answers_are_cached_per_device(api: TestClient):
    path, hour = HOURLY
    params: Query = {"client_id": CLIENT, "screen_id": SCREEN, **hour}
    everyone = api.get(path, params=params)
    mobile = api.get(path, params={**params, "device": "mobile"})
    assert everyone.headers["cache-control"] == "public, max-age=86400"
    assert everyone.headers["etag"] != mobile.headers["etag"]
    again = api.get(
        path,
        params=params,
        headers={"If-None-Match": everyone.headers["etag"]},
    )
    assert again.status_code == 304
