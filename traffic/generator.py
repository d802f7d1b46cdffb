"""Seeded, realistic heatmap traffic and the exact counts it implies.

v2 traffic (the default): every visitor is one page view, with a random
``view_id``, on a device drawn from ``DEVICE_PROFILES`` (a viewport in its
device band, a screen element as wide as the viewport and much taller). The
view starts with one scroll event at the fold (the initial depth,
viewport_h / screen_h), then scrolls deeper now and then (throttled, never
back up; phones scroll further than desktops). The pointer wanders over the
visible part of the screen (moves spread wide) and clicks only on the buttons
in view (clicks concentrated on hot spots); now and then a click becomes a
rage click: a burst of 3-5 clicks within 1 s and a few pixels, all sent as
``click``, followed by one ``rageclick`` event at the spot (the way the demo
client reports one: at least 3 clicks within 1 s and 30 px).

v1 traffic (``TrafficSpec(version=1)``, ``--v1``): today's v1 batches, moves
and clicks between the hot spots and no page view; the same seed gives the
same batches as before v2.

Everything is drawn from one seeded generator, so the same spec gives the
same events. ``GroundTruth`` recounts the events it is given in plain Python
(``heatmap_core.grid.cell_of`` is the only pipeline code it uses), following
the definitions of docs/ARCHITECTURE.md's "Heatmap v2" section.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from heatmap_core.grid import cell_of
from heatmap_core.timeutil import hour_start

# (x, y, weight): where visitors go on every demo screen (v1 traffic)
HOT_SPOTS = (
    (0.10, 0.03, 3.0),  # logo in the navigation bar
    (0.50, 0.03, 2.0),  # navigation links
    (0.88, 0.03, 2.0),  # sign-in button
    (0.50, 0.22, 4.0),  # hero call-to-action button
    (0.30, 0.46, 1.5),  # content just above the fold
    (0.70, 0.46, 1.5),
    (0.50, 0.80, 0.7),  # footer, rarely reached
)

# (x, y, weight): the buttons of the taller v2 screen, in screen coordinates (y 0 top, 1 bottom)
BUTTONS = (
    (0.50, 0.012, 1.5),  # navigation links
    (0.88, 0.012, 2.0),  # sign-in
    (0.50, 0.13, 4.0),  # hero call to action
    (0.20, 0.42, 1.5),  # the three feature cards' buttons
    (0.50, 0.42, 1.5),
    (0.80, 0.42, 1.5),
    (0.50, 0.68, 1.2),  # pricing
    (0.50, 0.93, 0.8),  # footer sign-up
)


@dataclass(frozen=True)
class DeviceProfile:
    """A kind of visitor: its device class, viewport, screen element and how far it scrolls."""

    device: Literal["desktop", "tablet", "mobile"]  # the class the server derives from viewport_w
    viewport_w: int
    viewport_h: int
    screen_h: int  # the screen element's rendered height (its width is the viewport's)
    weight: float  # share of visitors
    # Beta(a, b) of how far past the fold the deepest scroll goes: 0 stays at the fold, 1 reaches the bottom.
    scroll_beta: tuple[float, float]

    @property
    def fold(self) -> float:
        """The initial depth: the viewport's bottom edge on the screen before any scroll."""
        return min(1.0, self.viewport_h / self.screen_h)


DEVICE_PROFILES = (
    DeviceProfile("desktop", 1280, 800, 2000, 0.5, (1.2, 2.5)),
    DeviceProfile("tablet", 820, 1180, 2600, 0.2, (1.6, 1.6)),
    DeviceProfile("mobile", 390, 844, 3400, 0.3, (2.5, 1.2)),  # content reflows taller; phones scroll further
)

SCROLL_CHANCE = 0.45  # per pointer path, while the view has not reached its deepest point
CLICK_CHANCE = 0.5  # per path that ends on a button
RAGE_CHANCE = 0.08  # per click
THROTTLE_MS = (250, 900)  # gap before each scroll event after the first


@dataclass(frozen=True)
class TrafficSpec:
    clients: tuple[str, ...] = ("acme", "globex")
    screens: tuple[str, ...] = ("home_v1", "pricing_v2")
    visitors: int = 40
    moves_per_visitor: int = 120  # mousemove events per visitor; clicks, rage clicks and scrolls come on top
    hours_back: int = 3  # spread event times over the last N hours (inside the accepted window)
    seed: int = 7
    batch_size: int = 200
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: Literal[1, 2] = 2  # 1: v1 requests (no page view, device unknown, no scroll)
    devices: tuple[DeviceProfile, ...] = DEVICE_PROFILES  # the v2 device mix


