"""The dashboard's v2 views in Debian's Chromium against the query API and known rows: each tab and
device paints where its rows are, the scroll map shows the API's shares and fold, a comparison's
difference map has the right signs, the exports hold what is shown, and a live view follows a new
materialization without a reload; every control is reached by the keyboard and has a name. Screenshots
of each view at desktop and phone width are kept."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime

import httpx
import pytest

from heatmap_core.clickhouse import clickhouse, replace_bucket
from heatmap_core.schema import TABLES
from heatmap_core.timeutil import naive_utc
from tests.conftest import day_of
from tests.query.conftest import CLIENT, HOUR, SCROLL_VIEWS, WEEK, Counts, Dataset, View, write_dataset
from tests.query.test_dashboard import CANVAS_CELL, GREY, PNG_AT, is_grey, solid_png, wait_ready
from traffic.answers import cell_counts

SCREEN = "maps"
LIVE_SCREEN = "live"
HOT = WEEK + 10 * HOUR  # one hour of every type and device, below
LATER = WEEK + 14 * HOUR  # the same screen four hours on: the second period of the comparison
# (type, device, cell_x, cell_y) -> count; no cell within 5 of another, so heat never blurs across them.
HOT_ROWS = {
    ("mousemove", "desktop", 20, 30): 400,
    ("mousemove", "mobile", 80, 20): 100,
    ("click", "desktop", 70, 60): 90,
    ("click", "mobile", 30, 150): 60,
    ("rageclick", "mobile", 50, 120): 30,
}
LATER_ROWS = {("mousemove", "desktop", 20, 30): 1200, ("click", "mobile", 30, 150): 60}
EMPTY = (50, 185)  # no row anywhere near it
HOT_VIEWS = SCROLL_VIEWS[HOT]  # four desktop and two phone views, hand-listed in conftest
LATER_VIEWS = [View("desktop", 199, 30), View("desktop", 20, 10)]  # shares: 1 down to row 20, then 1/2
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def dataset(open_settings) -> Dataset:
    """Replaces the shared module dataset: this module's screen, with HOT's day and week rolled up."""
    data = Dataset()
    data.hourly[(CLIENT, SCREEN, HOT)] = Counts(HOT_ROWS)
    data.hourly[(CLIENT, SCREEN, LATER)] = Counts(LATER_ROWS)
    data.views[(CLIENT, SCREEN, HOT)] = HOT_VIEWS
    data.views[(CLIENT, SCREEN, LATER)] = LATER_VIEWS
    data.rolled_days = {day_of(HOT)}
    data.rolled_weeks = {WEEK}
    write_dataset(open_settings, data)
    return data


def _url(base: str, **params: str) -> str:
    query = "&".join(f"{key}={value}" for key, value in {"client": CLIENT, "screen": SCREEN, **params}.items())
    return f"{base}/dashboard/?{query}"


def _iso(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _hot(page, cell, selector: str = "#heat canvas") -> bool:
    return page.evaluate(CANVAS_CELL, [selector, *cell])["maxAlpha"] > 0


def _rows(device: str, type_: str) -> set[tuple[int, int]]:
    return {(x, y) for (t, d, x, y) in HOT_ROWS if type_ in ("all", t) and device in ("all", d)}


def _open(browser, url: str, viewport=DESKTOP):
    page = browser.new_page(viewport=viewport)
    page.goto(url)
    wait_ready(page)
    return page


def _keep_screenshots(page, artifacts_dir, name: str) -> None:
    """test-artifacts/dashboard-<name>-desktop.png and -phone.png of the page as it is; at phone width
    nothing may need scrolling sideways."""
    page.screenshot(path=str(artifacts_dir / f"dashboard-{name}-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
    page.screenshot(path=str(artifacts_dir / f"dashboard-{name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


@pytest.mark.browser
def test_each_tab_and_device_paints_its_own_rows(browser, live_api, dataset, artifacts_dir):
    page = _open(browser, _url(live_api, grain="hour", bucket=_iso(HOT)))
    try:
        cells = {(x, y) for (_, _, x, y) in HOT_ROWS} | {EMPTY}
        for view, type_ in (("all", "all"), ("moves", "mousemove"), ("clicks", "click"), ("rage", "rageclick")):
            page.click(f"#tabs [data-view={view}]")
            wait_ready(page)
            assert f"view={view}" in page.url or view == "all"
            for device in ("all", "desktop", "mobile"):
                page.select_option("#device", device)
                wait_ready(page)
                painted = {cell for cell in cells if _hot(page, cell)}
                assert painted == _rows(device, type_), (view, device)
                expected = {k: n for k, n in HOT_ROWS.items() if type_ in ("all", k[0]) and device in ("all", k[1])}
                assert page.text_content("#total") == f"{sum(expected.values()):,}", (view, device)
            page.select_option("#device", "all")
            wait_ready(page)
            _keep_screenshots(page, artifacts_dir, view)
        # The view is in the URL: a reload opens the clicks of mobile again.
        page.click("#tabs [data-view=clicks]")
        wait_ready(page)
        page.select_option("#device", "mobile")
        wait_ready(page)
        page.goto(page.url)
        wait_ready(page)
        assert page.get_attribute("#tabs [data-view=clicks]", "aria-selected") == "true"
        assert page.input_value("#device") == "mobile"
        assert {cell for cell in cells if _hot(page, cell)} == {(30, 150)}
        # Tabs answer the arrow keys.
        page.focus("#tabs [data-view=clicks]")
        page.keyboard.press("ArrowRight")
        wait_ready(page)
        assert page.get_attribute("#tabs [data-view=rage]", "aria-selected") == "true"
        assert {cell for cell in cells if _hot(page, cell)} == {(50, 120)}
        # A final hour is not live, and says so.
        assert page.text_content("#freshness").startswith("Final")
    finally:
        page.close()


@pytest.mark.browser
def test_presets_and_custom_range_read_the_range_endpoint(browser, live_api, dataset, artifacts_dir):
    # Last 30 days holds WEEK (at most 27 days back): both hours.
    page = _open(browser, _url(live_api, grain="30d"))
    try:
        everything = sum(HOT_ROWS.values()) + sum(LATER_ROWS.values())
        assert page.text_content("#total") == f"{everything:,}"
        page.select_option("#grain", "today")
        wait_ready(page)
        assert page.text_content("#total") == "0" and page.text_content("#cells") == "0"
        page.select_option("#grain", "range")
        wait_ready(page)
        page.fill("#from", f"{LATER:%Y-%m-%dT%H:%M}")
        page.fill("#to", f"{LATER + HOUR:%Y-%m-%dT%H:%M}")
        page.click("#show")
        wait_ready(page)
        assert page.text_content("#total") == f"{sum(LATER_ROWS.values()):,}"
        assert page.text_content("#used") == "1 hourly bucket(s)"
        _keep_screenshots(page, artifacts_dir, "range")
    finally:
        page.close()


@pytest.mark.browser
def test_activity_strip_counts_each_hour_and_opens_it(browser, live_api, dataset, artifacts_dir):
    page = _open(browser, _url(live_api, grain="day", bucket=_iso(day_of(HOT)), view="clicks"))
    try:
        bars = page.eval_on_selector_all(
            "#activity button.bar", "bars => bars.map(b => [b.dataset.hour, Number(b.dataset.count)])"
        )
        clicks = lambda rows: sum(n for (t, *_), n in rows.items() if t == "click")  # noqa: E731
        assert bars == [[_iso(HOT), clicks(HOT_ROWS)], [_iso(LATER), clicks(LATER_ROWS)]]
        assert page.locator("#activity > .bar").count() == 24  # one per hour of the day
        _keep_screenshots(page, artifacts_dir, "activity")
        page.click(f"#activity button[data-hour='{_iso(LATER)}']")
        wait_ready(page)
        assert page.input_value("#grain") == "hour" and page.input_value("#bucket") == _iso(LATER)
        assert page.text_content("#total") == f"{clicks(LATER_ROWS):,}"
    finally:
        page.close()


@pytest.mark.browser
def test_scroll_map_marks_equal_the_api_and_the_fold_sits_at_its_fold(browser, live_api, dataset, artifacts_dir):
    for device in ("all", "desktop", "mobile"):
        api = httpx.get(
            f"{live_api}/heatmap/scroll/hourly",
            params={
                "client_id": CLIENT,
                "screen_id": SCREEN,
                "dt": f"{HOT:%Y-%m-%d}",
                "hour": HOT.hour,
                "device": device,
            },
        ).json()
        shares = {row["depth_row"]: row["share"] for row in api["rows"]}
        for viewport, width in ((DESKTOP, "desktop"), (PHONE, "phone")):
            page = _open(
                browser, _url(live_api, grain="hour", bucket=_iso(HOT), view="scroll", device=device), viewport
            )
            try:
                marks = page.eval_on_selector_all(
                    "#stage .mark",
                    "marks => marks.map(m => [Number(m.dataset.row), Number(m.dataset.share), m.textContent])",
                )
                assert [row for row, _, _ in marks] == list(range(0, 200, 20))
                for row, share, text in marks:
                    assert share == shares.get(row, 0.0), (device, row)
                    assert text == f"{math.floor(shares.get(row, 0.0) * 100 + 0.5)}%", (device, row)
                assert page.text_content("#views") == f"{api['views']:,}"
                fold_row = page.get_attribute("#stage .fold", "data-row")
                assert int(fold_row) == api["fold"]["depth_row"], device
                stage = page.locator("#stage").bounding_box()
                fold = page.locator("#stage .fold").bounding_box()
                assert abs(fold["y"] - stage["y"] - api["fold"]["y_norm"] * stage["height"]) <= 1.5
                # Shaded where views reached (row 0: all of them), dark below the deepest one reached.
                top = page.evaluate(CANVAS_CELL, ["#stage .scroll-layer canvas", 50, 0])["centre"]
                assert top[0] > max(top[1], top[2]) and top[3] > 0
                deepest = max(row for row, share in shares.items() if share > 0)
                if deepest < 199:
                    below = page.evaluate(CANVAS_CELL, ["#stage .scroll-layer canvas", 50, deepest + 1])["centre"]
                    assert below[:3] == [0, 0, 0] and below[3] > 0
                page.screenshot(path=str(artifacts_dir / f"dashboard-scroll-{device}-{width}.png"), full_page=True)
            finally:
                page.close()


@pytest.mark.browser
def test_compare_two_periods_shows_share_differences_of_both_signs(browser, live_api, dataset, artifacts_dir):
    # A = HOT's moves (20,30): 400, (80,20): 100; B = LATER's moves (20,30): 1200 only.
    url = _url(
        live_api,
        grain="hour",
        bucket=_iso(HOT),
        view="moves",
        compare="period",
        from2=_iso(LATER),
        to2=_iso(LATER + HOUR),
    )
    for viewport, width in ((DESKTOP, "desktop"), (PHONE, "phone")):
        page = _open(browser, url, viewport)
        try:
            assert page.text_content("#total") == "500" and page.text_content("#total-b") == "1,200"
            assert page.text_content("#max") == "1,200"  # one scale for both sides
            assert _hot(page, (20, 30), "#heat-b canvas") and not _hot(page, (80, 20), "#heat-b canvas")
            # B's share of (20,30) is 1.0 against A's 0.8: positive (red); (80,20) 0 against 0.2: negative (blue).
            up = page.evaluate(CANVAS_CELL, ["#diff", 20, 30])["centre"]
            down = page.evaluate(CANVAS_CELL, ["#diff", 80, 20])["centre"]
            assert up[3] > 0 and up[0] > up[2], up
            assert down[3] > 0 and down[2] > down[0], down
            assert page.evaluate(CANVAS_CELL, ["#diff", *EMPTY])["maxAlpha"] == 0
            assert page.text_content("#diff-max") == "+20.00% of total"
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            page.screenshot(path=str(artifacts_dir / f"dashboard-compare-{width}.png"), full_page=True)
        finally:
            page.close()


@pytest.mark.browser
def test_compare_scroll_depth_of_two_periods(browser, live_api, dataset, artifacts_dir):
    url = _url(
        live_api,
        grain="hour",
        bucket=_iso(HOT),
        view="scroll",
        compare="period",
        from2=_iso(LATER),
        to2=_iso(LATER + HOUR),
    )
    page = _open(browser, url)
    try:
        assert page.text_content("#views") == "6" and page.text_content("#views-b") == "2"
        # Row 60: all 6 of A's views reach it, 1 of B's 2: -1/2 (blue). Row 199: 1 of A's 6, 1 of B's 2: +1/3 (red).
        # Row 5: every view of both: no difference.
        down = page.evaluate(CANVAS_CELL, ["#diff", 50, 60])["centre"]
        up = page.evaluate(CANVAS_CELL, ["#diff", 50, 199])["centre"]
        assert down[3] > 0 and down[2] > down[0], down
        assert up[3] > 0 and up[0] > up[2], up
        assert page.evaluate(CANVAS_CELL, ["#diff", 50, 5])["maxAlpha"] == 0
        assert page.text_content("#diff-min") == "\u221250.00% of views"  # a minus sign
        _keep_screenshots(page, artifacts_dir, "compare-scroll")
    finally:
        page.close()


@pytest.mark.browser
def test_compare_two_devices(browser, live_api, dataset):
    page = _open(
        browser,
        _url(
            live_api,
            grain="hour",
            bucket=_iso(HOT),
            view="clicks",
            device="desktop",
            compare="device",
            device2="mobile",
        ),
    )
    try:
        assert page.text_content("#total") == "90" and page.text_content("#total-b") == "60"
        assert _hot(page, (70, 60)) and not _hot(page, (30, 150))
        assert _hot(page, (30, 150), "#heat-b canvas") and not _hot(page, (70, 60), "#heat-b canvas")
        assert page.evaluate(CANVAS_CELL, ["#diff", 30, 150])["centre"][0] > 150  # only B clicks there: red
    finally:
        page.close()


@pytest.mark.browser
def test_exports_hold_the_view(browser, live_api, dataset, artifacts_dir):
    upload = httpx.put(
        f"{live_api}/screenshots/{CLIENT}/{SCREEN}",
        content=solid_png(200, 400, GREY),
        headers={"Content-Type": "image/png"},
    )
    assert upload.status_code == 200, upload.text
    page = _open(browser, _url(live_api, grain="hour", bucket=_iso(HOT)))
    try:
        assert page.is_visible("#screenshot")
        with page.expect_download() as download:
            page.click("#export-csv")
        csv = download.value.path().read_text().splitlines()
        api = httpx.get(
            f"{live_api}/heatmap/hourly",
            params={"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{HOT:%Y-%m-%d}", "hour": HOT.hour},
        ).json()
        assert csv[0] == "cell_x,cell_y,count"
        assert csv[1:] == [f"{x},{y},{n}" for (x, y), n in cell_counts(api).items()]

        with page.expect_download() as download:
            page.click("#export-png")
        assert download.value.suggested_filename.endswith(".png")
        png = download.value.path().read_bytes()
        (artifacts_dir / "dashboard-export.png").write_bytes(png)
        # The stage sits at (16, 38) in the export, 300 x 600 (the screenshot's 1:2 shape).
        at = lambda cx, cy: [16 + int((cx + 0.5) * 3), 38 + int((cy + 0.5) * 3)]  # noqa: E731
        decoded = page.evaluate(
            PNG_AT, [base64.b64encode(png).decode(), [at(20, 30), at(*EMPTY), [30, 38 + 600 + 16 + 6]]]
        )
        width, height = decoded["size"]
        assert width == 16 + 300 + 16 and height > 38 + 600
        over_heat, over_shot, legend = decoded["pixels"]
        assert not is_grey(over_heat), over_heat  # the heat over the screenshot
        assert is_grey(over_shot), over_shot  # the screenshot where nothing was recorded
        assert legend != [255, 255, 255]  # the gradient of the legend
    finally:
        page.close()


@pytest.mark.browser
def test_live_view_follows_a_new_materialization_without_reload(
    browser, live_api, dataset, open_settings, artifacts_dir
):
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    table = TABLES["hour"]

    def materialize(count: int) -> None:
        with clickhouse(open_settings) as client:
            rows = [(CLIENT, LIVE_SCREEN, "click", "desktop", naive_utc(now), 40, 80, count)]
            replace_bucket(client, table, now, rows=rows, database=open_settings.clickhouse_database)

    materialize(7)
    page = _open(browser, _url(live_api, screen=LIVE_SCREEN, grain="last-hour", refresh="1"))
    try:
        assert page.text_content("#total") == "7"
        assert page.text_content("#freshness").startswith("Live")
        first_written = page.get_attribute("#freshness", "data-materialized-at")
        assert first_written
        page.evaluate("window.firstCanvas = document.querySelector('#heat canvas')")
        page.evaluate(
            "window.reloaded = false; window.addEventListener('beforeunload', () => { window.reloaded = true; })"
        )
        materialize(19)
        page.wait_for_function("document.getElementById('total').textContent === '19'", timeout=20000)
        # Redrawn in place: the same canvas, no reload, the note follows the new write.
        assert page.evaluate("document.querySelector('#heat canvas') === window.firstCanvas && !window.reloaded")
        assert _hot(page, (40, 80))
        page.wait_for_function(
            f"document.getElementById('freshness').dataset.materializedAt >= {first_written!r}", timeout=10000
        )
        _keep_screenshots(page, artifacts_dir, "live")
    finally:
        page.close()


@pytest.mark.browser
def test_compare_asks_for_period_b_and_then_defaults_it(browser, live_api, dataset):
    page = browser.new_page(viewport=DESKTOP)
    try:
        page.goto(_url(live_api, grain="hour", bucket=_iso(LATER), compare="period"))
        page.wait_for_selector("#stage[data-state=error]")
        assert page.text_content("#error") == "Choose when period B starts and ends."
        # Choosing the comparison again fills B with the period just before A.
        page.select_option("#compare", "")
        wait_ready(page)
        page.select_option("#compare", "period")
        wait_ready(page)
        assert (page.input_value("#from2"), page.input_value("#to2")) == (
            f"{LATER - HOUR:%Y-%m-%dT%H:%M}",
            f"{LATER:%Y-%m-%dT%H:%M}",
        )
        assert page.is_hidden("#error") and page.is_visible("#panel-diff")
    finally:
        page.close()


# The focused element: a key naming it (its id, else the hour of an activity bar or the view of a tab), or
# null when focus has left the page's controls.
FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  return el.id || (el.dataset.hour && `bar ${el.dataset.hour}`) || (el.dataset.view && `tab ${el.dataset.view}`)
    || el.outerHTML.slice(0, 80);
}"""
# Every element the Tab key should reach, in document order (no positive tabindex is used): shown,
# enabled and in the tab order (a tab that is not selected is reached by the arrow keys instead).
TABBABLE = """() => [...document.querySelectorAll("a[href], button, input, select, textarea, [tabindex]")]
  .filter((el) => el.tabIndex >= 0 && !el.disabled && el.getClientRects().length > 0
    && getComputedStyle(el).visibility !== "hidden")
  .map((el) => el.id || (el.dataset.hour && `bar ${el.dataset.hour}`) || (el.dataset.view && `tab ${el.dataset.view}`)
    || el.outerHTML.slice(0, 80))"""


