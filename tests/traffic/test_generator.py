"""The traffic generator is deterministic, sends what ingestion accepts, and its ground truth is exact (pure)."""

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import msgspec
import pytest

from heatmap_core.events import EVENT_TYPES, device_class
from heatmap_core.grid import cell_of
from heatmap_core.settings import Settings
from heatmap_core.timeutil import day_start
from ingestion_api.models import Limits, check_batch, decode_batch
from traffic.generator import BUTTONS, Batch, GroundTruth, TrafficSpec, build

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)
H10 = datetime(2026, 11, 25, 10, tzinfo=UTC)
H11 = datetime(2026, 11, 25, 11, tzinfo=UTC)


def _time(event: dict) -> datetime:
    return datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))


@pytest.mark.parametrize("version", [1, 2])
def test_same_seed_same_traffic(version):
    a, _ = build(TrafficSpec(seed=3, now=NOW, version=version))
    b, _ = build(TrafficSpec(seed=3, now=NOW, version=version))
    c, _ = build(TrafficSpec(seed=4, now=NOW, version=version))
    assert [x.payload() for x in a] == [x.payload() for x in b]
    assert [x.payload() for x in a] != [x.payload() for x in c]


@pytest.mark.parametrize("version", [1, 2])
def test_batches_are_what_ingestion_accepts_inside_its_window(version):
    spec = TrafficSpec(visitors=12, moves_per_visitor=450, hours_back=2, now=NOW, version=version)
    batches, _ = build(spec)
    limits = Limits.from_settings(Settings())
    assert all(1 <= len(batch.events) <= spec.batch_size for batch in batches)
    for batch in batches:
        decoded = decode_batch(msgspec.json.encode(batch.payload()))  # the server's strict decoder
        check_batch(decoded, limits, NOW)
        assert all(NOW - timedelta(hours=spec.hours_back) <= event.event_time <= NOW for event in decoded.events)
        if version == 1:
            assert (decoded.view, batch.device) == (None, "unknown")
        else:
            assert decoded.view is not None
            # The generator's device label is the class the server derives from the viewport.
            assert device_class(decoded.view.viewport_w) == batch.device


def test_a_v2_view_starts_at_its_fold_and_only_scrolls_deeper():
    batches, _ = build(TrafficSpec(visitors=30, now=NOW))
    by_view: dict[str, list[dict]] = {}
    folds: dict[str, float] = {}
    for batch in batches:
        view = batch.view
        assert view is not None
        assert view["screen_w"] == view["viewport_w"] and view["screen_h"] >= 2 * view["viewport_h"]
        by_view.setdefault(view["view_id"], []).extend(batch.events)
        folds[view["view_id"]] = round(view["viewport_h"] / view["screen_h"], 6)
    assert len(by_view) == 30
    for view_id, events in by_view.items():
        assert [_time(e) for e in events] == sorted(_time(e) for e in events)
        assert (events[0]["event_type"], events[0]["y_norm"]) == ("scroll", folds[view_id])
        depths = [e["y_norm"] for e in events if e["event_type"] == "scroll"]
        assert depths == sorted(depths)


def test_clicks_sit_on_buttons_moves_spread_wider_and_phones_scroll_further():
    _, truth = build(TrafficSpec(visitors=200, now=NOW, seed=11))
    clicks = truth.cells_of("click")
    moves = truth.cells_of("mousemove")
    button_cells = {cell_of(x, y) for x, y, _ in BUTTONS}

    def near_a_button(cell: tuple[int, int]) -> bool:
        # A few CSS pixels around the centre: up to 5 columns on a 390 px phone, 2 rows on a 2000 px screen.
        return any(abs(cell[0] - bx) <= 5 and abs(cell[1] - by) <= 2 for bx, by in button_cells)

    assert all(near_a_button((x, y)) for (_, _, _, x, y) in clicks)
    assert sum(truth.cells_of("rageclick").values()) > 0
    assert len({key[3:] for key in moves}) > 10 * len({key[3:] for key in clicks})

    past_fold: dict[str, list[float]] = {}
    for (_, _, device, _, _), (deepest, fold) in truth.view_depths.items():
        past_fold.setdefault(device, []).append(deepest - fold)
    mean = {device: sum(rows) / len(rows) for device, rows in past_fold.items()}
    assert set(mean) == {"desktop", "tablet", "mobile"}
    assert mean["mobile"] > 1.5 * mean["desktop"]


