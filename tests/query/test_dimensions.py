"""Heatmap v2 filters on known rows: every (type, device) of every grain and a range is exact,
``all`` is the sum of everything stored, unknown values are 400s naming the parameter, answers
of different filters never share an ETag, the filter reaches ClickHouse's primary key, and the
bucket listing reports types, devices and views."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest
from litestar.testing import TestClient

from heatmap_core.clickhouse import clickhouse
from heatmap_core.events import DEVICES, EVENT_TYPES
from heatmap_core.schema import SCROLL_TABLES, TABLES
from heatmap_core.settings import Settings
from heatmap_core.timeutil import BUCKET_LENGTH
from query_api.buckets import day_bucket
from query_api.dimensions import Selection
from query_api.store import span_sum_sql
from tests.query.conftest import (
    CLIENT,
    DAY,
    HOT_HOUR,
    HOUR,
    OTHER_CLIENT,
    OTHER_SCREEN,
    SCREEN,
    WEEK,
    Dataset,
    day_of,
    scroll_rows,
    week_of,
)
from tests.query.test_api import cells_of, z

TYPES = ("all", *EVENT_TYPES)
DEVICE_FILTERS = ("all", *DEVICES)
# (path, time parameters, [start, end) they cover)
BUCKETS = [
    ("/heatmap/hourly", {"dt": f"{HOT_HOUR:%Y-%m-%d}", "hour": HOT_HOUR.hour}, HOT_HOUR, HOT_HOUR + HOUR),
    ("/heatmap/daily", {"dt": f"{WEEK:%Y-%m-%d}"}, WEEK, WEEK + DAY),
    ("/heatmap/daily", {"dt": f"{WEEK + 7 * DAY:%Y-%m-%d}"}, WEEK + 7 * DAY, WEEK + 8 * DAY),
    ("/heatmap/weekly", {"week_start": f"{WEEK:%Y-%m-%d}"}, WEEK, WEEK + 7 * DAY),
    (
        "/heatmap/range",
        {"from": z(WEEK - 2 * HOUR), "to": z(WEEK + 8 * DAY + 5 * HOUR)},
        WEEK - 2 * HOUR,
        WEEK + 8 * DAY + 5 * HOUR,
    ),
]


def _get(api: TestClient, path: str, params: dict, **filters: str) -> dict:
    response = api.get(path, params={"client_id": CLIENT, "screen_id": SCREEN, **params, **filters})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("path", "params", "start", "end"), BUCKETS, ids=[b[0] + "-" + str(i) for i, b in enumerate(BUCKETS)]
)
def test_every_type_and_device_is_exact(api: TestClient, dataset: Dataset, path, params, start, end):
    nonempty = 0
    for type_ in TYPES:
        for device in DEVICE_FILTERS:
            body = _get(api, path, params, type=type_, device=device)
            expected = dataset.hours(CLIENT, SCREEN, start, end, type_, device)
            assert cells_of(body) == expected, (type_, device)
            assert (body["type"], body["device"]) == (type_, device)
            nonempty += bool(expected)
    assert nonempty >= 5  # the filters select something, not only empty maps


def test_hot_hour_per_filter(api: TestClient, dataset: Dataset):
    params = {"dt": f"{HOT_HOUR:%Y-%m-%d}", "hour": HOT_HOUR.hour}

    def cells(**filters: str) -> dict[tuple[int, int], int]:
        return dict(cells_of(_get(api, "/heatmap/hourly", params, **filters)))

    assert cells() == {(25, 40): 500, (26, 40): 200}
    assert cells(type="click") == {(25, 40): 300}
    assert cells(type="mousemove") == {(25, 40): 150, (26, 40): 200}
    assert cells(type="rageclick") == {(25, 40): 50}
    assert cells(device="desktop") == {(25, 40): 450, (26, 40): 80}
    assert cells(device="unknown") == {(26, 40): 120}
    assert cells(type="mousemove", device="desktop") == {(25, 40): 150, (26, 40): 80}
    assert cells(type="scroll") == cells(device="tablet") == cells(type="click", device="mobile") == {}


@pytest.mark.parametrize(("path", "params", "start", "end"), [BUCKETS[3], BUCKETS[4]], ids=["weekly", "range"])
def test_all_is_the_sum_of_every_stored_type_and_every_device(
    api: TestClient, dataset: Dataset, path, params, start, end
):
    everything = cells_of(_get(api, path, params))
    by_type = Counter[tuple[int, int]]()
    for type_ in EVENT_TYPES:
        by_type.update(cells_of(_get(api, path, params, type=type_)))
    # Rows migrated from before v2 (event type unknown) have no type filter: only `all` reads them.
    migrated = dataset.hours(CLIENT, SCREEN, start, end, "unknown")
    assert migrated and by_type + migrated == everything
    by_device = Counter[tuple[int, int]]()
    for device in DEVICES:
        by_device.update(cells_of(_get(api, path, params, device=device)))
    assert by_device == everything


SCROLL_PATHS = ["/heatmap/scroll/hourly", "/heatmap/scroll/daily", "/heatmap/scroll/weekly", "/heatmap/scroll/range"]
TIMES = {
    "hourly": {"dt": f"{WEEK:%Y-%m-%d}", "hour": "10"},
    "daily": {"dt": f"{WEEK:%Y-%m-%d}"},
    "weekly": {"week_start": f"{WEEK:%Y-%m-%d}"},
    "range": {"from": z(WEEK), "to": z(WEEK + DAY)},
}


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [
        *[(f"/heatmap/{grain}", "type", value) for grain in TIMES for value in ("hover", "ALL", "", "unknown")],
        *[(f"/heatmap/{grain}", "device", value) for grain in TIMES for value in ("phone", "Desktop", "")],
        ("/heatmap/buckets", "type", "tap"),
        ("/heatmap/buckets", "device", "watch"),
        *[(path, "device", "phone") for path in SCROLL_PATHS],
    ],
)
def test_an_unknown_type_or_device_is_a_400_naming_it(api: TestClient, path, parameter, value):
    grain = path.rsplit("/", 1)[1]
    params = {"client_id": CLIENT, "screen_id": SCREEN, **TIMES.get(grain, {"grain": "hour"}), parameter: value}
    response = api.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["field"]) == (400, parameter)
    assert body["detail"].startswith(f"{parameter}: ")


def test_filters_have_their_own_etags(api: TestClient):
    """type=click alone and type=click on desktop hold the same cells in the hot hour: still two ETags."""
    params: dict[str, str | int] = {
        "client_id": CLIENT,
        "screen_id": SCREEN,
        "dt": f"{HOT_HOUR:%Y-%m-%d}",
        "hour": HOT_HOUR.hour,
    }
    clicks = api.get("/heatmap/hourly", params={**params, "type": "click"})
    desktop_clicks = api.get("/heatmap/hourly", params={**params, "type": "click", "device": "desktop"})
    assert clicks.json()["cells"] == desktop_clicks.json()["cells"] == {"cell_x": [25], "cell_y": [40], "count": [300]}
    assert clicks.headers["cache-control"] == desktop_clicks.headers["cache-control"] == "public, max-age=86400"
    assert clicks.headers["etag"] != desktop_clicks.headers["etag"]
    revalidated = api.get(
        "/heatmap/hourly", params={**params, "type": "click"}, headers={"If-None-Match": clicks.headers["etag"]}
    )
    assert revalidated.status_code == 304
    crossed = api.get(
        "/heatmap/hourly",
        params={**params, "type": "click", "device": "desktop"},
        headers={"If-None-Match": clicks.headers["etag"]},
    )
    assert crossed.status_code == 200 and crossed.json() == desktop_clicks.json()


def _primary_key_condition(settings: Settings, tables, selection: Selection) -> str:
    query = span_sum_sql(settings.clickhouse_database, tables, selection, [day_bucket(WEEK.date())])
    assert query is not None
    sql, parameters = query
    with clickhouse(settings) as client:
        plan = [row[0].strip() for row in client.query(f"EXPLAIN indexes = 1 {sql}", parameters=parameters).result_rows]
    return next(line for line in plan[plan.index("PrimaryKey") :] if line.startswith("Condition:"))


def test_the_filter_is_a_primary_key_condition(open_settings: Settings, dataset: Dataset):
    """ClickHouse narrows the granules by event type and device, not only filters the rows it read."""
    both = _primary_key_condition(open_settings, TABLES, Selection(CLIENT, SCREEN, "click", "desktop"))
    assert "(event_type in ['click', 'click'])" in both and "(device in ['desktop', 'desktop'])" in both
    device_only = _primary_key_condition(open_settings, TABLES, Selection(CLIENT, SCREEN, device="mobile"))
    assert "(device in ['mobile', 'mobile'])" in device_only and "event_type" not in device_only
    unfiltered = _primary_key_condition(open_settings, TABLES, Selection(CLIENT, SCREEN))
    assert "(screen_id in ['home_v1', 'home_v1'])" in unfiltered and "device" not in unfiltered
    scroll = _primary_key_condition(open_settings, SCROLL_TABLES, Selection(CLIENT, SCREEN, device="mobile"))
    assert "(device in ['mobile', 'mobile'])" in scroll


def _expected_buckets(dataset: Dataset, grain: str, type_: str, device: str) -> list[dict]:
    start_of = {"hour": lambda hour: hour, "day": day_of, "week": week_of}[grain]
    rolled = {"hour": None, "day": dataset.rolled_days, "week": dataset.rolled_weeks}[grain]
    counts: dict[datetime, Counter] = {}
    for (client, screen, hour), hour_counts in dataset.hourly.items():
        start = start_of(hour)
        if (client, screen) != (CLIENT, SCREEN) or (rolled is not None and start not in rolled):
            continue
        for (t, d, x, y), n in hour_counts.items():
            if type_ in ("all", t) and device in ("all", d):
                counts.setdefault(start, Counter())[(t, d, x, y)] += n
    views: Counter[datetime] = Counter()
    for (client, screen, hour), hour_views in dataset.views.items():
        if (client, screen) == (CLIENT, SCREEN):
            views[start_of(hour)] += sum(
                reached
                for (d, row), (reached, _) in scroll_rows(hour_views).items()
                if row == 0 and device in ("all", d)
            )
    return [
        {
            "start": z(start),
            "end": z(start + BUCKET_LENGTH[grain]),
            "total": sum(c.values()),
            "cells": len({(x, y) for _, _, x, y in c}),
            "types": sorted({t for t, _, _, _ in c}),
            "devices": sorted({d for _, d, _, _ in c}),
            "views": views[start],
        }
        for start, c in sorted(counts.items(), reverse=True)
    ]


@pytest.mark.parametrize("grain", ["hour", "day", "week"])
@pytest.mark.parametrize(
    ("type_", "device"), [("all", "all"), ("click", "all"), ("all", "mobile"), ("mousemove", "desktop")]
)
def test_bucket_listing_reports_types_devices_and_views(api: TestClient, dataset: Dataset, grain, type_, device):
    body = api.get(
        "/heatmap/buckets",
        params={"client_id": CLIENT, "screen_id": SCREEN, "grain": grain, "type": type_, "device": device},
    ).json()
    expected = _expected_buckets(dataset, grain, type_, device)
    assert body == {
        "client_id": CLIENT,
        "screen_id": SCREEN,
        "grain": grain,
        "type": type_,
        "device": device,
        "buckets": expected,
    }
    if (type_, device) == ("all", "all"):
        # Hand-checked: the hot hour's six views (four desktop, two mobile) are in its hour, day and week.
        hot = {"hour": HOT_HOUR, "day": WEEK, "week": WEEK}[grain]
        assert (
            next(b for b in body["buckets"] if b["start"] == z(hot))["views"]
            == {"hour": 6, "day": 7, "week": 10}[grain]
        )


def test_other_screens_and_clients_stay_out(api: TestClient, dataset: Dataset):
    for client, screen in ((CLIENT, OTHER_SCREEN), (OTHER_CLIENT, SCREEN)):
        for type_ in ("all", "click"):
            body = api.get(
                "/heatmap/weekly",
                params={"client_id": client, "screen_id": screen, "week_start": f"{WEEK:%Y-%m-%d}", "type": type_},
            ).json()
            assert cells_of(body) == dataset.hours(client, screen, WEEK, WEEK + 7 * DAY, type_)
        assert dataset.hours(client, screen, WEEK, WEEK + 7 * DAY)


def test_a_filter_sent_twice_is_refused_naming_it(api: TestClient):
    for parameter, values in (("type", ["click", "all"]), ("device", ["mobile", "mobile"])):
        query = "&".join(f"{parameter}={value}" for value in values)
        response = api.get(f"/heatmap/scroll/daily?client_id={CLIENT}&screen_id={SCREEN}&dt={WEEK:%Y-%m-%d}&{query}")
        assert (response.status_code, response.json()["field"]) == (400, parameter)
