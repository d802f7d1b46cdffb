"""Answers of final buckets kept in the query API's process; reads that never wait behind a long statement.

The proof that an answer came from memory is ClickHouse itself: the bucket is
replaced under the cache with other cells, and only reads that may be cached
keep answering the old ones.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

import clickhouse_connect
import msgspec
import pytest
from litestar.testing import TestClient

from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import DAILY, HOURLY, BucketTable
from heatmap_core.settings import Settings
from query_api.app import create_app
from query_api.buckets import Span
from query_api.caching import final_before
from query_api.dimensions import Selection
from query_api.store import HeatmapStore, PlannedOn, StalePlan
from traffic.answers import cell_counts

READ_KEY = "acme-read-secret"
OTHER_KEY = "globex-read-secret"
FINAL_HOUR = (datetime.now(UTC) - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)


def write_bucket(settings: Settings, table: BucketTable, start: datetime, cells: dict[tuple[int, int], int]) -> None:
    rows = [("acme", "home_v1", "click", "desktop", start, x, y, count) for (x, y), count in cells.items()]
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        replace_bucket(client, table, start, rows=rows, database=settings.clickhouse_database)


def write_hour(settings: Settings, hour: datetime, cells: dict[tuple[int, int], int]) -> None:
    write_bucket(settings, HOURLY, hour, cells)


def hourly(api: TestClient, hour: datetime, key: str = READ_KEY, **filters: str):
    return api.get(
        "/heatmap/hourly",
        params={"client_id": "acme", "screen_id": "home_v1", "dt": f"{hour:%Y-%m-%d}", "hour": hour.hour, **filters},
        headers={"X-Read-Key": key},
    )


def cells_of(answer) -> dict[tuple[int, int], int]:
    assert answer.status_code == 200, answer.text
    return cell_counts(answer.json())


def app_for(settings: Settings, entries: int = 64) -> TestClient:
    keyed = settings.model_copy(
        update={"read_keys": f"acme:{READ_KEY},globex:{OTHER_KEY}", "query_cache_entries": entries}
    )
    return TestClient(create_app(keyed))


def test_a_final_bucket_is_served_from_memory_and_a_recent_one_never(settings):
    recent_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    before, after = {(1, 2): 5, (3, 4): 7}, {(9, 9): 1}
    for hour in (FINAL_HOUR, recent_hour):
        write_hour(settings, hour, before)
    with app_for(settings) as api:
        assert cells_of(hourly(api, FINAL_HOUR)) == before
        assert cells_of(hourly(api, recent_hour)) == before
        for hour in (FINAL_HOUR, recent_hour):
            write_hour(settings, hour, after)
        assert cells_of(hourly(api, FINAL_HOUR)) == before  # from memory: ClickHouse now holds `after`
        assert cells_of(hourly(api, recent_hour)) == after  # can still change: asked every time
        # Another filter is another read: asked of ClickHouse, then kept on its own.
        assert cells_of(hourly(api, FINAL_HOUR, type="click")) == after
        # The guard runs before the cache: another client's key never gets the kept answer.
        assert hourly(api, FINAL_HOUR, key=OTHER_KEY).status_code == 403
    with app_for(settings) as api:  # a new process asks ClickHouse again
        assert cells_of(hourly(api, FINAL_HOUR)) == after


def test_the_cache_is_bounded_and_drops_the_least_recently_used(settings):
    hours = [FINAL_HOUR - timedelta(hours=i) for i in range(3)]
    for i, hour in enumerate(hours):
        write_hour(settings, hour, {(i, i): 1})
    with app_for(settings, entries=2) as api:
        for hour in hours:
            hourly(api, hour)
        assert api.app.dependencies["final_reads"].dependency().kept() == 2
        for i, hour in enumerate(hours):
            write_hour(settings, hour, {(i, i): 100})
        # hours[0] was dropped for hours[2]; hours[1] and hours[2] are still kept.
        assert cells_of(hourly(api, hours[2])) == {(2, 2): 1}
        assert cells_of(hourly(api, hours[1])) == {(1, 1): 1}
        assert cells_of(hourly(api, hours[0])) == {(0, 0): 100}
        # Reading hours[0] again took the place of the least recently used, hours[2].
        assert cells_of(hourly(api, hours[2])) == {(2, 2): 100}


def test_a_recent_range_keeps_its_final_rollups_and_checks_its_recent_ones_in_the_read(settings, monkeypatch):
    """The presence of a range's final rollups is kept; that of its recent ones is taken from the last
    read and checked by the next read itself, which asks again only when a rollup came or went.

    Each day holds one cell in an hour and another in its daily rollup (unequal on purpose, so the
    answer tells which table answered); then both rollups are dropped under the cache, and the
    recent one written again.
    """
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    final_day, recent_day = final_before("day", settings) - timedelta(days=1), today - timedelta(days=1)
    for day, (hour_cell, day_cell) in ((final_day, ((1, 1), (2, 2))), (recent_day, ((3, 3), (4, 4)))):
        write_hour(settings, day + timedelta(hours=10), {hour_cell: 1})
        write_bucket(settings, DAILY, day, {day_cell: 5})
    params = {"client_id": "acme", "screen_id": "home_v1", "from": f"{final_day:%Y-%m-%dT%H:%M:%SZ}"}
    params["to"] = f"{today:%Y-%m-%dT%H:%M:%SZ}"
    # A spy: ClickHouse still answers every presence query, counted here.
    asked: list[int] = []
    presence = HeatmapStore.presence

    async def counted(*args):
        asked.append(1)
        return await presence(*args)

    monkeypatch.setattr(HeatmapStore, "presence", counted)

    def read_range(api: TestClient) -> tuple[dict[tuple[int, int], int], list[str], int]:
        asked.clear()
        answer = api.get("/heatmap/range", params=params, headers={"X-Read-Key": READ_KEY})
        return cells_of(answer), [span["grain"] for span in answer.json()["buckets"]], len(asked)

    with app_for(settings) as api:
        # The first read asks about the final windows and the recent ones; the next one about neither.
        assert read_range(api) == ({(2, 2): 5, (4, 4): 5}, ["day", "hour", "day"], 2)
        assert read_range(api) == ({(2, 2): 5, (4, 4): 5}, ["day", "hour", "day"], 0)
        for day in (final_day, recent_day):
            write_bucket(settings, DAILY, day, {})  # no rows: the rollup's partition is dropped
        # The final day is still read from its (now empty) rollup; the recent day, whose rollup the
        # read found gone, from its hours after asking again.
        assert read_range(api) == ({(3, 3): 1}, ["day", "hour"], 1)
        assert read_range(api) == ({(3, 3): 1}, ["day", "hour"], 0)
        write_bucket(settings, DAILY, recent_day, {(4, 4): 7})  # a rollup written since: asked again
        assert read_range(api) == ({(4, 4): 7}, ["day", "hour", "day"], 1)
    with app_for(settings) as api:  # a new process asks ClickHouse again
        assert read_range(api) == ({(1, 1): 1, (4, 4): 7}, ["hour", "day"], 2)


def _range_with_a_racing_writer(settings, monkeypatch, toggles: int):
    """A range over yesterday, whose daily rollup a writer drops or writes again right after each of
    the first ``toggles`` presence queries that look at it (between the plan and its read); the
    answer, and how many presence queries looked at yesterday."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    write_hour(settings, yesterday + timedelta(hours=10), {(3, 3): 1})
    write_bucket(settings, DAILY, yesterday, {(4, 4): 5})
    presence = HeatmapStore.presence
    looked: list[int] = []

    async def racing(store, screen, windows):
        present = await presence(store, screen, windows)
        if any(table is DAILY and lo <= yesterday < hi for table, lo, hi in windows):
            looked.append(1)
            if len(looked) <= toggles:
                write_bucket(settings, DAILY, yesterday, {} if ("day", yesterday) in present else {(4, 4): 5})
        return present

    monkeypatch.setattr(HeatmapStore, "presence", racing)
    params = {"client_id": "acme", "screen_id": "home_v1"}
    params |= {"from": f"{yesterday:%Y-%m-%dT%H:%M:%SZ}", "to": f"{today:%Y-%m-%dT%H:%M:%SZ}"}
    with app_for(settings) as api:
        return api.get("/heatmap/range", params=params, headers={"X-Read-Key": READ_KEY}), len(looked)


