"""The dashboard's week and range views, opened from a shared URL, against the known rows."""

from __future__ import annotations

import pytest

from tests.query.conftest import CLIENT, DAY, HOUR, SCREEN, WEEK, Dataset
from tests.query.test_dashboard import CELL_PIXELS, wait_ready


def _shown(page) -> dict:
    return {name: page.text_content(f"#{name}") for name in ("max", "total", "cells", "used")}


def _expected(cells) -> dict:
    return {"max": f"{max(cells.values()):,}", "total": f"{sum(cells.values()):,}", "cells": f"{len(cells):,}"}


def _assert_painted_where_hot(page, cells) -> None:
    hottest = max(cells, key=cells.get)
    empty = next((x, y) for x in range(70, 81) for y in range(150, 171) if (x, y) not in cells)
    assert page.evaluate(CELL_PIXELS, list(hottest))["maxAlpha"] > 0
    assert page.evaluate(CELL_PIXELS, list(empty))["maxAlpha"] == 0


@pytest.mark.browser
def test_week_view_shows_the_weekly_bucket(browser, live_api, dataset: Dataset):
    cells = dataset.hours(CLIENT, SCREEN, WEEK, WEEK + 7 * DAY)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(f"{live_api}/dashboard/?client={CLIENT}&screen={SCREEN}&grain=week&bucket={WEEK:%Y-%m-%dT%H:%M:%SZ}")
        wait_ready(page)
        assert page.input_value("#grain") == "week"
        assert page.input_value("#bucket") == f"{WEEK:%Y-%m-%dT%H:%M:%SZ}"
        assert _shown(page) == {**_expected(cells), "used": "one bucket"}
        _assert_painted_where_hot(page, cells)
    finally:
        page.close()


@pytest.mark.browser
def test_range_view_sums_the_fewest_buckets(browser, live_api, dataset: Dataset):
    # Saturday 22:00 before WEEK (its day not rolled up: 2 hours) .. the Monday after (WEEK, then the rolled Sunday).
    start, end = WEEK - 2 * HOUR, WEEK + 8 * DAY
    cells = dataset.hours(CLIENT, SCREEN, start, end)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(
            f"{live_api}/dashboard/?client={CLIENT}&screen={SCREEN}&grain=range"
            f"&from={start:%Y-%m-%dT%H:%M:%SZ}&to={end:%Y-%m-%dT%H:%M:%SZ}"
        )
        wait_ready(page)
        assert page.input_value("#grain") == "range"
        assert page.is_visible("#from") and page.is_hidden("#bucket-field")
        assert _shown(page) == {**_expected(cells), "used": "1 weekly, 1 daily, 2 hourly bucket(s)"}
        _assert_painted_where_hot(page, cells)
    finally:
        page.close()
