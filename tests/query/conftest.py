"""Known rows in an isolated ClickHouse database, the app on them, and a live uvicorn."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from heatmap_core.clickhouse import apply_schema, clickhouse
from heatmap_core.s3 import ensure_bucket, s3_client
from heatmap_core.schema import COLUMN_NAMES, TABLES
from heatmap_core.settings import Settings
from query_api.app import create_app
from tests.conftest import day_of, serve_app, week_of

CLIENT, SCREEN, OTHER_SCREEN, OTHER_CLIENT = "acme", "home_v1", "pricing", "globex"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
READ_KEY = "acme-read-secret"
# The smallest valid PNG header is enough for the store's signature check.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32

Cells = Counter[tuple[int, int]]  # (cell_x, cell_y) -> count


# The Sunday three to four weeks back: inside the hourly table's 90-day TTL (older
# rows vanish on insert) and long past the window in which buckets may still change.
WEEK = week_of(datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 21 * DAY)


@dataclass
class Dataset:
    """Hourly cells per (client, screen, hour) and the rollups written from them."""

    hourly: dict[tuple[str, str, datetime], Cells] = field(default_factory=dict)
    rolled_days: set[datetime] = field(default_factory=set)
    rolled_weeks: set[datetime] = field(default_factory=set)

    def hours(self, client: str, screen: str, start: datetime, end: datetime) -> Cells:
        """The expected answer for [start, end): the plain sum of the hourly rows."""
        total = Cells()
        for (c, s, hour), cells in self.hourly.items():
            if c == client and s == screen and start <= hour < end:
                total.update(cells)
        return total

    def rows(self) -> dict[tuple[str, datetime], list[tuple]]:
        """Rows per (grain, bucket_start), rollups summed from the hours like the pipeline does."""
        by_bucket: dict[tuple[str, datetime], Counter] = defaultdict(Counter)
        for (client, screen, hour), cells in self.hourly.items():
            targets = [("hour", hour)]
            if day_of(hour) in self.rolled_days:
                targets.append(("day", day_of(hour)))
            if week_of(hour) in self.rolled_weeks:
                targets.append(("week", week_of(hour)))
            for target in targets:
                for (x, y), count in cells.items():
                    by_bucket[target][(client, screen, x, y)] += count
        return {
            (grain, start): [(c, s, start, x, y, n) for (c, s, x, y), n in sorted(counts.items())]
            for (grain, start), counts in by_bucket.items()
        }


def build_dataset() -> Dataset:
    """Scattered hours from the Saturday before WEEK to the Monday after it, for two
    screens and two clients.

    Rolled up: WEEK and its days, plus the Sunday after; not (yet) rolled up:
    the Saturday before and the Monday after.
    """
    rng = random.Random(6)
    data = Dataset()
    hour = WEEK - 2 * HOUR
    while hour < WEEK + 8 * DAY + 6 * HOUR:
        for client, screen in ((CLIENT, SCREEN), (CLIENT, OTHER_SCREEN), (OTHER_CLIENT, SCREEN)):
            if rng.random() < 0.3:
                data.hourly[(client, screen, hour)] = Cells(
                    {(rng.randrange(100), rng.randrange(200)): rng.randrange(1, 50) for _ in range(rng.randrange(1, 6))}
                )
        hour += HOUR
    # A hot cell in one hour the dashboard test points at; (75, 160) stays empty everywhere.
    data.hourly[(CLIENT, SCREEN, WEEK + 10 * HOUR)] = Cells({(25, 40): 500, (26, 40): 200})
    for cells in data.hourly.values():
        for x in range(70, 81):
            for y in range(150, 171):
                cells.pop((x, y), None)
    data.rolled_weeks = {WEEK}
    data.rolled_days = {WEEK + i * DAY for i in range(8)}
    return data


def write_dataset(settings: Settings, data: Dataset) -> None:
    """One plain insert per table: the database is fresh, so nothing needs replacing
    (a replace_bucket per bucket costs minutes on a busy 2-core machine)."""
    by_grain: dict[str, list[tuple]] = defaultdict(list)
    for (grain, _), rows in data.rows().items():
        by_grain[grain].extend(rows)
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        for grain, rows in by_grain.items():
            client.insert(f"{settings.clickhouse_database}.{TABLES[grain].name}", rows, column_names=COLUMN_NAMES)


@pytest.fixture(scope="module")
def open_settings(stack: Settings) -> Settings:
    """Like the per-test ``settings`` fixture, but shared by a module's read-only tests
    (so the known rows are written once) and with read keys off."""
    tag = uuid.uuid4().hex[:10]
    isolated = stack.model_copy(
        update={
            "assets_bucket": f"test-assets-{tag}",
            "clickhouse_database": f"heatmap_test_{tag}",
            "auth_enabled": False,
        }
    )
    ensure_bucket(s3_client(isolated), isolated.assets_bucket)
    return isolated


@pytest.fixture(scope="module")
def dataset(open_settings: Settings) -> Dataset:
    data = build_dataset()
    write_dataset(open_settings, data)
    return data


@pytest.fixture(scope="module")
def api(open_settings: Settings, dataset: Dataset):
    with TestClient(create_app(open_settings)) as client:
        yield client


@pytest.fixture(scope="module")
def live_api(open_settings: Settings, dataset: Dataset) -> Iterator[str]:
    with serve_app("query_api.app:app", open_settings) as base:
        yield base


@pytest.fixture(scope="module")
def keyed_api(open_settings: Settings, dataset: Dataset) -> Iterator[str]:
    """The same data behind read keys: READ_KEY opens CLIENT only."""
    keyed = open_settings.model_copy(
        update={"auth_enabled": True, "read_keys": f"{CLIENT}:{READ_KEY},{OTHER_CLIENT}:x"}
    )
    with serve_app("query_api.app:app", keyed) as base:
        yield base