@dataclass(frozen=True)
class Batch:
    client_id: str
    screen_id: str
    batch_id: str
    events: list[dict]
    view: dict | None = None  # v2: view_id, viewport_w/h, screen_w/h; None in a v1 batch
    device: str = "unknown"  # the class of the profile the view was drawn from (not sent: the server derives it)

    def payload(self) -> dict:
        body: dict[str, object] = {
            "client_id": self.client_id,
            "screen_id": self.screen_id,
            "batch_id": self.batch_id,
            "events": self.events,
        }
        if self.view is not None:
            body["view"] = self.view
        return body


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _v1_visitor_events(rng: random.Random, spec: TrafficSpec, start: datetime) -> Iterator[dict]:
    targets = [(x, y) for x, y, _ in HOT_SPOTS]
    weights = [w for _, _, w in HOT_SPOTS]
    x, y = rng.random(), rng.random() * 0.3
    moment = start
    produced = 0
    while produced < spec.moves_per_visitor:
        tx, ty = rng.choices(targets, weights)[0]
        tx += rng.gauss(0, 0.03)
        ty += rng.gauss(0, 0.01)
        steps = rng.randint(4, 12)
        for step in range(1, steps + 1):
            px = min(max(x + (tx - x) * step / steps + rng.gauss(0, 0.01), 0.0), 1.0)
            py = min(max(y + (ty - y) * step / steps + rng.gauss(0, 0.005), 0.0), 1.0)
            moment += timedelta(milliseconds=rng.randint(16, 120))
            yield {
                "event_time": _rfc3339(moment),
                "x_norm": round(px, 6),
                "y_norm": round(py, 6),
                "event_type": "mousemove",
            }
            produced += 1
            if produced >= spec.moves_per_visitor:
                return
        x, y = px, py
        if rng.random() < 0.4:
            moment += timedelta(milliseconds=rng.randint(50, 400))
            yield {"event_time": _rfc3339(moment), "x_norm": round(x, 6), "y_norm": round(y, 6), "event_type": "click"}


def _clamp(value: float, low: float = 0.0, high: float = 1.0) -> float:
    return min(max(value, low), high)


def _page_view_events(rng: random.Random, spec: TrafficSpec, profile: DeviceProfile) -> list[tuple[int, dict]]:
    """One page view's events as (milliseconds after the page load, event without its time), in time order."""
    fold = profile.fold
    deepest = fold + (1.0 - fold) * rng.betavariate(*profile.scroll_beta)
    depth = fold
    at_ms = 0
    events: list[tuple[int, dict]] = []

    def emit(event_type: str, x: float, y: float) -> None:
        events.append((at_ms, {"x_norm": round(x, 6), "y_norm": round(y, 6), "event_type": event_type}))

    emit("scroll", 0.5, depth)  # at page load: every recorded view has a depth
    x, y = rng.random(), rng.random() * fold
    moves = 0
    while moves < spec.moves_per_visitor:
        if depth < deepest and rng.random() < SCROLL_CHANCE:
            at_ms += rng.randint(*THROTTLE_MS)
            depth = min(deepest, depth + rng.uniform(0.04, 0.15))
            emit("scroll", 0.5, depth)
        top = depth - fold  # the visible part of the screen is [top, depth]
        y = _clamp(y, top, depth)
        in_view = [(bx, by, weight) for bx, by, weight in BUTTONS if top <= by <= depth]
        button = rng.choices(in_view, [weight for *_, weight in in_view])[0] if in_view and rng.random() < 0.6 else None
        if button is not None:  # towards a button, arriving near it
            tx, ty = button[0] + rng.gauss(0, 0.06), button[1] + rng.gauss(0, 0.02)
        else:  # reading: anywhere in view
            tx, ty = rng.random(), top + rng.random() * fold
        steps = rng.randint(4, 12)
        for step in range(1, steps + 1):
            at_ms += rng.randint(16, 120)
            px = _clamp(x + (tx - x) * step / steps + rng.gauss(0, 0.02))
            py = _clamp(y + (ty - y) * step / steps + rng.gauss(0, 0.01), top, depth)
            emit("mousemove", px, py)
            moves += 1
            if moves >= spec.moves_per_visitor:
                return events
        x, y = px, py
        if button is not None and rng.random() < CLICK_CHANCE:
            # On the button itself: clicks land within a few pixels of its centre.
            bx = _clamp(button[0] + rng.gauss(0, 4 / profile.viewport_w))
            by = _clamp(button[1] + rng.gauss(0, 3 / profile.screen_h))
            at_ms += rng.randint(50, 400)
            emit("click", bx, by)
            if rng.random() < RAGE_CHANCE:
                for _ in range(rng.randint(2, 4)):  # 3-5 clicks in all, well within 1 s and 30 px
                    at_ms += rng.randint(60, 200)
                    emit("click", _clamp(bx + rng.gauss(0, 2 / profile.viewport_w)), by)
                emit("rageclick", bx, by)
            x, y = bx, by
    return events


