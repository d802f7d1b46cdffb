"""End to end: HTTP ingestion -> Kafka -> landing -> lake -> Dagster daemon -> ClickHouse -> query API -> dashboard.

The application programs run exactly as `make demo` runs them (infra.supervisor
with the program table), in a private data directory, against the session's
Kafka, S3 server and Redis with this test's own topic, bucket and ClickHouse
database. Nothing is called directly: the Dagster daemon's sensors and
declarative automation do the materializing. The ground truth recorded by
the traffic generator (v2 traffic of every device, and a v1 site counted under
device ``unknown``) must then be served exactly, cell by cell, for every hour,
day and week the traffic touched, for every event type and device, and so
must the scroll reach of every depth row. A visit of the demo page in
Chromium at a phone and a desktop viewport must show each action in its own
type's map of its own device.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from heatmap_core.events import DEVICES, EVENT_TYPES
from heatmap_core.settings import Settings
from heatmap_core.timeutil import hour_start
from infra import supervisor
from infra.programs import APP_PROGRAMS, PROGRAMS
from tests.conftest import day_of, free_port, week_of
from tests.ingestion.demo_session import (
    DESKTOP,
    PHONE,
    Viewport,
    open_demo,
    play_session,
    wait_until_all_acknowledged,
    within_one_cell,
)
from tests.query.test_dashboard import CELL_PIXELS, wait_ready
from traffic.answers import cell_counts
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


def _get(url: str, params: dict) -> dict:
    response = httpx.get(url, params=params, timeout=30)
    if response.status_code != 200:
        raise ServedError(response)
    return response.json()


def _cells(url: str, params: dict) -> Counter:
    body = _get(url, params)
    assert (body["grid_w"], body["grid_h"]) == (100, 200)
    return cell_counts(body)


def _reach(url: str, params: dict) -> dict[int, tuple[int, int]]:
    body = _get(url, params)
    return {row["depth_row"]: (row["reached"], row["folds"]) for row in body["rows"]}


class ServedError(Exception):
    """The query API answered something other than 200."""

    def __init__(self, response: httpx.Response):
        super().__init__(f"{response.request.url} -> {response.status_code}: {response.text[:2000]}")
        self.status_code = response.status_code


@dataclass(frozen=True)
class Grain:
    """A bucket grain as the query API names it, and its bucket of an hour."""

    path: str
    bucket_of: Callable[[datetime], datetime]
    time_params: Callable[[datetime], dict]


GRAINS = (
    Grain("hourly", lambda hour: hour, lambda start: {"dt": f"{start:%Y-%m-%d}", "hour": start.hour}),
    Grain("daily", day_of, lambda start: {"dt": f"{start:%Y-%m-%d}"}),
    Grain("weekly", week_of, lambda start: {"week_start": f"{start:%Y-%m-%d}"}),
)
ALL = None  # a filter left at its default: every type, or every device


def _expected(truth: GroundTruth, bucket_of, event_type: str | None = ALL, device: str | None = ALL) -> dict:
    """Ground truth of one (type, device) grouped by (client, screen, bucket start) -> cell counts."""
    grouped: dict[tuple, Counter] = {}
    for (client, screen, bucket, x, y), count in truth.cells_of(event_type, device, bucket_of).items():
        grouped.setdefault((client, screen, bucket), Counter())[(x, y)] += count
    return grouped


def _expected_reach(truth: GroundTruth, bucket_of, device: str | None) -> dict[tuple, dict[int, tuple[int, int]]]:
    """Scroll reach of one device (ALL: summed over devices) per (client, screen, bucket) -> row -> (reached, folds)."""
    grouped: dict[tuple, Counter] = {}
    for (client, screen, dev, bucket, row), (reached, folds) in truth.scroll_reach(bucket_of).items():
        if device is ALL or dev == device:
            rows = grouped.setdefault((client, screen, bucket), Counter())
            rows[(row, "reached")] += reached
            rows[(row, "folds")] += folds
    return {
        key: {row: (rows[(row, "reached")], rows[(row, "folds")]) for row in sorted({row for row, _ in rows})}
        for key, rows in grouped.items()
    }


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


def _play_demo(browser, ingestion: str) -> dict[Viewport, tuple[list, datetime, datetime]]:
    """A visit of the demo page at each viewport (screen ``demo_<viewport>`` of acme): the actions
    it must have recorded and the hours it spans."""
    sessions = {}
    for viewport in (PHONE, DESKTOP):
        started = datetime.now(UTC)
        page, _, errors = open_demo(browser, ingestion, "acme", f"demo_{viewport.name}", "", viewport)
        expected = play_session(page, viewport)
        wait_until_all_acknowledged(page)
        page.close()
        assert errors == []
        sessions[viewport] = (expected, hour_start(started), hour_start(datetime.now(UTC)) + timedelta(hours=1))
    return sessions


def _demo_served(base: str, viewport: Viewport, expected: list, start: datetime, end: datetime) -> bool:
    """Every action of the visit in its own type's map of its own device, within one cell."""
    for kind in {e.event_type for e in expected}:
        params = {"client_id": "acme", "screen_id": f"demo_{viewport.name}", "type": kind}
        window = {"from": start.isoformat(), "to": end.isoformat()}
        served = _cells(f"{base}/heatmap/range", {**params, **window, "device": viewport.device})
        if not all(any(within_one_cell(cell, e.cell) for cell in served) for e in expected if e.event_type == kind):
            return False
        # Nothing of this visit under any other device.
        others = [d for d in DEVICES if d != viewport.device]
        assert all(not _cells(f"{base}/heatmap/range", {**params, **window, "device": d}) for d in others)
    return True


