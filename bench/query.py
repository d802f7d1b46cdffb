"""Serving a day: GET /heatmap/daily through the query API (validation, a query to the
ClickHouse server over HTTP, JSON) against the same parameterized query sent directly."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from bench.common import Result, median_seconds, uvicorn_app
from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import DAILY
from heatmap_core.settings import Settings
from heatmap_core.timeutil import day_start, naive_utc

REQUESTS = 30
DIRECT_SQL = (
    "SELECT cell_x, cell_y, count FROM {db:Identifier}.{table:Identifier} WHERE client_id = {client:String} "
    "AND screen_id = {screen:String} AND bucket_start = {start:DateTime('UTC')} ORDER BY cell_x, cell_y"
)


def run(settings: Settings) -> list[Result]:
    settings = settings.model_copy(
        update={"clickhouse_database": f"bench_{uuid.uuid4().hex[:8]}", "auth_enabled": False}
    )
    day = day_start(datetime.now(UTC)) - timedelta(days=1)
    rng = random.Random(3)
    rows = [
        ("bench", "home", "mousemove", "desktop", day, x, y, rng.randint(1, 500))
        for x in range(100)
        for y in range(200)
        if rng.random() < 0.5
    ]
    with clickhouse(settings) as client:
        apply_schema(client, settings.clickhouse_database)
        replace_bucket(client, DAILY, day, rows=rows, database=settings.clickhouse_database)

    params = {"client_id": "bench", "screen_id": "home", "dt": f"{day:%Y-%m-%d}"}
    with uvicorn_app("query_api.app:app", settings) as served, httpx.Client(timeout=30) as http:
        url = served.url

        def via_api() -> None:
            response = http.get(f"{url}/heatmap/daily", params=params)
            response.raise_for_status()
            assert len(response.json()["cells"]["count"]) == len(rows)

        via_api()
        api_ms = median_seconds(via_api, REQUESTS) * 1000

    def direct() -> None:
        with clickhouse(settings) as client:
            result = client.query(
                DIRECT_SQL,
                parameters={
                    "db": settings.clickhouse_database,
                    "table": DAILY.name,
                    "client": "bench",
                    "screen": "home",
                    "start": naive_utc(day),
                },
            ).result_rows
            assert len(result) == len(rows)

    direct()
    direct_ms = median_seconds(direct, REQUESTS) * 1000
    return [
        Result(
            "query",
            f"GET /heatmap/daily ({len(rows):,} cells)",
            api_ms,
            "the same query, warm clickhouse-connect client",
            direct_ms,
            "ms",
            False,
        )
    ]