def _batch(view_id: str | None, viewport: tuple[int, int], screen_h: int, device: str, *events) -> Batch:
    view = None
    if view_id is not None:
        view = {
            "view_id": view_id,
            "viewport_w": viewport[0],
            "viewport_h": viewport[1],
            "screen_w": viewport[0],
            "screen_h": screen_h,
        }
    return Batch(
        "acme",
        "home",
        f"batch-{view_id}",
        [{"event_time": t, "x_norm": x, "y_norm": y, "event_type": kind} for t, x, y, kind in events],
        view,
        device,
    )


# Hand-checked: desktop view A (fold 800/2000 = 0.4, row 80) across 10:00 and 11:00; phone view B whose
# screen is no taller than its viewport (fold min(1, 1) = 1: row 199); phone view C (fold 844/3376 = 0.25,
# row 50); a v1 batch whose scroll event has no view.
TINY = [
    _batch(
        "view-aaaaaaaa",
        (1280, 800),
        2000,
        "desktop",
        ("2026-11-25T10:59:59Z", 0.5, 0.4, "scroll"),
        ("2026-11-25T10:59:59.500Z", 0.5, 0.13, "click"),
        ("2026-11-25T11:00:01Z", 0.5, 0.6, "scroll"),
        ("2026-11-25T11:00:02Z", 0.5, 0.55, "scroll"),
        ("2026-11-25T11:00:03Z", 0.215, 0.5725, "mousemove"),
    ),
    _batch("view-bbbbbbbb", (390, 844), 844, "mobile", ("2026-11-25T11:10:00Z", 0.5, 1.0, "scroll")),
    _batch(
        "view-cccccccc",
        (390, 844),
        3376,
        "mobile",
        ("2026-11-25T11:20:00Z", 0.5, 0.25, "scroll"),
        ("2026-11-25T11:20:01Z", 0.5, 0.13, "rageclick"),
    ),
    _batch(None, (0, 0), 0, "unknown", ("2026-11-25T11:30:00Z", 0.5, 0.9, "scroll")),
]


def _tiny_truth() -> GroundTruth:
    truth = GroundTruth()
    for batch in TINY:
        truth.add(batch)
    return truth


def test_tiny_traffic_cells_by_type_and_device():
    truth = _tiny_truth()

    assert truth.typed_cells == {
        ("acme", "home", "scroll", "desktop", H10, 50, 80): 1,
        ("acme", "home", "click", "desktop", H10, 50, 26): 1,
        ("acme", "home", "scroll", "desktop", H11, 50, 120): 1,
        ("acme", "home", "scroll", "desktop", H11, 50, 110): 1,
        ("acme", "home", "mousemove", "desktop", H11, 21, 114): 1,
        ("acme", "home", "scroll", "mobile", H11, 50, 199): 1,
        ("acme", "home", "scroll", "mobile", H11, 50, 50): 1,
        ("acme", "home", "rageclick", "mobile", H11, 50, 26): 1,
        ("acme", "home", "scroll", "unknown", H11, 50, 180): 1,
    }
    assert truth.cells_of("click") == {("acme", "home", H10, 50, 26): 1}
    assert truth.cells_of("scroll", "mobile") == {("acme", "home", H11, 50, 199): 1, ("acme", "home", H11, 50, 50): 1}
    assert truth.cells_of(device="unknown") == {("acme", "home", H11, 50, 180): 1}
    assert truth.cells_of("click", bucket_of=day_start) == {("acme", "home", day_start(H10), 50, 26): 1}
    assert truth.cells == {
        ("acme", "home", H10, 50, 80): 1,
        ("acme", "home", H10, 50, 26): 1,
        ("acme", "home", H11, 50, 120): 1,
        ("acme", "home", H11, 50, 110): 1,
        ("acme", "home", H11, 21, 114): 1,
        ("acme", "home", H11, 50, 199): 1,
        ("acme", "home", H11, 50, 50): 1,
        ("acme", "home", H11, 50, 26): 1,
        ("acme", "home", H11, 50, 180): 1,
    }
    assert (truth.total(), truth.hours()) == (9, {H10, H11})
    assert truth.event_types() == {"scroll", "click", "mousemove", "rageclick"}
    assert truth.devices() == {"desktop", "mobile", "unknown"}


