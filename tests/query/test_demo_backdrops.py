"""`make demo`'s backdrops: the demo client's screen rendered in Chromium becomes every demo screen's
screenshot, and the dashboard draws the maps on it."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator

import httpx
import pytest

from heatmap_core.settings import Settings
from infra.demo import upload_backdrops
from tests.conftest import serve_app
from tests.query.conftest import CLIENT
from tests.query.test_dashboard import PNG_AT, wait_ready

DEMO_SCREENS = [(CLIENT, "home_v1"), (CLIENT, "pricing_v2")]
CTA_COLOUR = [0xF0, 0xD9, 0xC0]  # the demo's buttons (dashboard/demo/demo.css)


@pytest.fixture(scope="module")
def ingestion(open_settings: Settings) -> Iterator[str]:
    with serve_app("ingestion_api.app:app", open_settings) as base:
        yield base


@pytest.fixture(scope="module")
def backdrop(ingestion: str, live_api: str, chromium_path: str) -> bytes:
    """Uploaded before the module's browser starts: Playwright's sync API runs one loop per thread."""
    return upload_backdrops(f"{ingestion}/demo/", live_api, DEMO_SCREENS, chromium_path)


@pytest.mark.browser
def test_every_demo_screen_gets_the_rendered_demo_screen(backdrop, browser, ingestion, live_api):
    width, height = struct.unpack(">II", backdrop[16:24])
    assert backdrop.startswith(b"\x89PNG") and (width, height) == (400, 2000)  # the whole 400 x 2000 element
    for client, screen in DEMO_SCREENS:
        stored = httpx.get(f"{live_api}/screenshots/{client}/{screen}")
        assert stored.status_code == 200 and stored.content == backdrop

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        # Where the demo draws its call-to-action button, the backdrop shows it.
        page.goto(f"{ingestion}/demo/")
        screen, cta = page.locator("#screen").bounding_box(), page.locator("#cta").bounding_box()
        inside = [round(cta["x"] - screen["x"] + 4), round(cta["y"] - screen["y"] + 4)]
        page.route("**/events/batch", lambda route: route.abort())
        pixel = page.evaluate(PNG_AT, [base64.b64encode(backdrop).decode(), [inside]])["pixels"][0]
        assert all(abs(a - b) <= 8 for a, b in zip(pixel, CTA_COLOUR, strict=True)), pixel

        # The dashboard puts the maps on it: a stage of the screen's 1:5 shape.
        page.goto(f"{live_api}/dashboard/?client={CLIENT}&screen=home_v1&grain=7d")
        wait_ready(page)
        assert page.is_visible("#screenshot")
        assert page.evaluate("document.getElementById('screenshot').naturalHeight") == 2000
        assert page.locator("#stage").bounding_box()["height"] == 1500
    finally:
        page.close()
