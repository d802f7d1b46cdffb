"""The demo client in Debian's Chromium against a real uvicorn ingestion server and Kafka."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from heatmap_core.grid import cell_of
from heatmap_core.provision import ensure_topic
from heatmap_core.settings import Settings
from tests.conftest import free_port, serve_app

from .conftest import WRITE_KEYS, WRITE_KEYS_SETTING, read_topic
from .demo_session import (
    DESKTOP,
    PHONE,
    Viewport,
    open_demo,
    play_session,
    wait_until_all_acknowledged,
    within_one_cell,
)

pytestmark = pytest.mark.browser

MAX_BATCH = 200
# Tall enough to show the part of the screen the mouse paths below cover.
PATH_VIEWPORT = Viewport("desktop-tall", 1280, 1100, mobile=False)


@pytest.fixture(scope="module")
def topic_settings(stack: Settings) -> Settings:
    """One topic for the module (the server outlives a test); each test writes its own screen_id."""
    isolated = stack.model_copy(update={"topic": f"test.browser.{uuid.uuid4().hex[:10]}"})
    ensure_topic(isolated)
    return isolated


@pytest.fixture(scope="module")
def server(topic_settings: Settings, tmp_path_factory):
    """uvicorn running ingestion_api.app:app on a free port, on the module's topic, with write keys on."""
    port = free_port()
    keyed = topic_settings.model_copy(
        update={
            "auth_enabled": True,
            "write_keys": WRITE_KEYS_SETTING,
            "cors_origins": f"http://127.0.0.1:{port}",
        }
    )
    log_path = tmp_path_factory.mktemp("ingestion") / "ingestion.log"
    with serve_app("ingestion_api.app:app", keyed, port=port, log_path=log_path) as url:
        yield url


def _path(left: float, top: float, count: int) -> list[tuple[int, int]]:
    """A zig-zag over the screen; consecutive points are 13 px apart so each event matches one point."""
    return [(round(left) + 20 + (i * 13) % 360, round(top) + 20 + (i * 8) // 5) for i in range(count)]


def _match(event, points, box) -> int:
    """Index of the path point the event is within one pixel of (in page pixels), or -1."""
    x, y = event.x_norm * box["width"] + box["x"], event.y_norm * box["height"] + box["y"]
    for index, (px, py) in enumerate(points):
        if abs(x - px) <= 1 and abs(y - py) <= 1:
            return index
    return -1


def _records(settings: Settings, screen_id: str):
    return [record for key, record in read_topic(settings) if key == f"acme|{screen_id}".encode()]


def _open_demo(browser, server: str, screen_id: str, viewport: Viewport = PATH_VIEWPORT, **params: str):
    return open_demo(browser, server, "acme", screen_id, WRITE_KEYS["acme"], viewport, **params)


def _counters(page) -> dict[str, int]:
    names = ("captured", "queued", "sent", "acknowledged", "rejected", "beaconed")
    return {name: int(page.locator(f"#count-{name}").text_content()) for name in names}


def test_demo_events_match_the_mouse_path(browser, server, topic_settings, artifacts_dir):
    page, box, errors = _open_demo(browser, server, "path", throttle_ms="0")
    points = _path(box["x"], box["y"], 300)
    click = (round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] * 0.2))

    for x, y in points:
        page.mouse.move(x, y)
    page.mouse.click(*click)
    wait_until_all_acknowledged(page)
    page.screenshot(path=str(artifacts_dir / "ingestion-demo.png"))
    counters = _counters(page)
    page.close()

    records = _records(topic_settings, "path")
    events = [event for record in records for event in record.events]
    moves = [e for e in events if e.event_type == "mousemove"]
    route = [*points, click]  # the click moves the pointer to its spot first
    matched = [_match(e, route, box) for e in moves]
    assert errors == []
    assert counters["rejected"] == 0 and counters["acknowledged"] == counters["captured"] == len(events)
    assert all(1 <= len(record.events) <= MAX_BATCH for record in records)
    # Every move lies on the path within one pixel, in path order within each batch, both ends included.
    assert -1 not in matched
    for record in records:
        indices = [_match(e, route, box) for e in record.events if e.event_type == "mousemove"]
        assert indices == sorted(indices)
    assert {0, len(points) - 1, len(points)} <= set(matched)
    assert [_match(e, [click], box) for e in events if e.event_type == "click"] == [0]
    # Besides: the depth at load, and nothing else (no scrolling, one click is no rage click).
    assert sorted(e.event_type for e in events if e.event_type != "mousemove") == ["click", "scroll"]


