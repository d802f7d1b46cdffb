"""The dashboard in Debian's Chromium against the query API under uvicorn."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from tests.query.conftest import CLIENT, HOUR, READ_KEY, SCREEN, WEEK
from traffic.answers import cell_counts

HOT_HOUR = WEEK + 10 * HOUR  # cells (25, 40): 500 and (26, 40): 200, nothing else
GREY = (130, 130, 130)

# The canvas of `selector` over one grid cell: the largest alpha in the cell's pixel box, the RGBA at its
# centre and the canvas's size.
CANVAS_CELL = """([selector, cx, cy]) => {
  const canvas = document.querySelector(selector);
  const w = canvas.width / 100, h = canvas.height / 200, ctx = canvas.getContext('2d');
  const box = ctx.getImageData(Math.floor(cx * w), Math.floor(cy * h), Math.ceil(w), Math.ceil(h)).data;
  let maxAlpha = 0;
  for (let i = 3; i < box.length; i += 4) maxAlpha = Math.max(maxAlpha, box[i]);
  const centre = ctx.getImageData(Math.floor((cx + 0.5) * w), Math.floor((cy + 0.5) * h), 1, 1).data;
  return {maxAlpha, centre: Array.from(centre), width: canvas.width, height: canvas.height};
}"""
# The same for the heat canvas of the main map.
CELL_PIXELS = f"""([cx, cy]) => ({CANVAS_CELL})(['#heat canvas', cx, cy])"""

# The size of a PNG (bytes in base64) and the RGB at pixel positions, decoded by the browser itself
# (Pillow is not installed).
PNG_AT = """async ([b64, points]) => {
  const img = new Image();
  img.src = 'data:image/png;base64,' + b64;
  await img.decode();
  const canvas = Object.assign(document.createElement('canvas'), {width: img.width, height: img.height});
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  return {size: [img.width, img.height],
          pixels: points.map(([x, y]) => Array.from(ctx.getImageData(x, y, 1, 1).data.slice(0, 3)))};
}"""


def solid_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def wait_ready(page) -> None:
    page.wait_for_selector("#stage[data-state=ready], #stage[data-state=error]", state="attached")
    assert page.get_attribute("#stage", "data-state") == "ready", page.text_content("#error")


def is_grey(rgb: list[int]) -> bool:
    return all(abs(a - b) <= 3 for a, b in zip(rgb, GREY, strict=True))


@pytest.mark.browser
def test_dashboard_draws_heat_over_blank_then_screenshot(browser, live_api, dataset, artifacts_dir):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(f"{live_api}/dashboard/")
        wait_ready(page)
        page.select_option("#client", CLIENT)
        wait_ready(page)
        page.select_option("#screen", SCREEN)
        wait_ready(page)
        page.select_option("#grain", "hour")
        wait_ready(page)
        page.select_option("#bucket", HOT_HOUR.strftime("%Y-%m-%dT%H:%M:%SZ"))
        wait_ready(page)
        assert page.is_hidden("#error")

        # No screenshot yet: a blank stage in the grid's 1:2 shape.
        hot, empty = page.evaluate(CELL_PIXELS, [25, 40]), page.evaluate(CELL_PIXELS, [75, 160])
        assert (hot["width"], hot["height"]) == (300, 600)
        assert hot["maxAlpha"] > 0 and empty["maxAlpha"] == 0
        red, green, blue, alpha = hot["centre"]
        assert alpha > 0 and red > max(green, blue)  # the hottest cell wears the top of the gradient
        assert page.text_content("#max") == "500" and page.text_content("#total") == "700"
        assert page.text_content("#cells") == "2"

        # The selection is in the URL: reopening it restores the same view.
        shared = page.url
        assert f"bucket={HOT_HOUR:%Y-%m-%dT%H}" in shared.replace("%3A", ":")
        page.goto("about:blank")
        page.goto(shared)
        wait_ready(page)
        assert page.input_value("#bucket") == HOT_HOUR.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert page.text_content("#total") == "700"

        # Upload a grey 200 x 300 screenshot: the stage takes its shape and shows it under the heat.
        page.set_input_files(
            "#screenshot-file",
            files=[{"name": "home.png", "mimeType": "image/png", "buffer": solid_png(200, 300, GREY)}],
        )
        page.click("#upload button")
        page.wait_for_function("document.getElementById('upload-status').textContent.startsWith('Uploaded')")
        wait_ready(page)
        assert page.is_visible("#screenshot")
        assert page.evaluate("document.getElementById('screenshot').naturalWidth") == 200
        hot, empty = page.evaluate(CELL_PIXELS, [25, 40]), page.evaluate(CELL_PIXELS, [75, 160])
        assert (hot["width"], hot["height"]) == (300, 450)
        assert hot["maxAlpha"] > 0 and empty["maxAlpha"] == 0

        stage = page.locator("#stage").screenshot()
        points = [[int(75.5 * 3), int(160.5 * 2.25)], [int(25.5 * 3), int(40.5 * 2.25)]]  # cell centres at 300 x 450
        on_empty, on_hot = page.evaluate(PNG_AT, [base64.b64encode(stage).decode(), points])["pixels"]
        assert is_grey(on_empty), on_empty  # the screenshot shows through where there is no heat
        assert not is_grey(on_hot), on_hot  # and the heat is drawn over it where there is
        page.screenshot(path=str(artifacts_dir / "query-dashboard.png"), full_page=True)
    finally:
        page.close()


@pytest.mark.browser
def test_dashboard_draws_an_answer_cached_in_the_shape_before_columns(browser, live_api, dataset):
    """A final answer stays in a browser's cache for a day: one from before cells became columns
    (a list of cells) must still draw. The page gets the hot hour in that shape."""
    old_shape = [{"cell_x": 25, "cell_y": 40, "count": 500}, {"cell_x": 26, "cell_y": 40, "count": 200}]

    def cached_before(route) -> None:
        answer = route.fetch().json()
        assert cell_counts(answer) == {(25, 40): 500, (26, 40): 200}  # the live answer: columns
        route.fulfill(json={**answer, "cells": old_shape})

    page = browser.new_page()
    try:
        page.route("**/heatmap/hourly?*", cached_before)
        page.goto(
            f"{live_api}/dashboard/?client={CLIENT}&screen={SCREEN}&grain=hour&bucket={HOT_HOUR:%Y-%m-%dT%H:%M:%SZ}"
        )
        wait_ready(page)
        assert page.text_content("#max") == "500" and page.text_content("#total") == "700"
        assert page.text_content("#cells") == "2"
        assert page.evaluate(CELL_PIXELS, [25, 40])["maxAlpha"] > 0
    finally:
        page.close()


@pytest.mark.browser
def test_dashboard_shows_readable_errors(browser, live_api, dataset):
    page = browser.new_page()
    try:
        page.goto(
            f"{live_api}/dashboard/?client={CLIENT}&screen={SCREEN}&grain=range&from=2026-02-01T10:30:00Z&to=2026-02-01T12:00:00Z"
        )
        page.wait_for_selector("#stage[data-state=error]")
        assert "on an hour boundary" in page.text_content("#error")
    finally:
        page.close()


@pytest.mark.browser
def test_dashboard_asks_for_the_read_key(browser, keyed_api, dataset):
    page = browser.new_page()
    try:
        page.goto(
            f"{keyed_api}/dashboard/?client={CLIENT}&screen={SCREEN}&grain=hour&bucket={HOT_HOUR:%Y-%m-%dT%H:%M:%SZ}"
        )
        page.wait_for_selector("#stage[data-state=error]")
        assert "needs a read key" in page.text_content("#error")
        page.fill("#read-key", "wrong")
        page.click("#show")
        page.wait_for_selector("#stage[data-state=error]")
        assert "does not open" in page.text_content("#error")
        page.fill("#read-key", READ_KEY)
        page.click("#show")
        wait_ready(page)
        assert page.text_content("#total") == "700"
        assert READ_KEY not in page.url  # the key never enters a shareable link
        assert page.evaluate("Array.from(document.querySelectorAll('#client option')).map(o => o.value)") == [CLIENT]
    finally:
        page.close()
