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
from heatmap_core.events import DEVICES, EVENT_TYPES
from heatmap_core.s3 import ensure_bucket, s3_client
from heatmap_core.schema import SCROLL_TABLES, TABLES
from heatmap_core.settings import Settings
from query_api.app import create_app
from tests.conftest import day_of, serve_app, week_of

CLIENT, SCREEN, OTHER_SCREEN, OTHER_CLIENT = "acme", "home_v1", "pricing", "globex"
HOUR, DAY = timedelta(hours=1), timedelta(days=1)
READ_KEY = "acme-read-secret"
# The smallest valid PNG header is enough for the store's signature check.
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32

Cells = Counter[tuple[int, int]]  # (cell_x, cell_y) -> count
Counts = Counter[tuple[str, str, int, int]]  # (event_type, device, cell_x, cell_y) -> count
# Types the generated rows carry: every filterable type, and `unknown` (rows migrated from before v2),
# which only type=all reads.
STORED_TYPES = (*EVENT_TYPES, "unknown")


@dataclass(frozen=True)
class View:
    """One page view's scroll in an hour: the deepest row it reached and its fold row."""

    device: str
    deepest: int
    fold: int


def scroll_rows(views: list[View]) -> dict[tuple[str, int], tuple[int, int]]:
    """(device, depth_row) -> (reached, folds), as the hourly job counts them (docs/ARCHITECTURE.md, Heatmap v2)."""
    reached = Counter((view.device, row) for view in views for row in range(view.deepest + 1))
    folds = Counter((view.device, view.fold) for view in views)
    return {position: (reached[position], folds[position]) for position in sorted(reached.keys() | folds.keys())}


# The Sunday three to four weeks back: inside the hourly table's 90-day TTL (older
# rows vanish on insert) and long past the window in which buckets may still change.
WEEK = week_of(datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 21 * DAY)
HOT_HOUR = WEEK + 10 * HOUR

# Scroll views of (CLIENT, SCREEN) per hour: the hand-computed answers of tests/query/test_scroll.py
# are worked out from these. WEEK and its days are rolled up, the Monday after is not.
SCROLL_VIEWS: dict[datetime, list[View]] = {
    HOT_HOUR: [
        View("desktop", 60, 40),
        View("desktop", 100, 40),
        View("desktop", 100, 50),
        View("desktop", 150, 60),
        View("mobile", 199, 20),
        View("mobile", 120, 30),
    ],
    WEEK + 15 * HOUR: [View("desktop", 30, 30)],
    WEEK + DAY + 3 * HOUR: [View("mobile", 199, 25), View("mobile", 199, 25), View("mobile", 150, 22)],
    WEEK + 8 * DAY + 2 * HOUR: [View("tablet", 80, 60), View("tablet", 80, 70)],
}