def test_demo_sends_full_batches_of_200_and_beacons_the_rest_on_pagehide(browser, server, topic_settings):
    # No timer flush: only the 200-event cap sends while the page is open, and the beacon on pagehide.
    page, box, errors = _open_demo(browser, server, "beacon", throttle_ms="0", flush_ms="600000")
    points = _path(box["x"], box["y"], 2 * MAX_BATCH + 50)
    for x, y in points:
        page.mouse.move(x, y)
    page.wait_for_function("() => document.getElementById('count-acknowledged').textContent === '400'", timeout=60_000)
    before_hide = _counters(page)
    page.goto("about:blank")
    page.close()

    deadline = time.monotonic() + 30
    while len(records := _records(topic_settings, "beacon")) < 3:
        assert time.monotonic() < deadline, "the beaconed batch did not reach Kafka"
        time.sleep(0.5)
    ordered = [e for r in sorted(records, key=lambda r: r.events[0].event_time) for e in r.events]
    assert errors == []
    # The first event captured is the depth at load; then every point of the path, in order.
    assert before_hide["captured"] == len(points) + 1 and before_hide["queued"] == 51
    assert sorted(len(r.events) for r in records) == [51, MAX_BATCH, MAX_BATCH]
    assert ordered[0].event_type == "scroll"
    assert [_match(e, points, box) for e in ordered[1:]] == list(range(len(points)))


@pytest.mark.parametrize(("viewport", "rage_burst"), [(PHONE, 3), (DESKTOP, 5)], ids=["phone", "desktop"])
def test_demo_actions_land_in_their_own_map_and_device(
    browser, server, topic_settings, artifacts_dir, viewport: Viewport, rage_burst: int
):
    screen_id = f"actions_{viewport.name}"
    page, box, errors = _open_demo(browser, server, screen_id, viewport)
    expected = play_session(page, viewport, rage_burst)
    wait_until_all_acknowledged(page)
    counters = _counters(page)
    records = _records(topic_settings, screen_id)
    # After the records are read: a full-page screenshot may resize the viewport, and a deeper view is news.
    page.screenshot(path=str(artifacts_dir / f"ingestion-demo-{viewport.name}.png"), full_page=True, scale="css")
    page.close()

    events = [event for record in records for event in record.events]
    view = records[0].view
    assert errors == []
    assert counters["rejected"] == 0 and counters["acknowledged"] == counters["captured"] == len(events)
    assert all(1 <= len(record.events) <= MAX_BATCH for record in records)
    # Every record is v2 from one page view, with this viewport's device and sizes.
    assert [(record.version, record.device, record.view) for record in records] == [(2, viewport.device, view)] * len(
        records
    )
    assert view is not None and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", view.view_id)
    assert (view.viewport_w, view.viewport_h) == (viewport.width, viewport.height)
    assert (view.screen_w, view.screen_h) == (round(box["width"]), round(box["height"]))

    # Each action in its own map, within one cell: as many clicks at each spot as were made, and
    # exactly one rage click (at the burst's spot); a move and a scroll at least once where expected.
    for spot in {(e.event_type, e.cell) for e in expected}:
        kind, cell = spot
        found = [e for e in events if e.event_type == kind and within_one_cell(cell_of(e.x_norm, e.y_norm), cell)]
        made = sum(1 for e in expected if (e.event_type, e.cell) == spot)
        if kind in ("click", "rageclick"):
            assert len(found) == made, f"{kind} at {cell}: {len(found)} events for {made} made"
        else:
            assert found, f"no {kind} within one cell of {cell}"
    for kind in ("click", "rageclick"):
        assert sum(e.event_type == kind for e in events) == sum(e.event_type == kind for e in expected)

    # Scroll: the depth at load first, then only deeper views; the deepest is the deepest scroll's
    # viewport bottom within one row, and scrolling back up sent nothing.
    scrolls = sorted((e for e in events if e.event_type == "scroll"), key=lambda e: e.event_time)
    depths = [e.y_norm for e in scrolls]
    expected_depths = [e.cell[1] for e in expected if e.event_type == "scroll"]
    assert {e.x_norm for e in scrolls} == {0.5}
    assert depths == sorted(set(depths))
    assert abs(cell_of(0.5, depths[0])[1] - expected_depths[0]) <= 1
    assert abs(cell_of(0.5, depths[-1])[1] - expected_depths[-1]) <= 1
    assert expected_depths == sorted(expected_depths) and expected_depths[-1] > expected_depths[0] + 2
