"""GET /heatmap/freshness: when the client's view of a bucket overlapping a range last changed (the write
log ``replace_bucket`` keeps)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from heatmap_core.clickhouse import clickhouse, replace_bucket
from heatmap_core.schema import TABLES
from heatmap_core.timeutil import naive_utc
from tests.conftest import day_of, week_of
from tests.query.conftest import CLIENT, DAY, HOUR, OTHER_CLIENT, SCREEN

# Forty days back: older than every row of the module's dataset (at most 28 days back, and a week
# partition reaches 6 days), inside the daily and weekly tables' retention.
QUIET_DAY = day_of(datetime.now(UTC) - 40 * DAY)
QUIET_WEEK = week_of(QUIET_DAY - 14 * DAY)


def _freshness(api, start: datetime, end: datetime):
    response = api.get(
        "/heatmap/freshness", params={"client_id": CLIENT, "from": start.isoformat(), "to": end.isoformat()}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _write(settings, grain: str, start: datetime, *clients: str) -> None:
    """The bucket replaced by one cell of each of ``clients`` (default: the module's client)."""
    rows = [(client_id, SCREEN, "click", "desktop", naive_utc(start), 1, 1, 3) for client_id in clients or (CLIENT,)]
    with clickhouse(settings) as client:
        replace_bucket(client, TABLES[grain], start, rows=rows, database=settings.clickhouse_database)


def test_freshness_is_the_latest_write_of_the_ranges_partitions(api, open_settings):
    assert _freshness(api, QUIET_DAY, QUIET_DAY + DAY) == {
        "client_id": CLIENT,
        "from": f"{QUIET_DAY:%Y-%m-%dT%H:%M:%SZ}",
        "to": f"{QUIET_DAY + DAY:%Y-%m-%dT%H:%M:%SZ}",
        "materialized_at": None,
    }
    # Another tenant's bucket in the same partition: nothing of this client's was written.
    _write(open_settings, "day", QUIET_DAY, OTHER_CLIENT)
    assert _freshness(api, QUIET_DAY, QUIET_DAY + DAY)["materialized_at"] is None
    before = datetime.now(UTC).replace(microsecond=0)
    _write(open_settings, "day", QUIET_DAY, CLIENT, OTHER_CLIENT)
    after = datetime.now(UTC)
    written = datetime.fromisoformat(_freshness(api, QUIET_DAY, QUIET_DAY + DAY)["materialized_at"])
    assert before - timedelta(seconds=1) <= written <= after
    # The day after is another partition: still nothing written there.
    assert _freshness(api, QUIET_DAY + DAY, QUIET_DAY + 2 * DAY)["materialized_at"] is None

    # A week's bucket lives in its Sunday's partition; a range starting later in that week reads it.
    assert _freshness(api, QUIET_WEEK + 3 * DAY, QUIET_WEEK + 4 * DAY)["materialized_at"] is None
    _write(open_settings, "week", QUIET_WEEK)
    assert _freshness(api, QUIET_WEEK + 3 * DAY, QUIET_WEEK + 4 * DAY)["materialized_at"] is not None
    assert _freshness(api, QUIET_WEEK + 7 * DAY, QUIET_WEEK + 8 * DAY)["materialized_at"] is None


def test_freshness_refuses_bad_ranges_naming_the_field(api):
    bad = {"from": "2026-02-01T10:30:00Z", "to": "2026-02-01T12:00:00Z"}
    response = api.get("/heatmap/freshness", params={"client_id": CLIENT, **bad})
    assert response.status_code == 400 and response.json()["field"] == "from"
    response = api.get("/heatmap/freshness", params={"from": "2026-02-01T10:00:00Z", "to": "2026-02-01T12:00:00Z"})
    assert response.status_code == 400 and response.json()["field"] == "client_id"


def _materialized_at(api, start: datetime, end: datetime) -> datetime | None:
    at = _freshness(api, start, end)["materialized_at"]
    return None if at is None else datetime.fromisoformat(at)


def _next_second() -> None:
    """Sleep past the current second: materialized_at has a resolution of one second."""
    time.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)


# Days of their own, away from the first test's days and weeks.
REWRITTEN_DAY = QUIET_DAY - 3 * DAY
VANISHED_DAY = QUIET_DAY - 4 * DAY


def test_freshness_moves_when_the_clients_bucket_is_rewritten_and_not_on_another_clients_write(api, open_settings):
    _write(open_settings, "day", REWRITTEN_DAY)
    first = _materialized_at(api, REWRITTEN_DAY, REWRITTEN_DAY + DAY)
    assert first is not None
    _next_second()
    # Another tenant's hour inside the day and another tenant's day after it: the client's answer stays.
    _write(open_settings, "hour", REWRITTEN_DAY + 5 * HOUR, OTHER_CLIENT)
    _write(open_settings, "day", REWRITTEN_DAY + DAY, OTHER_CLIENT)
    assert _materialized_at(api, REWRITTEN_DAY, REWRITTEN_DAY + 2 * DAY) == first
    before = datetime.now(UTC).replace(microsecond=0)
    _write(open_settings, "day", REWRITTEN_DAY)
    rewritten = _materialized_at(api, REWRITTEN_DAY, REWRITTEN_DAY + DAY)
    assert rewritten is not None and first < before <= rewritten <= datetime.now(UTC)
    # An hour of the client inside the day counts for the ranges holding it, and only for them.
    _next_second()
    _write(open_settings, "hour", REWRITTEN_DAY + 7 * HOUR)
    hour = _materialized_at(api, REWRITTEN_DAY + 7 * HOUR, REWRITTEN_DAY + 8 * HOUR)
    assert hour is not None and hour > rewritten
    assert _materialized_at(api, REWRITTEN_DAY, REWRITTEN_DAY + DAY) == hour
    assert _materialized_at(api, REWRITTEN_DAY + 8 * HOUR, REWRITTEN_DAY + 9 * HOUR) == rewritten  # the day only


def test_freshness_moves_for_a_client_whose_rows_vanished_from_the_bucket(api, open_settings):
    _write(open_settings, "day", VANISHED_DAY, CLIENT, OTHER_CLIENT)
    first = _materialized_at(api, VANISHED_DAY, VANISHED_DAY + DAY)
    assert first is not None
    _next_second()
    # The bucket rewritten without the client's rows: its view of the bucket changed (its cells are gone).
    _write(open_settings, "day", VANISHED_DAY, OTHER_CLIENT)
    vanished = _materialized_at(api, VANISHED_DAY, VANISHED_DAY + DAY)
    assert vanished is not None and vanished > first
    # Emptied altogether (DROP PARTITION): the other client's view changed too, this one's did not.
    _next_second()
    with clickhouse(open_settings) as client:
        replace_bucket(client, TABLES["day"], VANISHED_DAY, rows=[], database=open_settings.clickhouse_database)
    assert _materialized_at(api, VANISHED_DAY, VANISHED_DAY + DAY) == vanished


def test_an_empty_range_was_never_written(api, open_settings):
    _write(open_settings, "day", REWRITTEN_DAY)
    assert _materialized_at(api, REWRITTEN_DAY, REWRITTEN_DAY + DAY) is not None
    assert _freshness(api, REWRITTEN_DAY, REWRITTEN_DAY)["materialized_at"] is None
    assert _freshness(api, REWRITTEN_DAY + 5 * HOUR, REWRITTEN_DAY + 5 * HOUR)["materialized_at"] is None
