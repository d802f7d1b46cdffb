"""The traffic generator is deterministic and its ground truth is exact (pure)."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from heatmap_core.events import Event
from heatmap_core.grid import cell_of
from traffic.generator import TrafficSpec, build

NOW = datetime(2026, 11, 25, 12, 30, tzinfo=UTC)


def test_same_seed_same_traffic():
    a, _ = build(TrafficSpec(seed=3, now=NOW))
    b, _ = build(TrafficSpec(seed=3, now=NOW))
    c, _ = build(TrafficSpec(seed=4, now=NOW))
    assert [x.payload() for x in a] == [x.payload() for x in b]
    assert [x.payload() for x in a] != [x.payload() for x in c]


def test_batches_are_valid_and_bounded():
    import msgspec

    spec = TrafficSpec(visitors=10, moves_per_visitor=450, hours_back=2, now=NOW)
    batches, _ = build(spec)
    assert all(1 <= len(batch.events) <= spec.batch_size for batch in batches)
    for batch in batches:
        for raw in batch.events:
            event = msgspec.convert(raw, Event, strict=False)
            assert NOW - timedelta(hours=spec.hours_back) <= event.event_time <= NOW


def test_ground_truth_counts_every_event_once():
    batches, truth = build(TrafficSpec(visitors=15, now=NOW))
    recount: Counter[tuple[str, str, datetime, int, int]] = Counter()
    for batch in batches:
        for event in batch.events:
            moment = datetime.fromisoformat(event["event_time"].replace("Z", "+00:00"))
            hour = moment.replace(minute=0, second=0, microsecond=0)
            recount[(batch.client_id, batch.screen_id, hour, *cell_of(event["x_norm"], event["y_norm"]))] += 1
    assert truth.cells == recount
    assert truth.total() == sum(len(batch.events) for batch in batches)
