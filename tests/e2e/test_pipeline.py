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
from tests.query.test_dashboard import CELL_PIXELS, wait_ready
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
    if response.status_code != 200:
        raise ServedError(response)
    body = response.json()
    assert (body["grid_w"], body["grid_h"]) == (100, 200)
    return Counter({(cell["cell_x"], cell["cell_y"]): cell["count"] for cell in body["cells"]})


class ServedError(Exception):
    """The query API answered something other than 200."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"{response.request.url} -> {response.status_code}: {response.text[:2000]}")
        self.status_code = response.status_code


def _expected(truth: GroundTruth, bucket_of) -> dict[tuple, Counter]:
    """Ground truth grouped by (client, screen, bucket start) -> cell counts."""
    grouped: dict[tuple, Counter] = {}
    for (client, screen, hour, x, y), count in truth.cells.items():
        grouped.setdefault((client, screen, bucket_of(hour)), Counter())[(x, y)] += count
    return grouped


# A 5xx this many polls in a row is the pipeline failing, not warming up.
STEADY_5XX_POLLS = 3


def _served_everything(base: str, daily: dict[tuple, Counter], errors: list[ServedError]) -> bool:
    """Whether every day is served exactly. A connection refused (the API still starting) is
    "not yet"; a 4xx fails at once and a 5xx once it is steady, each with the API's answer."""
    try:
        served = all(
            _cells(f"{base}/heatmap/daily", {"client_id": c, "screen_id": s, "dt": f"{d:%Y-%m-%d}"}) == cells
            for (c, s, d), cells in daily.items()
        )
    except httpx.TransportError:
        return False
    except ServedError as error:
        errors.append(error)
        if error.status_code < 500 or len(errors) >= STEADY_5XX_POLLS:
            raise
        return False
    errors.clear()
    return served


@pytest.mark.slow
def test_traffic_is_served_exactly_for_every_hour_day_and_week(pipeline: Settings, browser, artifacts_dir):
    spec = TrafficSpec(
        clients=("acme", "globex"),
        screens=("home_v1", "pricing_v2"),
        visitors=24,
        moves_per_visitor=150,
        hours_back=3,
        seed=time.time_ns(),
        now=datetime.now(UTC),  # fresh batch ids: Redis remembers old ones for 24 h
    )
    print(f"traffic seed {spec.seed} (TrafficSpec(..., seed={spec.seed}) rebuilds this traffic)")
    batches, truth = build(spec)
    # Playwright's sync API owns this thread's event loop: send from a worker thread.
    with ThreadPoolExecutor(1) as worker:
        worker.submit(
            asyncio.run, send_batches(batches, f"http://127.0.0.1:{pipeline.ingestion_port}", progress=False)
        ).result()

    base = f"http://127.0.0.1:{pipeline.query_port}"
    hourly = _expected(truth, lambda h: h)
    daily = _expected(truth, day_of)
    weekly = _expected(truth, week_of)

    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    errors: list[ServedError] = []
    while not _served_everything(base, daily, errors):
        if time.monotonic() > deadline:
            logs = pipeline.data_path / "logs"
            pytest.fail(
                f"the pipeline did not serve the traffic (seed {spec.seed}) within {PIPELINE_TIMEOUT_S} s; logs in {logs}"
            )
        time.sleep(10)
    # Weeks follow days in the same automation tick; give them their own wait.
    while True:
        served_weeks = {
            key: _cells(
                f"{base}/heatmap/weekly", {"client_id": key[0], "screen_id": key[1], "week_start": f"{key[2]:%Y-%m-%d}"}
            )
            for key in weekly
        }
        if served_weeks == weekly or time.monotonic() > deadline:
            break
        time.sleep(10)

    for (client, screen, hour), cells in hourly.items():
        params = {"client_id": client, "screen_id": screen, "dt": f"{hour:%Y-%m-%d}", "hour": hour.hour}
        assert _cells(f"{base}/heatmap/hourly", params) == cells, f"hour {hour} of {client}/{screen}"
    for (client, screen, day), cells in daily.items():
        assert (
            _cells(f"{base}/heatmap/daily", {"client_id": client, "screen_id": screen, "dt": f"{day:%Y-%m-%d}"})
            == cells
        )
    assert served_weeks == weekly
    assert sum(sum(c.values()) for c in weekly.values()) == truth.total()

    # The dashboard opened on the busiest served day (in the URL) paints that day's cells.
    client, screen, day = max(daily, key=lambda key: sum(daily[key].values()))
    cells = daily[(client, screen, day)]
    hottest = max(cells, key=lambda cell: cells[cell])
    # Heat spreads a few cells around each point (radius ~3 cells at this stage size): a cell
    # with no data within 5 cells must stay unpainted.
    cold = next(
        (x, y)
        for y in range(200)
        for x in range(100)
        if not any((x + dx, y + dy) in cells for dx in range(-5, 6) for dy in range(-5, 6))
    )
    bucket = f"{day:%Y-%m-%dT%H:%M:%SZ}"
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(f"{base}/dashboard/?client={client}&screen={screen}&grain=day&bucket={bucket}")
        wait_ready(page)
        shown_bucket = page.input_value("#bucket")
        legend = {name: page.text_content(f"#{name}") for name in ("max", "total", "cells")}
        hot, empty = page.evaluate(CELL_PIXELS, list(hottest)), page.evaluate(CELL_PIXELS, list(cold))
        page.screenshot(path=str(artifacts_dir / "e2e-dashboard.png"), full_page=True)
    finally:
        page.close()
    assert shown_bucket == bucket
    assert legend == {"max": f"{cells[hottest]:,}", "total": f"{sum(cells.values()):,}", "cells": f"{len(cells):,}"}
    red, green, blue, alpha = hot["centre"]
    assert hot["maxAlpha"] > 0 and alpha > 0 and red > max(green, blue), hot  # the hottest cell tops the gradient
    assert empty["maxAlpha"] == 0, (cold, empty)
