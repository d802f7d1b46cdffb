"""The demo client in Debian's Chromium against a real uvicorn ingestion server and Kafka."""

from __future__ import annotations

import time
import uuid

import pytest

from heatmap_core.provision import ensure_topic
from heatmap_core.settings import Settings
from tests.conftest import free_port, serve_app

from .conftest import WRITE_KEYS, WRITE_KEYS_SETTING, read_topic

pytestmark = pytest.mark.browser

MAX_BATCH = 200


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


def _open_demo(browser, server: str, screen_id: str, **params: str):
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    query = "&".join(
        f"{k}={v}"
        for k, v in {"client_id": "acme", "screen_id": screen_id, "write_key": WRITE_KEYS["acme"], **params}.items()
    )
    page.goto(f"{server}/demo/?{query}")
    return page, page.locator("#screen").bounding_box(), errors


def _counters(page) -> dict[str, int]:
    names = ("captured", "queued", "sent", "acknowledged", "rejected", "beaconed")
    return {name: int(page.locator(f"#count-{name}").text_content()) for name in names}


def test_demo_events_match_the_mouse_path(browser, server, topic_settings, artifacts_dir):
    page, box, errors = _open_demo(browser, server, "path", throttle_ms="0")
    points = _path(box["x"], box["y"], 300)
    click = (round(box["x"] + box["width"] / 2), round(box["y"] + box["height"] * 0.45))

    for x, y in points:
        page.mouse.move(x, y)
    page.mouse.click(*click)
    # The 1 s timer sends whatever is queued; wait until every captured event is acknowledged.
    page.wait_for_function(
        """() => { const c = n => document.getElementById('count-' + n).textContent;
                   return c('captured') !== '0' && c('acknowledged') === c('captured') && c('queued') === '0'; }""",
        timeout=60_000,
    )
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
    assert errors == []
    assert before_hide["captured"] == len(points) and before_hide["queued"] == 50
    assert sorted(len(r.events) for r in records) == [50, MAX_BATCH, MAX_BATCH]
    ordered = sorted(records, key=lambda r: r.events[0].event_time)
    assert [_match(e, points, box) for r in ordered for e in r.events] == list(range(len(points)))