def generate(spec: TrafficSpec) -> Iterator[Batch]:
    """Batches of at most spec.batch_size events, one visitor session (v2: one page view) at a time."""
    rng = random.Random(spec.seed)
    window = timedelta(hours=spec.hours_back)
    for _ in range(spec.visitors):
        client = rng.choice(spec.clients)
        screen = rng.choice(spec.screens)
        view: dict | None = None
        device = "unknown"
        if spec.version == 1:
            # start early enough that the whole session ends before `now`
            start = spec.now - window + timedelta(seconds=rng.random() * max(window.total_seconds() - 120, 1))
            events = list(_v1_visitor_events(rng, spec, start))
        else:
            profile = rng.choices(spec.devices, [p.weight for p in spec.devices])[0]
            device = profile.device
            view = {
                "view_id": f"view-{rng.getrandbits(64):016x}",
                "viewport_w": profile.viewport_w,
                "viewport_h": profile.viewport_h,
                "screen_w": profile.viewport_w,
                "screen_h": profile.screen_h,
            }
            timed = _page_view_events(rng, spec, profile)
            session = timedelta(milliseconds=timed[-1][0]) + timedelta(seconds=1)
            if session >= window:
                raise ValueError(f"a session of {session} does not fit in hours_back={spec.hours_back}")
            # The whole session lies in [now - window, now - 1 s]: inside the ingestion window.
            start = spec.now - window + (window - session) * rng.random()
            events = [{"event_time": _rfc3339(start + timedelta(milliseconds=ms)), **event} for ms, event in timed]
        for offset in range(0, len(events), spec.batch_size):
            yield Batch(
                client,
                screen,
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                events[offset : offset + spec.batch_size],
                view,
                device,
            )


CellKey = tuple[str, str, datetime, int, int]  # client, screen, hour (or bucket) start, cell_x, cell_y
TypedCellKey = tuple[str, str, str, str, datetime, int, int]  # client, screen, event_type, device, hour, x, y
ReachKey = tuple[str, str, str, datetime, int]  # client, screen, device, hour (or bucket) start, depth_row
ViewHourKey = tuple[str, str, str, datetime, str]  # client, screen, device, hour, view_id


def _same(moment: datetime) -> datetime:
    return moment


