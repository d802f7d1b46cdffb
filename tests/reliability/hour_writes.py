"""One hour of known traffic, rewritten under faults: its lake files, its materializations, a reader
polling it through the query API, and the exact comparison of what the hour holds with its truth.

The batch scenarios (a run killed mid-write, the ClickHouse server killed mid-insert) share these
pieces: the hour is built once ("old"), gains events ("new"), and a rewrite is broken on purpose
while a reader polls the hour's total.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from dagster import DagsterInstance, materialize

from heatmap_assets.assets import ALL_ASSETS
from heatmap_assets.partitions import hour_key
from heatmap_assets.resources import build_resources
from heatmap_core.clickhouse import STAGE_PREFIX, clickhouse
from heatmap_core.events import LakeEvent
from heatmap_core.lake import STAGING_PREFIX
from heatmap_core.s3 import s3_client
from heatmap_core.schema import HOURLY, SCROLL_HOURLY
from heatmap_core.settings import Settings
from tests.assets import lakedata

from .served import CellKey, served_cells

CLIENT, SCREEN = "acme", "home_v1"
OLD_EVENTS, ADDED_EVENTS = 12_000, 8_000
READ_EVERY_S = 0.05


def recent_hour() -> datetime:
    """The last whole hour: young enough that the query API never answers it from its cache of final buckets."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def land_part(settings: Settings, hour: datetime, n: int, *, offset: int, seed: int) -> list[LakeEvent]:
    """``n`` v2 events of every type and device in one lake file of the hour (Kafka partition 0 from ``offset``)."""
    events = lakedata.make_events(hour, CLIENT, SCREEN, n, partition=0, offset=offset, seed=seed, views=40)
    lakedata.write_part(settings, hour, events)
    return events


def old_hour_then_more(settings: Settings, hour: datetime) -> tuple[list[LakeEvent], list[LakeEvent]]:
    """The hour built from ``OLD_EVENTS`` (checked exact), then ``ADDED_EVENTS`` more landed in a second
    file for a rebuild to take in: (the old hour's events, all of them)."""
    old = land_part(settings, hour, OLD_EVENTS, offset=0, seed=1)
    assert materialize_hour(settings, hour)
    assert_hour_is(settings, hour, old)
    return old, old + land_part(settings, hour, ADDED_EVENTS, offset=100_000, seed=2)


def materialize_hour(settings: Settings, hour: datetime) -> bool:
    """One in-process run of heatmap_hourly for the hour (the caller's Spark session); whether it succeeded."""
    with DagsterInstance.ephemeral() as instance:
        return materialize(
            ALL_ASSETS,
            selection="heatmap_hourly",
            partition_key=hour_key(hour),
            resources=build_resources(settings),
            instance=instance,
            raise_on_error=False,
        ).success


def spark_writing(settings: Settings) -> bool:
    """A run's Spark executors have begun writing its rows under the staging prefix (it is mid-job)."""
    listing = s3_client(settings).list_objects_v2(Bucket=settings.raw_bucket, Prefix=STAGING_PREFIX, MaxKeys=1)
    return listing.get("KeyCount", 0) > 0


def bucket_write_begun(settings: Settings) -> bool:
    """A run's ClickHouse write has begun: its staging table for the hourly table exists (the staging
    insert is under way or done, REPLACE PARTITION not yet)."""
    with clickhouse(settings) as client:
        return (
            client.query(
                "SELECT count() FROM system.tables WHERE database = {db:String} AND startsWith(name, {prefix:String})",
                parameters={"db": settings.clickhouse_database, "prefix": f"{STAGE_PREFIX}{HOURLY.name}_"},
            ).result_rows[0][0]
            > 0
        )


def hour_rows(settings: Settings, hour: datetime) -> tuple[dict, dict]:
    """The hour's cells and scroll rows as ClickHouse holds them (see lakedata for the key shapes)."""
    end = hour + timedelta(hours=1)
    return (
        lakedata.table_cells(settings, HOURLY.name, hour, end),
        lakedata.table_scroll(settings, SCROLL_HOURLY.name, hour, end),
    )


def truth(events: list[LakeEvent], hour: datetime) -> tuple[dict, dict]:
    """What a clean run of the hour over ``events`` writes: its cells and scroll rows."""
    return lakedata.expected_cells(events, hour), lakedata.scroll_rows(lakedata.scroll_views(events, hour))


def served_truth(events: list[LakeEvent], hour: datetime) -> Counter[CellKey]:
    """The query API's per-type cells (devices summed) of a clean run over ``events``."""
    served: Counter[CellKey] = Counter()
    for (client_id, screen_id, event_type, _device, _bucket, cx, cy), count in truth(events, hour)[0].items():
        served[(client_id, screen_id, hour, event_type, cx, cy)] += count
    return served


def assert_hour_is(settings: Settings, hour: datetime, events: list[LakeEvent]) -> None:
    """The hour's rows are exactly a clean run's over ``events``, in ClickHouse (per type and device)
    and through GET /heatmap/hourly (per type)."""
    assert hour_rows(settings, hour) == truth(events, hour)
    expected = served_truth(events, hour)
    assert served_cells(settings, expected) == expected


@dataclass
class HourReader:
    """A reader polling GET /heatmap/hourly (all types, all devices) every ``READ_EVERY_S`` in a thread,
    keeping every answer: the totals of the 200s, and the statuses (a 503 without Retry-After apart)."""

    url: str
    hour: datetime
    totals: Counter[int] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @property
    def reads(self) -> int:
        return sum(self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status.startswith("5"))

    def _poll(self) -> None:
        params: dict[str, str | int] = {
            "client_id": CLIENT,
            "screen_id": SCREEN,
            "dt": f"{self.hour:%Y-%m-%d}",
            "hour": self.hour.hour,
        }
        with httpx.Client(base_url=self.url, timeout=30.0) as http:
            while not self._stop.is_set():
                answer = http.get("/heatmap/hourly", params=params)
                if answer.status_code == 200:
                    self.totals[sum(answer.json()["cells"]["count"])] += 1
                    self.statuses["200"] += 1
                elif answer.status_code == 503 and not answer.headers.get("retry-after"):
                    self.statuses["503 without Retry-After"] += 1
                else:
                    self.statuses[str(answer.status_code)] += 1
                self._stop.wait(READ_EVERY_S)

    def wait_for_total(self, total: int, timeout: float = 60.0) -> None:
        """Until the reader sees ``total`` once more (e.g. the rebuilt hour)."""
        self._wait(lambda: self.totals[total], 1, f"the total {total}", timeout)

    def wait_for_answers(self, status: str, more: int, timeout: float = 60.0) -> None:
        """Until the reader has had ``more`` answers of ``status`` more (e.g. reads once the server is back)."""
        self._wait(lambda: self.statuses[status], more, f"{more} more {status} answers", timeout)

    def _wait(self, seen, more: int, what: str, timeout: float) -> None:
        target = seen() + more
        deadline = time.monotonic() + timeout
        while seen() < target:
            assert time.monotonic() < deadline, f"the reader never saw {what}: {self.describe()}"
            time.sleep(READ_EVERY_S)

    def __enter__(self) -> HourReader:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def describe(self) -> str:
        totals = ", ".join(f"{total} x{n}" for total, n in sorted(self.totals.items()))
        return f"{self.reads} reads every {READ_EVERY_S * 1000:.0f} ms; totals seen: {totals}; answers {dict(self.statuses)}"