@dataclass
class Dataset:
    """Hourly counts per (client, screen, hour), scroll views per (client, screen, hour), and the
    rollups written from them."""

    hourly: dict[tuple[str, str, datetime], Counts] = field(default_factory=dict)
    views: dict[tuple[str, str, datetime], list[View]] = field(default_factory=dict)
    rolled_days: set[datetime] = field(default_factory=set)
    rolled_weeks: set[datetime] = field(default_factory=set)

    def hours(
        self, client: str, screen: str, start: datetime, end: datetime, type_: str = "all", device: str = "all"
    ) -> Cells:
        """The expected cells for [start, end) of a type and device: the plain sum of the hourly rows."""
        total = Cells()
        for (c, s, hour), counts in self.hourly.items():
            if c == client and s == screen and start <= hour < end:
                for (t, d, x, y), n in counts.items():
                    if type_ in ("all", t) and device in ("all", d):
                        total[(x, y)] += n
        return total

    def _targets(self, hour: datetime) -> list[tuple[str, datetime]]:
        targets = [("hour", hour)]
        if day_of(hour) in self.rolled_days:
            targets.append(("day", day_of(hour)))
        if week_of(hour) in self.rolled_weeks:
            targets.append(("week", week_of(hour)))
        return targets

    def rows(self) -> dict[str, list[tuple]]:
        """Rows per cell table, rollups summed from the hours like the pipeline does."""
        summed: dict[str, Counter] = defaultdict(Counter)
        for (client, screen, hour), counts in self.hourly.items():
            for grain, start in self._targets(hour):
                for (t, d, x, y), n in counts.items():
                    summed[grain][(client, screen, t, d, start, x, y)] += n
        return {grain: [(*key, n) for key, n in sorted(counts.items())] for grain, counts in summed.items()}

    def scroll_rows(self) -> dict[str, list[tuple]]:
        """Rows per scroll table: each hour's reach, rollups the sums of their hours'."""
        summed: dict[str, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
        for (client, screen, hour), views in self.views.items():
            for (device, row), (reached, folds) in scroll_rows(views).items():
                for grain, start in self._targets(hour):
                    sums = summed[grain][(client, screen, device, start, row)]
                    sums[0] += reached
                    sums[1] += folds
        return {grain: [(*key, *sums) for key, sums in sorted(rows.items())] for grain, rows in summed.items()}


def build_dataset() -> Dataset:
    """Scattered hours from the Saturday before WEEK to the Monday after it, for two
    screens and two clients, each cell of a random stored type and device.

    Rolled up: WEEK and its days, plus the Sunday after; not (yet) rolled up:
    the Saturday before and the Monday after.
    """
    rng, dimensions = random.Random(6), random.Random(12)
    data = Dataset()
    hour = WEEK - 2 * HOUR
    while hour < WEEK + 8 * DAY + 6 * HOUR:
        for client, screen in ((CLIENT, SCREEN), (CLIENT, OTHER_SCREEN), (OTHER_CLIENT, SCREEN)):
            if rng.random() < 0.3:
                cells = {
                    (rng.randrange(100), rng.randrange(200)): rng.randrange(1, 50) for _ in range(rng.randrange(1, 6))
                }
                data.hourly[(client, screen, hour)] = Counts(
                    {
                        (dimensions.choice(STORED_TYPES), dimensions.choice(DEVICES), x, y): n
                        for (x, y), n in cells.items()
                    }
                )
        hour += HOUR
    # A hot cell in one hour the dashboard test points at, of several types and devices that sum to
    # (25, 40): 500 and (26, 40): 200; (75, 160) stays empty everywhere.
    data.hourly[(CLIENT, SCREEN, HOT_HOUR)] = Counts(
        {
            ("click", "desktop", 25, 40): 300,
            ("mousemove", "desktop", 25, 40): 150,
            ("rageclick", "mobile", 25, 40): 50,
            ("mousemove", "unknown", 26, 40): 120,
            ("mousemove", "desktop", 26, 40): 80,
        }
    )
    for counts in data.hourly.values():
        for key in [key for key in counts if 70 <= key[2] <= 80 and 150 <= key[3] <= 170]:
            del counts[key]
    data.views = {(CLIENT, SCREEN, hour): views for hour, views in SCROLL_VIEWS.items()}
    # Another tenant's views in the same hour, which no answer for CLIENT may include.
    data.views[(OTHER_CLIENT, SCREEN, HOT_HOUR)] = [View("desktop", 10, 10)]
    data.rolled_weeks = {WEEK}
    data.rolled_days = {WEEK + i * DAY for i in range(8)}
    return data


def write_dataset(settings: Settings, data: Dataset) -> None:
    """One plain insert per table: the database is fresh, so nothing needs replacing
    (a replace_bucket per bucket costs minutes on a busy 2-core machine)."""
    database = settings.clickhouse_database
    with clickhouse(settings) as client:
        apply_schema(client, database)
        for tables, rows in ((TABLES, data.rows()), (SCROLL_TABLES, data.scroll_rows())):
            for grain, grain_rows in rows.items():
                table = tables[grain]
                # The hourly tables have a partition per hour, more than ClickHouse's default 100 per insert.
                client.insert(
                    f"{database}.{table.name}",
                    grain_rows,
                    column_names=table.column_names,
                    settings={"max_partitions_per_insert_block": 0},
                )


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