@pytest.mark.slow
def test_traffic_is_served_exactly_for_every_hour_day_and_week(pipeline: Settings, browser, artifacts_dir):
    seed = time.time_ns()
    now = datetime.now(UTC)  # fresh batch ids: Redis remembers old ones for 24 h
    spec = TrafficSpec(
        clients=("acme", "globex"),
        screens=("home_v1", "pricing_v2"),
        visitors=24,
        moves_per_visitor=150,
        hours_back=3,
        seed=seed,
        now=now,
    )
    # A site still on the v1 request, on a screen v2 traffic uses too: counted under device unknown.
    legacy = TrafficSpec(clients=("acme",), screens=("home_v1",), visitors=6, version=1, seed=seed + 1, now=now)
    print(f"traffic seed {seed} (TrafficSpec(..., seed={seed}) rebuilds this traffic)")
    batches, truth = build(spec)
    legacy_batches, legacy_truth = build(legacy)
    truth.merge(legacy_truth)
    assert "unknown" in truth.devices() and {"click", "rageclick", "scroll"} <= truth.event_types()
    # Playwright's sync API owns this thread's event loop: send from a worker thread.
    with ThreadPoolExecutor(1) as worker:
        worker.submit(
            asyncio.run,
            send_batches(batches + legacy_batches, f"http://127.0.0.1:{pipeline.ingestion_port}", progress=False),
        ).result()
    demo = _play_demo(browser, f"http://127.0.0.1:{pipeline.ingestion_port}")

    base = f"http://127.0.0.1:{pipeline.query_port}"
    daily = _expected(truth, day_of)
    weekly = _expected(truth, week_of)

    deadline = time.monotonic() + PIPELINE_TIMEOUT_S
    errors: list[ServedError] = []
    while not _served_everything(base, daily, errors):
        if time.monotonic() > deadline:
            logs = pipeline.data_path / "logs"
            pytest.fail(
                f"the pipeline did not serve the traffic (seed {seed}) within {PIPELINE_TIMEOUT_S} s; logs in {logs}"
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
    assert served_weeks == weekly
    assert sum(sum(c.values()) for c in weekly.values()) == truth.total()

    # Every (type, device) of every hour, day and week, and the scroll reach of every device.
    for grain in GRAINS:
        buckets = _expected(truth, grain.bucket_of)
        for event_type in (ALL, *EVENT_TYPES):
            for device in (ALL, *DEVICES):
                expected = _expected(truth, grain.bucket_of, event_type, device)
                filters = {"type": event_type or "all", "device": device or "all"}
                for client, screen, start in buckets:
                    params = {"client_id": client, "screen_id": screen, **grain.time_params(start), **filters}
                    served = _cells(f"{base}/heatmap/{grain.path}", params)
                    assert served == expected.get((client, screen, start), Counter()), (grain.path, params)
        for device in (ALL, *DEVICES):
            expected_reach = _expected_reach(truth, grain.bucket_of, device)
            for client, screen, start in buckets:
                params = {"client_id": client, "screen_id": screen, **grain.time_params(start)}
                served_reach = _reach(f"{base}/heatmap/scroll/{grain.path}", {**params, "device": device or "all"})
                assert served_reach == expected_reach.get((client, screen, start), {}), (grain.path, device, params)

    # The demo page visited at a phone and a desktop viewport: each action in its own map and device.
    for viewport, (actions, start, end) in demo.items():
        while not _demo_served(base, viewport, actions, start, end):
            assert time.monotonic() < deadline, f"the {viewport.name} visit of the demo page was not served"
            time.sleep(10)

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
