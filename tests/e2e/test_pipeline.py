"""End to end: HTTP ingestion -> Kafka -> landing -> lake -> Dagster daemon -> ClickHouse -> query API -> dashboard.

The application programs run exactly as `make demo` runs them (infra.supervisor
with the program table), in a private data directory, against the session's
Kafka, S3 server and Redis with this test's own topic, bucket and ClickHouse
database. Nothing is called directly: the Dagster daemon's sensors and
declarative automation do the materializing. The ground truth recorded by
the traffic generator must then be served exactly, cell by cell, for every
hour, day and week the traffic touched.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest

from heatmap_core.settings import Settings
from infra import supervisor
from infra.programs import APP_PROGRAMS, PROGRAMS
from tests.conftest import day_of, free_port, week_of
from traffic.cli import send_batches
from traffic.generator import GroundTruth, TrafficSpec, build

PIPELINE_TIMEOUT_S = 20 * 60


@pytest.fixture
def pipeline(settings: Settings, tmp_path):
    # Short intervals so the daemon reacts within seconds rather than the production half-minute.
    app_settings = settings.model_copy(
        update={
            "data_dir": tmp_path / "e2e",
            "ingestion_port": free_port(),
            "query_port": free_port(),
            "dagster_port": free_port(),
            "auth_enabled": False,
            "landing": settings.landing.model_copy(update={"flush_interval": 2, "log_interval": 5}),
            "dagster": settings.dagster.model_copy(
                update={"ledger_sensor_interval_seconds": 5, "automation_interval_seconds": 5}
            ),
        }
    )
    try:
        supervisor.start(app_settings, PROGRAMS, APP_PROGRAMS, with_requirements=False)
        yield app_settings
    finally:
        supervisor.stop(app_settings)


def _cells(url: str, params: dict) -> Counter:
    response = httpx.get(url, params=params, timeout=30)
    response.raise_for_status()
    body = response.json()
    assert (body["grid_w"], body["grid_h"]) == (100, 200)
    return Counter({(cell["cell_x"], cell["cell_y"]): cell["count"] for cell in body["cells"]})


def _expected(truth: GroundTruth, bucket_of) -> dict[tuple, Counter]:
    """Ground truth grouped by (client, screen, bucket start) -> cell counts."""
    grouped: dict[tuple, Counter] = {}
    for (client, screen, hour, x, y), count in truth.cells.items():
        grouped.setdefault((client, screen, bucket_of(hour)), Counter())[(x, y)] += count
    return grouped


def _served_everything(base: str, daily: dict[tuple, Counter]) -> bool:
    try:
        return all(
            _cells(f"{base}/heatmap/daily", {"client_id": c, "screen_id": s, "dt": f"{d:%Y-%m-%d}"}) == cells
            for (c, s, d), cells in daily.items()
        )
    except httpx.HTTPError:
        return False


@pytest.mark.slow
def test_traffic_is_served_exactly_for_every_hour_day_and_week(pipeline: Settings, browser, artifacts_dir):
    spec = TrafficSpec(
        clients=("acme", "globex"), screens=("home_v1", "pricing_v2"), visitors=24, moves_per_visitor=150,
        hours_back=3, seed=time.time_ns(), now=datetime.now(UTC),  # fresh batch ids: Redis remembers old ones for 24 h
    )
    batches, truth = build(spec)
    # Playwright's sync API owns this thread's event loop: send from a worker thread.
    with ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, send_batches(batches, f"http://127.0.0.1:{pipeline.ingestion_port}", progress=False)).result()

    base = f"http://127.0.0.1:{pipeline.query_port}"
    hourly = _expected(truth, lambda h: h)
    daily = _expected(truth, day_of)
    weekly = _expected(truth, week_of)

    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    while not _served_everything(base, daily):
        if time.monotonic() > deadline:
            logs = pipeline.data_path / "logs"
            pytest.fail(f"the pipeline did not serve the traffic within {PIPELINE_TIMEOUT_S} s; logs in {logs}")
        time.sleep(10)
    # Weeks follow days in the same automation tick; give them their own wait.
    while True:
        served_weeks = {
            key: _cells(f"{base}/heatmap/weekly", {"client_id": key[0], "screen_id": key[1], "week_start": f"{key[2]:%Y-%m-%d}"})
            for key in weekly
        }
        if served_weeks == weekly or time.monotonic() > deadline:
            break
        time.sleep(10)

    for (client, screen, hour), cells in hourly.items():
        params = {"client_id": client, "screen_id": screen, "dt": f"{hour:%Y-%m-%d}", "hour": hour.hour}
        assert _cells(f"{base}/heatmap/hourly", params) == cells, f"hour {hour} of {client}/{screen}"
    for (client, screen, day), cells in daily.items():
        assert _cells(f"{base}/heatmap/daily", {"client_id": client, "screen_id": screen, "dt": f"{day:%Y-%m-%d}"}) == cells
    assert served_weeks == weekly
    assert sum(sum(c.values()) for c in weekly.values()) == truth.total()

    # The dashboard draws the served day: heat on the canvas where the data is.
    client, screen, day = max(daily, key=lambda key: sum(daily[key].values()))
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(f"{base}/?client={client}&screen={screen}&grain=day")
        page.wait_for_selector("[data-state=ready]", timeout=60_000)
        painted = page.evaluate(
            """() => {
                const canvas = document.querySelector('canvas');
                const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
                return painted;
            }"""
        )
        page.screenshot(path=str(artifacts_dir / "e2e-dashboard.png"), full_page=True)
    finally:
        page.close()
    assert painted > 0, "the dashboard drew no heat for a day that has data"
