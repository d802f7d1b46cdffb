"""From acknowledged batches to what the served maps hold: land the topic, build the hours, read the query API.

Each reliability scenario breaks one part under load and then asks the same question of the
whole pipeline: is every acknowledged event in the served hourly maps exactly once? This module
runs the rest of the pipeline the production way (a landing process of the consumer group, the
heatmap_hourly asset on Spark, the query API's HTTP routes) against the test's own topic,
bucket and ClickHouse database, and tallies the answer cell by cell.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from dagster import DagsterInstance
from litestar.testing import TestClient

from heatmap_assets.partitions import hour_key
from heatmap_core.grid import cell_of
from heatmap_core.settings import Settings
from heatmap_core.timeutil import hour_start
from query_api.app import create_app
from tests.assets.runs import run
from tests.landing.conftest import LandingProcess, wait_landed
from traffic.answers import cell_counts

from .figures import Tally

# (client, screen, hour, event type, cell_x, cell_y)
CellKey = tuple[str, str, datetime, str, int, int]


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def expected_cells(batches: Iterable[dict]) -> Counter[CellKey]:
    """Events per hourly cell of the batches (request bodies) the API acknowledged."""
    cells: Counter[CellKey] = Counter()
    for batch in batches:
        for event in batch["events"]:
            cell_x, cell_y = cell_of(event["x_norm"], event["y_norm"])
            hour = hour_start(_instant(event["event_time"]))
            cells[(batch["client_id"], batch["screen_id"], hour, event["event_type"], cell_x, cell_y)] += 1
    return cells


def land_everything(settings: Settings, log_dir: Path, group: str = "reliability-drain") -> None:
    """One landing process of ``group`` until it has committed the topic to its end, then a clean stop."""
    landing = LandingProcess(settings, log_dir / f"{group}.log", f"{group}-{settings.topic}", [], {})
    try:
        wait_landed(settings, landing)
    finally:
        landing.stop_cleanly()


def build_hours(settings: Settings, hours: Iterable[datetime]) -> None:
    """Materialize heatmap_hourly for the hours, in one range run (one Spark read of the lake)."""
    first, last = min(hours), max(hours)
    with DagsterInstance.ephemeral() as instance:
        if first == last:
            run(settings, instance, "heatmap_hourly", hour_key(first))
        else:
            tags = {
                "dagster/asset_partition_range_start": hour_key(first),
                "dagster/asset_partition_range_end": hour_key(last),
            }
            run(settings, instance, "heatmap_hourly", tags=tags)


def served_cells(settings: Settings, keys: Iterable[CellKey]) -> Counter[CellKey]:
    """What GET /heatmap/hourly serves for every (client, screen, hour, type) among ``keys``."""
    open_settings = settings.model_copy(update={"auth_enabled": False})
    selections = {key[:4] for key in keys}
    served: Counter[CellKey] = Counter()
    with TestClient(create_app(open_settings)) as api:
        for client_id, screen_id, hour, event_type in sorted(selections):
            answer = api.get(
                "/heatmap/hourly",
                params={
                    "client_id": client_id,
                    "screen_id": screen_id,
                    "dt": f"{hour:%Y-%m-%d}",
                    "hour": hour.hour,
                    "type": event_type,
                },
            )
            assert answer.status_code == 200, answer.text
            for (x, y), count in cell_counts(answer.json()).items():
                served[(client_id, screen_id, hour, event_type, x, y)] += count
    return served


def tally_served(settings: Settings, batches: list[dict], log_dir: Path, *, land: bool = True) -> Tally:
    """Land the topic (unless the scenario's own landing did), build the batches' hours, and
    tally the acknowledged events against the served maps."""
    expected = expected_cells(batches)
    if land:
        land_everything(settings, log_dir)
    build_hours(settings, {key[2] for key in expected})
    return Tally.of(expected, served_cells(settings, expected))