def test_a_range_whose_rollup_changed_between_its_plan_and_its_read_is_planned_and_read_again(settings, monkeypatch):
    """The read after a fresh presence query is checked too: a rollup dropped right after the plan
    saw it is not read as an empty day; the range is planned again, on the hours."""
    answer, looked = _range_with_a_racing_writer(settings, monkeypatch, toggles=1)
    assert cells_of(answer) == {(3, 3): 1}
    assert [span["grain"] for span in answer.json()["buckets"]] == ["hour"]
    assert looked == 2


def test_a_range_whose_rollups_keep_changing_is_refused_with_nothing_read(settings, monkeypatch):
    """A writer faster than every attempt: 503 with Retry-After, never a 500 or a mixed answer."""
    answer, looked = _range_with_a_racing_writer(settings, monkeypatch, toggles=99)
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert "the rollups of the range changed under each of 3 reads" in answer.json()["detail"]
    assert looked == 3


def test_a_read_planned_on_rollups_no_longer_there_reads_nothing(settings):
    """``PlannedOn``: the cells and the scroll reach of a plan are read only while the windows hold
    exactly the rollups it was made from; otherwise ``StalePlan``, whichever way they differ."""
    day = FINAL_HOUR.replace(hour=0)
    write_bucket(settings, DAILY, day, {(4, 4): 5})
    store, screen = HeatmapStore(settings), Selection("acme", "home_v1")
    windows = ((DAILY, day, day + timedelta(days=1)),)
    spans = [Span("day", day, day + timedelta(days=1))]
    planned = PlannedOn(screen, windows, frozenset({("day", day)}))

    async def reads() -> None:
        await store.open()
        try:
            cells = msgspec.json.decode(await store.cells(screen, spans, planned))
            assert cell_counts({"cells": cells}) == {(4, 4): 5}
            assert await store.scroll(screen, spans, planned) == []  # no scroll rows in the rollup, and no refusal
            for wrong in (frozenset(), frozenset({("day", day), ("day", day + timedelta(days=1))})):
                for read in (store.cells, store.scroll):
                    with pytest.raises(StalePlan, match="the rollups changed since the range was planned"):
                        await read(screen, spans, PlannedOn(screen, windows, wrong))
        finally:
            await store.close()

    asyncio.run(reads())


def test_a_read_does_not_wait_behind_a_long_statement(settings):
    """A statement that holds the ClickHouse server for 4 s (as a large insert or a raw recount
    does) delays no dashboard read: the server and the API each run requests in their own threads."""
    recent_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    write_hour(settings, recent_hour, {(5, 5): 2})
    long_client = clickhouse_connect.get_client(dsn=settings.clickhouse_url, send_receive_timeout=60)

    def long_statement() -> None:
        long_client.query("SELECT sleepEachRow(0.5) FROM numbers(8) SETTINGS max_block_size = 1")

    with app_for(settings) as api:
        cells_of(hourly(api, recent_hour))  # the app and its thread's client are up
        holder = threading.Thread(target=long_statement)
        holder.start()
        time.sleep(0.5)  # the statement is in the server
        started = time.monotonic()
        for _ in range(5):
            assert cells_of(hourly(api, recent_hour)) == {(5, 5): 2}
        took = time.monotonic() - started
        assert holder.is_alive(), "the long statement ended first: the reads proved nothing"
        holder.join()
    assert took < 2.5, f"5 reads took {took:.2f} s beside a 4 s statement"