@dataclass
class GroundTruth:
    """Exact counts of generated traffic, recounted from the events themselves.

    ``typed_cells``: events per (client, screen, event_type, device, hour start, cell_x, cell_y),
    every type (scroll included) and device (``unknown`` for v1 batches).
    ``view_depths``: per (client, screen, device, hour start, view_id) of a view with at least one
    scroll event in that hour, (deepest scroll row in the hour, fold row): the inputs of scroll reach.
    """

    typed_cells: Counter[TypedCellKey] = field(default_factory=Counter)
    view_depths: dict[ViewHourKey, tuple[int, int]] = field(default_factory=dict)

    def add(self, batch: Batch) -> None:
        view = batch.view
        for event in batch.events:
            moment = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
            hour = hour_start(moment)
            cell_x, cell_y = cell_of(event["x_norm"], event["y_norm"])
            key = (batch.client_id, batch.screen_id, event["event_type"], batch.device, hour, cell_x, cell_y)
            self.typed_cells[key] += 1
            if event["event_type"] == "scroll" and view is not None:  # v1 batches add nothing to scroll reach
                _, fold_row = cell_of(0.0, min(1.0, view["viewport_h"] / view["screen_h"]))
                view_hour = (batch.client_id, batch.screen_id, batch.device, hour, view["view_id"])
                deepest, fold = self.view_depths.get(view_hour, (0, 0))
                self.view_depths[view_hour] = (max(deepest, cell_y), max(fold, fold_row))

    def merge(self, other: GroundTruth) -> None:
        """Add another truth's traffic (of other page views) to this one."""
        self.typed_cells.update(other.typed_cells)
        for key, (deepest, fold) in other.view_depths.items():
            mine = self.view_depths.get(key, (0, 0))
            self.view_depths[key] = (max(mine[0], deepest), max(mine[1], fold))

    # ------------------------------------------------------------------ cells

    @property
    def cells(self) -> Counter[CellKey]:
        """Events per (client, screen, hour start, cell_x, cell_y), summed over every type and device
        (what ``type=all&device=all`` serves). Computed on each access: update ``typed_cells`` instead."""
        return self.cells_of()

    def cells_of(
        self,
        event_type: str | None = None,
        device: str | None = None,
        bucket_of: Callable[[datetime], datetime] = _same,
    ) -> Counter[CellKey]:
        """Events per (client, screen, bucket start, cell_x, cell_y) of one event type and one device
        (None: all of them), in buckets of ``bucket_of(hour start)`` (default: the hour itself; pass
        ``heatmap_core.timeutil.day_start`` or ``week_start`` for days and weeks)."""
        counts: Counter[CellKey] = Counter()
        for (client, screen, kind, dev, hour, x, y), count in self.typed_cells.items():
            if (event_type is None or kind == event_type) and (device is None or dev == device):
                counts[(client, screen, bucket_of(hour), x, y)] += count
        return counts

    def event_types(self) -> set[str]:
        return {key[2] for key in self.typed_cells}

    def devices(self) -> set[str]:
        return {key[3] for key in self.typed_cells}

    # ------------------------------------------------------------------ scroll reach

    def scroll_reach(self, bucket_of: Callable[[datetime], datetime] = _same) -> dict[ReachKey, tuple[int, int]]:
        """(reached, folds) per (client, screen, device, bucket start, depth_row), as the ARCHITECTURE
        contract defines them: each view counted once per hour (a bucket of several hours sums its
        hours); ``reached`` = views whose deepest scroll row in the hour is >= depth_row; ``folds`` =
        views whose fold row (row of min(1, viewport_h / screen_h)) is depth_row. Sparse: a row where
        both are 0 is absent; ``reached`` at row 0 is the number of views counted."""
        reached: Counter[ReachKey] = Counter()
        folds: Counter[ReachKey] = Counter()
        for (client, screen, device, hour, _), (deepest, fold) in self.view_depths.items():
            bucket = bucket_of(hour)
            for row in range(deepest + 1):
                reached[(client, screen, device, bucket, row)] += 1
            folds[(client, screen, device, bucket, fold)] += 1
        return {key: (reached[key], folds[key]) for key in reached.keys() | folds.keys()}

    def views(self, bucket_of: Callable[[datetime], datetime] = _same) -> Counter[tuple[str, str, str, datetime]]:
        """Views counted by scroll reach per (client, screen, device, bucket start): each view once per hour."""
        return Counter(
            (client, screen, device, bucket_of(hour)) for client, screen, device, hour, _ in self.view_depths
        )

    # ------------------------------------------------------------------ totals

    def hours(self) -> set[datetime]:
        return {key[4] for key in self.typed_cells}

    def total(self) -> int:
        return sum(self.typed_cells.values())

    def to_json(self) -> dict[str, list[dict]]:
        return {
            "cells": [
                {
                    "client_id": c,
                    "screen_id": s,
                    "event_type": t,
                    "device": d,
                    "hour": h.isoformat(),
                    "cell_x": x,
                    "cell_y": y,
                    "count": n,
                }
                for (c, s, t, d, h, x, y), n in sorted(self.typed_cells.items())
            ],
            "scroll_reach": [
                {
                    "client_id": c,
                    "screen_id": s,
                    "device": d,
                    "hour": h.isoformat(),
                    "depth_row": row,
                    "reached": reached,
                    "folds": folds,
                }
                for (c, s, d, h, row), (reached, folds) in sorted(self.scroll_reach().items())
            ],
        }


def build(spec: TrafficSpec) -> tuple[list[Batch], GroundTruth]:
    """The spec's batches and the exact ground truth they carry."""
    batches = list(generate(spec))
    truth = GroundTruth()
    for batch in batches:
        truth.add(batch)
    return batches, truth
