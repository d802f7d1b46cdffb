"""When an answer becomes cacheable, what the cache may key it on, and the query API's CORS."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
from litestar.testing import TestClient

from heatmap_core.settings import Settings
from query_api.caching import is_final
from tests.query.conftest import CLIENT, READ_KEY, SCREEN, WEEK

# docs/ARCHITECTURE.md: a bucket is final once ingestion's late window (72 h) and 6 h to settle have passed its end.
LATE_WINDOW = timedelta(hours=72)
SETTLE = timedelta(hours=6)
FINAL = "max-age=86400"


def test_a_bucket_is_final_exactly_at_end_plus_late_window_plus_settle():
    end = datetime(2026, 3, 1, 13, tzinfo=UTC)
    settings = Settings(event_time_past_hours=72)
    assert is_final(end, settings, now=end + LATE_WINDOW + SETTLE)
    assert not is_final(end, settings, now=end + LATE_WINDOW + SETTLE - timedelta(microseconds=1))


def _hour_boundary_safe_now() -> datetime:
    """Now, unless an hour boundary is about to pass (the answer would straddle it): then just after it."""
    now = datetime.now(UTC)
    if now.minute == 59 and now.second >= 55:
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    return now


def test_the_last_final_hour_is_cached_and_the_next_one_revalidates(api: TestClient):
    now = _hour_boundary_safe_now()
    last_final = (now - timedelta(hours=1) - LATE_WINDOW - SETTLE).replace(minute=0, second=0, microsecond=0)
    answers = {}
    for hour in (last_final - timedelta(hours=1), last_final, last_final + timedelta(hours=1)):
        response = api.get(
            "/heatmap/hourly",
            params={"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{hour:%Y-%m-%d}", "hour": hour.hour},
        )
        assert response.status_code == 200
        answers[hour] = response.headers["cache-control"]
    assert list(answers.values()) == [f"public, {FINAL}", f"public, {FINAL}", "public, no-cache"]


def test_the_day_becomes_cacheable_once_its_last_hour_is_final(api: TestClient):
    now = _hour_boundary_safe_now()
    last_final_day = (now - timedelta(days=1) - LATE_WINDOW - SETTLE).replace(hour=0, minute=0, second=0, microsecond=0)
    controls = [
        api.get("/heatmap/daily", params={"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{day:%Y-%m-%d}"}).headers[
            "cache-control"
        ]
        for day in (last_final_day, last_final_day + timedelta(days=1))
    ]
    assert controls == [f"public, {FINAL}", "public, no-cache"]


def test_answers_vary_on_the_read_key_and_are_private_behind_keys(keyed_api: str):
    params = {"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{WEEK:%Y-%m-%d}"}
    response = httpx.get(f"{keyed_api}/heatmap/daily", params=params, headers={"X-Read-Key": READ_KEY})
    assert response.status_code == 200
    assert response.headers["vary"] == "X-Read-Key"
    assert response.headers["cache-control"] == f"private, {FINAL}"
    # The ETag alone revalidates only with the key: without it the answer is refused, not a 304.
    etag = response.headers["etag"]
    again = httpx.get(
        f"{keyed_api}/heatmap/daily", params=params, headers={"X-Read-Key": READ_KEY, "If-None-Match": etag}
    )
    assert again.status_code == 304 and again.headers["vary"] == "X-Read-Key"
    assert httpx.get(f"{keyed_api}/heatmap/daily", params=params, headers={"If-None-Match": etag}).status_code == 401


def test_cors_admits_the_configured_origins_only(api: TestClient, open_settings: Settings):
    origin = "http://localhost:8001"
    assert origin in open_settings.cors_origin_list
    preflight = api.options(
        "/heatmap/daily",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-Read-Key",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "x-read-key" in preflight.headers["access-control-allow-headers"].lower()
    params = {"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{WEEK:%Y-%m-%d}"}
    answer = api.get("/heatmap/daily", params=params, headers={"Origin": origin})
    assert answer.headers["access-control-allow-origin"] == origin
    # The dashboard revalidates with the ETag, so the browser must let it read that header.
    assert "etag" in answer.headers["access-control-expose-headers"].lower()

    stranger = "http://evil.example"
    refused = api.options("/heatmap/daily", headers={"Origin": stranger, "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in refused.headers
    assert (
        "access-control-allow-origin"
        not in api.get("/heatmap/daily", params=params, headers={"Origin": stranger}).headers
    )
