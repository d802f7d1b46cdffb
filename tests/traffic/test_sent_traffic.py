"""Generated traffic sent through the real ingestion API lands in Kafka exactly as its ground truth says,
per event type and per device: the device the server derives from each view is the generator's label."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

from heatmap_core.grid import cell_of
from heatmap_core.settings import Settings
from heatmap_core.timeutil import hour_start
from tests.conftest import serve_app
from tests.ingestion.conftest import read_topic
from traffic.cli import send_batches
from traffic.generator import DEVICE_PROFILES, Batch, GroundTruth, TrafficSpec, build


def test_sent_v1_and_v2_traffic_is_in_kafka_per_type_and_device_as_its_truth_says(settings: Settings):
    open_settings = settings.model_copy(update={"auth_enabled": False})
    # A fresh seed: batch ids follow from it, and Redis remembers acknowledged ones for a day.
    seed = time.time_ns()
    now = datetime.now(UTC)
    # Every device of the mix, each on its own so that each is surely there, and v1 traffic.
    specs = [
        TrafficSpec(visitors=4, moves_per_visitor=60, seed=seed + i, now=now, devices=(profile,))
        for i, profile in enumerate(DEVICE_PROFILES)
    ]
    specs.append(TrafficSpec(visitors=3, moves_per_visitor=60, seed=seed - 1, now=now, version=1))
    batches: list[Batch] = []
    truth = GroundTruth()
    for spec in specs:
        spec_batches, spec_truth = build(spec)
        batches += spec_batches
        truth.merge(spec_truth)

    with serve_app("ingestion_api.app:app", open_settings) as url:
        asyncio.run(send_batches(batches, url, progress=False))

    landed: Counter = Counter()
    for _, record in read_topic(open_settings):
        for event in record.events:
            hour = hour_start(event.event_time)
            cell = cell_of(event.x_norm, event.y_norm)
            landed[(record.client_id, record.screen_id, event.event_type, record.device, hour, *cell)] += 1
    assert landed == truth.typed_cells, f"seed {seed}"
    assert truth.devices() == {"desktop", "tablet", "mobile", "unknown"}