def test_tiny_traffic_scroll_reach_per_hour_and_day():
    truth = _tiny_truth()

    hourly = truth.scroll_reach()
    expected = {("acme", "home", "desktop", H10, row): (1, 1 if row == 80 else 0) for row in range(81)}
    # A in 11:00: deepest row 120 (0.6, not the later 0.55), fold still row 80.
    expected |= {("acme", "home", "desktop", H11, row): (1, 1 if row == 80 else 0) for row in range(121)}
    # B reached row 199 (fold 199); C row 50 (fold 50); the v1 scroll adds nothing.
    expected |= {
        ("acme", "home", "mobile", H11, row): (2 if row <= 50 else 1, 1 if row in (50, 199) else 0)
        for row in range(200)
    }
    assert hourly == expected
    assert truth.views() == {
        ("acme", "home", "desktop", H10): 1,
        ("acme", "home", "desktop", H11): 1,
        ("acme", "home", "mobile", H11): 2,
    }

    daily = truth.scroll_reach(bucket_of=day_start)
    day = day_start(H10)
    # A counts once in each of its two hours.
    assert {row: daily[("acme", "home", "desktop", day, row)] for row in (0, 80, 81, 120)} == {
        0: (2, 0),
        80: (2, 2),
        81: (1, 0),
        120: (1, 0),
    }
    assert ("acme", "home", "desktop", day, 121) not in daily
    assert truth.views(bucket_of=day_start) == {("acme", "home", "desktop", day): 2, ("acme", "home", "mobile", day): 2}


def test_per_dimension_truth_sums_to_the_per_cell_truth_and_recounts_exactly():
    batches, truth = build(TrafficSpec(visitors=40, now=NOW, seed=5))
    v1_batches, v1_truth = build(TrafficSpec(visitors=10, now=NOW, seed=5, version=1))
    truth.merge(v1_truth)
    batches += v1_batches

    recount: Counter = Counter()
    typed: Counter = Counter()
    for batch in batches:
        for event in batch.events:
            hour = _time(event).replace(minute=0, second=0, microsecond=0)
            cell = cell_of(event["x_norm"], event["y_norm"])
            recount[(batch.client_id, batch.screen_id, hour, *cell)] += 1
            typed[(event["event_type"], batch.device)] += 1
    assert truth.cells == recount
    assert truth.total() == sum(len(batch.events) for batch in batches) == sum(recount.values())

    by_dimension: Counter = Counter()
    for event_type in EVENT_TYPES:
        for device in ("desktop", "tablet", "mobile", "unknown"):
            part = truth.cells_of(event_type, device)
            assert sum(part.values()) == typed[(event_type, device)]
            by_dimension.update(part)
    assert by_dimension == truth.cells
    assert typed[("scroll", "unknown")] == 0 and typed[("mousemove", "unknown")] > 0  # v1: moves and clicks only

    reach = truth.scroll_reach()
    views = truth.views()
    # Every counted view has exactly one fold row and reaches row 0; reach never grows with depth.
    for (client, screen, device, hour), count in views.items():
        rows = [reach.get((client, screen, device, hour, row), (0, 0)) for row in range(200)]
        assert rows[0][0] == count == sum(folds for _, folds in rows)
        assert all(deeper[0] <= shallower[0] for shallower, deeper in pairwise(rows))
    # Views per hour, recounted: distinct (view, hour) pairs with a scroll event.
    scrolled = {
        (batch.device, _time(e).replace(minute=0, second=0, microsecond=0), batch.view["view_id"])
        for batch in batches
        if batch.view
        for e in batch.events
        if e["event_type"] == "scroll"
    }
    assert sum(views.values()) == len(scrolled)