def _accessible_name(cdp) -> str:
    """The focused element's accessible name as Chromium computes it (its accessibility tree, over CDP)."""
    element = cdp.send("Runtime.evaluate", {"expression": "document.activeElement"})["result"]["objectId"]
    node, *_ = cdp.send("Accessibility.getPartialAXTree", {"objectId": element, "fetchRelatives": False})["nodes"]
    return node.get("name", {}).get("value", "").strip()


def _tab_through(page, cdp) -> dict[str, str]:
    """{element: accessible name} of every element the Tab key focuses, from the top of the page until
    focus leaves the page or comes round again, in the order reached. Tab steps through a date input's
    fields (day, month, year, hour, minute) before it leaves the input."""
    page.evaluate("document.activeElement && document.activeElement.blur()")
    reached: dict[str, str] = {}
    last = None
    for _ in range(200):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED)
        if focused == last:
            continue
        if focused is None or focused in reached:
            return reached
        reached[focused] = _accessible_name(cdp)
        last = focused
    raise AssertionError(f"focus never left the page: {list(reached)}")


VIEWS = ("all", "moves", "clicks", "rage", "scroll")


@pytest.mark.browser
@pytest.mark.parametrize(
    "params, controls",
    [
        (  # a day of clicks beside another device: the activity strip has bars, device B its select
            {"grain": "day", "bucket": _iso(day_of(HOT)), "view": "clicks", "compare": "device", "device2": "mobile"},
            {"device2", f"bar {_iso(HOT)}", f"bar {_iso(LATER)}"},
        ),
        (  # a custom range beside another period: their four time inputs
            {"grain": "range", "view": "clicks", "compare": "period", "from2": _iso(LATER), "to2": _iso(LATER + HOUR)},
            {"from", "to", "from2", "to2"},
        ),
    ],
    ids=["day-compare-device", "range-compare-period"],
)
def test_every_control_is_reached_by_the_keyboard_and_named(browser, live_api, dataset, params, controls):
    page = _open(browser, _url(live_api, **params))
    cdp = page.context.new_cdp_session(page)
    try:
        cdp.send("Accessibility.enable")
        reached = _tab_through(page, cdp)
        # Tab reaches every control shown, each once, in the page's order ...
        assert list(reached) == page.evaluate(TABBABLE)
        # ... among them the time presets, the device filter, the selected tab, the comparison and the exports.
        shared = {"client", "screen", "grain", "device", "compare", "show", "tab clicks", "export-png", "export-csv"}
        assert shared | controls <= set(reached), list(reached)
        # Each has a name a screen reader says: its label, aria-label or text.
        assert [element for element, name in reached.items() if not name] == []
        # The other tabs by the arrow keys, each named too.
        page.focus("#tabs [data-view=clicks]")
        by_arrows = {}
        for _ in VIEWS:
            page.keyboard.press("ArrowRight")
            wait_ready(page)
            by_arrows[page.evaluate(FOCUSED)] = _accessible_name(cdp)
        assert by_arrows == {
            "tab rage": "Rage clicks",
            "tab scroll": "Scroll depth",
            "tab all": "All events",
            "tab moves": "Moves",
            "tab clicks": "Clicks",
        }
    finally:
        cdp.detach()
        page.close()
