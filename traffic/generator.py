"""Seeded, realistic mouse traffic and the exact per-cell counts it implies.

Visitors move between a screen's hot spots (navigation bar, buttons, the
fold), with jitter along the way and clicks on arrival. Everything is drawn
from one seeded generator, so the same arguments give the same events.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from heatmap_core.grid import cell_of
from heatmap_core.timeutil import hour_start

# (x, y, weight): where visitors go on every demo screen
HOT_SPOTS = (
    (0.10, 0.03, 3.0),  # logo in the navigation bar
    (0.50, 0.03, 2.0),  # navigation links
    (0.88, 0.03, 2.0),  # sign-in button
    (0.50, 0.22, 4.0),  # hero call-to-action button
    (0.30, 0.46, 1.5),  # content just above the fold
    (0.70, 0.46, 1.5),
    (0.50, 0.80, 0.7),  # footer, rarely reached
)


@dataclass(frozen=True)
class TrafficSpec:
    clients: tuple[str, ...] = ("acme", "globex")
    screens: tuple[str, ...] = ("home_v1", "pricing_v2")
    visitors: int = 40
    moves_per_visitor: int = 120
    hours_back: int = 3  # spread event times over the last N hours (inside the accepted window)
    seed: int = 7
    batch_size: int = 200
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Batch:
    client_id: str
    screen_id: str
    batch_id: str
    events: list[dict]

    def payload(self) -> dict:
        return {
            "client_id": self.client_id,
            "screen_id": self.screen_id,
            "batch_id": self.batch_id,
            "events": self.events,
        }


def _visitor_events(rng: random.Random, spec: TrafficSpec, start: datetime) -> Iterator[dict]:
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
                "event_time": moment.isoformat().replace("+00:00", "Z"),
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
            yield {
                "event_time": moment.isoformat().replace("+00:00", "Z"),
                "x_norm": round(x, 6),
                "y_norm": round(y, 6),
                "event_type": "click",
            }


def generate(spec: TrafficSpec) -> Iterator[Batch]:
    """Batches of at most spec.batch_size events, one visitor session at a time."""
    rng = random.Random(spec.seed)
    window = timedelta(hours=spec.hours_back)
    for _ in range(spec.visitors):
        client = rng.choice(spec.clients)
        screen = rng.choice(spec.screens)
        # start early enough that the whole session ends before `now`
        start = spec.now - window + timedelta(seconds=rng.random() * max(window.total_seconds() - 120, 1))
        events = list(_visitor_events(rng, spec, start))
        for offset in range(0, len(events), spec.batch_size):
            yield Batch(
                client,
                screen,
                str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                events[offset : offset + spec.batch_size],
            )


@dataclass
class GroundTruth:
    """Exact counts per (client, screen, hour start, cell_x, cell_y)."""

    cells: Counter = field(default_factory=Counter)

    def add(self, batch: Batch) -> None:
        for event in batch.events:
            moment = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
            cell_x, cell_y = cell_of(event["x_norm"], event["y_norm"])
            self.cells[(batch.client_id, batch.screen_id, hour_start(moment), cell_x, cell_y)] += 1

    def hours(self) -> set[datetime]:
        return {key[2] for key in self.cells}

    def total(self) -> int:
        return sum(self.cells.values())

    def to_json(self) -> list[dict]:
        return [
            {"client_id": c, "screen_id": s, "hour": h.isoformat(), "cell_x": x, "cell_y": y, "count": n}
            for (c, s, h, x, y), n in sorted(self.cells.items())
        ]


def build(spec: TrafficSpec) -> tuple[list[Batch], GroundTruth]:
    """The spec's batches and the exact ground truth they carry."""
    batches = list(generate(spec))
    truth = GroundTruth()
    for batch in batches:
        truth.add(batch)
    return batches, truth
