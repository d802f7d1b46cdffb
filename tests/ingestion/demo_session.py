"""A scripted visit of the demo client (dashboard/demo/) and what it must record.

``play_session`` drives a Playwright page through the actions a visitor makes (hovering,
clicks, a double click, a rage burst, scrolling down and back up) and measures, as each one
happens, where it falls on the screen element; ``expected_cells`` turns that into the
(event_type, device, cell) set the maps must hold. The browser test checks it against the
Kafka records; an end-to-end test can check the same set against served maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from heatmap_core.events import Device, EventType, device_class
from heatmap_core.grid import cell_of

# Longer than the demo client's move throttle (16 ms) and scroll throttle (250 ms), so the
# trailing event of an action is kept before the next action starts.
SETTLE_MS = 400
# The demo client's rage click: RAGE_CLICKS within RAGE_WINDOW_MS and RAGE_RADIUS_PX (demo.js).
RAGE_CLICKS = 3


@dataclass(frozen=True)
class Viewport:
    """A browser window the demo is visited in; a mobile one taps (touch) instead of clicking."""

    name: str
    width: int
    height: int
    mobile: bool

    @property
    def device(self) -> Device:
        return device_class(self.width)

    def context_options(self) -> dict[str, Any]:
        size = {"viewport": {"width": self.width, "height": self.height}}
        if self.mobile:
            return {**size, "is_mobile": True, "has_touch": True, "device_scale_factor": 3}
        return size


PHONE = Viewport("phone", 390, 844, mobile=True)
DESKTOP = Viewport("desktop", 1280, 800, mobile=False)


@dataclass(frozen=True)
class Expected:
    """An event the session must have produced: its type and its spot on the screen (normalized)."""

    event_type: EventType
    x_norm: float
    y_norm: float

    @property
    def cell(self) -> tuple[int, int]:
        return cell_of(self.x_norm, self.y_norm)


def demo_query(client_id: str, screen_id: str, write_key: str, **params: str) -> str:
    return "&".join(
        f"{k}={v}"
        for k, v in {"client_id": client_id, "screen_id": screen_id, "write_key": write_key, **params}.items()
    )


class _Session:
    """Acts on the demo page and records the normalized spot of every action as it happens."""

    def __init__(self, page, viewport: Viewport):
        self.page = page
        self.viewport = viewport
        self.screen = page.locator("#screen")
        self.expected: list[Expected] = []

    def _box(self) -> dict[str, float]:
        box = self.screen.bounding_box()
        assert box is not None, "the demo screen is not rendered"
        return box

    def _spot(self, selector: str) -> tuple[float, float, Expected]:
        """The center of an element of the screen: viewport coordinates to act on, and its normalized spot."""
        target = self.page.locator(selector).bounding_box()
        assert target is not None, f"{selector} is not rendered"
        box = self._box()
        x, y = target["x"] + target["width"] / 2, target["y"] + target["height"] / 2
        assert 0 <= y < self.viewport.height, f"{selector} is not in view"
        return x, y, Expected("mousemove", (x - box["x"]) / box["width"], (y - box["y"]) / box["height"])

    def depth(self) -> float:
        """The viewport's bottom edge on the screen, as the demo client defines a scroll depth."""
        box = self._box()
        return min(1.0, max(0.0, (self.viewport.height - box["y"]) / box["height"]))

    def expect_scroll(self) -> None:
        self.expected.append(Expected("scroll", 0.5, self.depth()))

    def hover(self, selector: str) -> None:
        x, y, spot = self._spot(selector)
        self.page.mouse.move(x, y, steps=6)
        self.page.wait_for_timeout(SETTLE_MS)
        self.expected.append(spot)

    def clicks(self, selector: str, times: int) -> None:
        """``times`` clicks (taps on a mobile viewport) in place, as fast as the browser takes them."""
        x, y, spot = self._spot(selector)
        for _ in range(times):
            if self.viewport.mobile:
                self.page.touchscreen.tap(x, y)
            else:
                self.page.mouse.click(x, y)
        self.page.wait_for_timeout(SETTLE_MS)
        self.expected += [Expected("click", spot.x_norm, spot.y_norm)] * times
        if times >= RAGE_CLICKS:
            self.expected.append(Expected("rageclick", spot.x_norm, spot.y_norm))

    def scroll_to(self, depth: float) -> None:
        """Scroll with the mouse wheel until the viewport's bottom edge is at ``depth`` of the screen."""
        box = self._box()
        delta = round(box["y"] + depth * box["height"] - self.viewport.height)
        target = self.page.evaluate("() => window.scrollY") + delta
        self.page.mouse.wheel(0, delta)
        self.page.wait_for_function("y => Math.abs(window.scrollY - y) < 1", arg=target)
        self.page.wait_for_timeout(SETTLE_MS)


# The visit: deepest scroll SCROLLED_TO[-1]; the last scroll goes back up and must add nothing.
SCROLLED_TO = (0.6, 0.9)
SCROLLED_BACK_TO = 0.7


def play_session(page, viewport: Viewport, rage_burst: int = RAGE_CLICKS) -> list[Expected]:
    """Visit the demo page already loaded in ``page``; the events it must have recorded, in order.

    Hover the logo and the sign-in button, click sign-in and the call to action; scroll to
    SCROLLED_TO[0], hover one "read more", double-click the other (two clicks, not a rage click);
    scroll to SCROLLED_TO[1], click "subscribe" ``rage_burst`` times in place (one rage click);
    scroll back up (no event: only deeper views are sent). Scroll events are expected at the
    depth at load and at each scroll's resting depth (the wheel's intermediate depths may add more).
    """
    session = _Session(page, viewport)
    session.expect_scroll()  # the depth at load
    session.hover("#logo")
    session.hover("#sign-in")
    session.clicks("#sign-in", 1)
    session.clicks("#cta", 1)
    session.scroll_to(SCROLLED_TO[0])
    session.expect_scroll()
    session.hover("#more-right")
    session.clicks("#more-left", 2)
    session.scroll_to(SCROLLED_TO[1])
    session.expect_scroll()
    session.clicks("#subscribe", rage_burst)
    session.scroll_to(SCROLLED_BACK_TO)
    return session.expected


def open_demo(browser, base: str, client_id: str, screen_id: str, write_key: str, viewport: Viewport, **params: str):
    """A page on the demo client served by the ingestion API at ``base``; its screen's box; page errors."""
    page = browser.new_page(**viewport.context_options())
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/demo/?{demo_query(client_id, screen_id, write_key, **params)}")
    return page, page.locator("#screen").bounding_box(), errors


def wait_until_all_acknowledged(page) -> None:
    """The 1 s timer sends whatever is queued; wait until every captured event is acknowledged."""
    page.wait_for_function(
        """() => { const c = n => document.getElementById('count-' + n).textContent;
                   return c('captured') !== '0' && c('acknowledged') === c('captured') && c('queued') === '0'; }""",
        timeout=60_000,
    )


def within_one_cell(cell: tuple[int, int], other: tuple[int, int]) -> bool:
    return abs(cell[0] - other[0]) <= 1 and abs(cell[1] - other[1]) <= 1


def expected_cells(expected: list[Expected], device: Device) -> set[tuple[str, str, tuple[int, int]]]:
    """The (event_type, device, cell) triples the maps of this session's screen must hold."""
    return {(event.event_type, device, event.cell) for event in expected}
