"""GET /heatmap/freshness: when the client's rows in the partitions that can hold a range's buckets were
last written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from heatmap_core.clickhouse import clickhouse, replace_bucket
from heatmap_core.schema import TABLES
from heatmap_core.timeutil import naive_utc
from tests.conftest import day_of, week_of
from tests.query.conftest import CLIENT, DAY, OTHER_CLIENT, SCREEN

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
