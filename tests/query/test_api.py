"""The query API on known rows in a real (embedded) ClickHouse and the real S3 server."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec
import pytest
from litestar.testing import TestClient

from query_api.app import create_app
from query_api.models import CellColumns, Heatmap
from tests.query.conftest import (
    CLIENT,
    DAY,
    HOUR,
    OTHER_CLIENT,
    OTHER_SCREEN,
    PNG,
    READ_KEY,
    SCREEN,
    WEEK,
    Cells,
    Dataset,
)
from traffic.answers import cell_counts


def cells_of(body: dict) -> Cells:
    assert (body["grid_w"], body["grid_h"]) == (100, 200)
    return cell_counts(body)


def z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_hourly_daily_weekly_return_exactly_the_rows(api: TestClient, dataset: Dataset):
    for hour in (WEEK + 10 * HOUR, WEEK + 3 * DAY + 7 * HOUR, WEEK - 2 * HOUR):
        response = api.get(
            "/heatmap/hourly",
            params={"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{hour:%Y-%m-%d}", "hour": hour.hour},
        )
        assert response.status_code == 200
        assert cells_of(response.json()) == dataset.hours(CLIENT, SCREEN, hour, hour + HOUR)
    for day in (WEEK, WEEK + 7 * DAY):
        response = api.get(
            "/heatmap/daily", params={"client_id": CLIENT, "screen_id": OTHER_SCREEN, "dt": f"{day:%Y-%m-%d}"}
        )
        assert cells_of(response.json()) == dataset.hours(CLIENT, OTHER_SCREEN, day, day + DAY)
    response = api.get(
        "/heatmap/weekly", params={"client_id": OTHER_CLIENT, "screen_id": SCREEN, "week_start": f"{WEEK:%Y-%m-%d}"}
    )
    expected = dataset.hours(OTHER_CLIENT, SCREEN, WEEK, WEEK + 7 * DAY)
    assert expected and cells_of(response.json()) == expected


def test_cells_written_by_clickhouse_are_msgspecs_bytes_and_etag(api: TestClient, dataset: Dataset):
    """ClickHouse writes the cells' JSON (HeatmapStore.cells): the body must be byte for byte what
    msgspec writes for the CellColumns of the known rows, in (cell_x, cell_y) order, so answers and
    ETags are the same whoever writes them."""
    reads: list[tuple[str, dict[str, str | int], datetime | None, datetime | None]] = [
        ("/heatmap/hourly", {"dt": f"{WEEK:%Y-%m-%d}", "hour": 10}, WEEK + 10 * HOUR, WEEK + 11 * HOUR),
        ("/heatmap/daily", {"dt": f"{WEEK:%Y-%m-%d}"}, WEEK, WEEK + DAY),
        ("/heatmap/weekly", {"week_start": f"{WEEK:%Y-%m-%d}"}, WEEK, WEEK + 7 * DAY),
        ("/heatmap/daily", {"dt": "2025-02-01"}, None, None),  # no rows: three empty columns
    ]
    for path, params, start, end in reads:
        response = api.get(path, params={"client_id": CLIENT, "screen_id": SCREEN, **params})
        expected = dataset.hours(CLIENT, SCREEN, start, end) if start and end else {}
        assert bool(expected) == bool(start)
        ordered = sorted(expected.items())
        cells = CellColumns([x for (x, _), _ in ordered], [y for (_, y), _ in ordered], [n for _, n in ordered])
        body = msgspec.json.encode(Heatmap(cells=cells))
        assert response.content == body
        assert response.headers["etag"] == f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def test_hot_hour_is_exact(api: TestClient, dataset: Dataset):
    body = api.get(
        "/heatmap/hourly", params={"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{WEEK:%Y-%m-%d}", "hour": 10}
    ).json()
    assert body == {
        "grid_w": 100,
        "grid_h": 200,
        "type": "all",
        "device": "all",
        "cells": {"cell_x": [25, 26], "cell_y": [40, 40], "count": [500, 200]},
    }


def test_unknown_ids_and_empty_buckets_give_an_empty_map(api: TestClient, dataset: Dataset):
    for params in (
        {"client_id": "nobody", "screen_id": SCREEN, "dt": f"{WEEK:%Y-%m-%d}"},
        {"client_id": CLIENT, "screen_id": "nowhere", "dt": f"{WEEK:%Y-%m-%d}"},
        {"client_id": CLIENT, "screen_id": SCREEN, "dt": "2025-02-01"},
    ):
        response = api.get("/heatmap/daily", params=params)
        assert response.status_code == 200
        assert response.json() == {
            "grid_w": 100,
            "grid_h": 200,
            "type": "all",
            "device": "all",
            "cells": {"cell_x": [], "cell_y": [], "count": []},
        }


@pytest.mark.parametrize(
    ("start", "end", "used"),
    [
        # Sat 22:00 .. Mon 05:00 a week later: 2 loose hours, the rolled-up week,
        # the rolled-up Sunday 02-08, then hours of 02-09 (its day is not rolled up).
        (
            WEEK - 2 * HOUR,
            WEEK + 8 * DAY + 5 * HOUR,
            [("hour", WEEK - 2 * HOUR, 2), ("week", WEEK, 1), ("day", WEEK + 7 * DAY, 1), ("hour", WEEK + 8 * DAY, 5)],
        ),
        # The week cut short on its last day: whole days, then hours.
        (
            WEEK + 3 * HOUR,
            WEEK + 6 * DAY + 4 * HOUR,
            [("hour", WEEK + 3 * HOUR, 21), ("day", WEEK + DAY, 5), ("hour", WEEK + 6 * DAY, 4)],
        ),
        # A whole day not rolled up is answered by its 24 hours, never taken as empty.
        (WEEK + 8 * DAY, WEEK + 9 * DAY, [("hour", WEEK + 8 * DAY, 24)]),
        (WEEK, WEEK, []),
    ],
)
def test_range_uses_fewest_buckets_and_equals_the_hourly_sum(api: TestClient, dataset: Dataset, start, end, used):
    for client, screen in ((CLIENT, SCREEN), (CLIENT, OTHER_SCREEN), (OTHER_CLIENT, SCREEN)):
        response = api.get(
            "/heatmap/range", params={"client_id": client, "screen_id": screen, "from": z(start), "to": z(end)}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert cells_of(body) == dataset.hours(client, screen, start, end)
        assert (body["from"], body["to"]) == (z(start), z(end))
        if (client, screen) == (CLIENT, SCREEN):  # every day of it holds data, so every rollup exists
            length = {"hour": HOUR, "day": DAY, "week": 7 * DAY}
            assert body["buckets"] == [
                {"grain": grain, "start": z(s), "end": z(s + n * length[grain]), "buckets": n} for grain, s, n in used
            ]


def test_range_accepts_offsets_and_naive_utc(api: TestClient, dataset: Dataset):
    expected = dataset.hours(CLIENT, SCREEN, WEEK, WEEK + 12 * HOUR)
    day = f"{WEEK:%Y-%m-%d}"
    for start, end in ((f"{day}T01:00:00+01:00", f"{day}T12:00:00Z"), (f"{day}T00:00:00", f"{day}T12:00:00")):
        body = api.get(
            "/heatmap/range", params={"client_id": CLIENT, "screen_id": SCREEN, "from": start, "to": end}
        ).json()
        assert cells_of(body) == expected


def test_listings(api: TestClient, dataset: Dataset):
    assert api.get("/heatmap/clients").json() == {"clients": [CLIENT, OTHER_CLIENT]}

    def stored(client: str, screen: str) -> tuple[list[str], list[str]]:
        """The event types and the devices of a screen's rows."""
        keys = [key for (c, s, _), counts in dataset.hourly.items() if (c, s) == (client, screen) for key in counts]
        return sorted({t for t, _, _, _ in keys}), sorted({d for _, d, _, _ in keys})

    assert api.get("/heatmap/screens", params={"client_id": CLIENT}).json() == {
        "client_id": CLIENT,
        "screens": [SCREEN, OTHER_SCREEN],
        "dimensions": [
            {"screen_id": screen, "types": stored(CLIENT, screen)[0], "devices": stored(CLIENT, screen)[1]}
            for screen in (SCREEN, OTHER_SCREEN)
        ],
    }
    # The hand-picked hot hour alone guarantees these; the random hours add the rest.
    assert {"click", "mousemove", "rageclick", "unknown"} <= set(stored(CLIENT, SCREEN)[0])
    assert api.get("/heatmap/screens", params={"client_id": "nobody"}).json() == {
        "client_id": "nobody",
        "screens": [],
        "dimensions": [],
    }


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/heatmap/hourly", {"dt": "2026-02-30", "hour": "1"}, "dt"),
        ("/heatmap/hourly", {"dt": "02/01/2026", "hour": "1"}, "dt"),
        ("/heatmap/hourly", {"dt": "2026-02-01", "hour": "24"}, "hour"),
        ("/heatmap/hourly", {"dt": "2026-02-01", "hour": "-1"}, "hour"),
        ("/heatmap/hourly", {"dt": "2026-02-01"}, "hour"),
        ("/heatmap/daily", {"dt": "1969-12-31"}, "dt"),
        ("/heatmap/weekly", {"week_start": "2026-02-02"}, "week_start"),  # a Monday
        ("/heatmap/range", {"from": "2026-02-01T10:00:00Z", "to": "2026-02-01T09:00:00Z"}, "from"),
        ("/heatmap/range", {"from": "2026-02-01T10:30:00Z", "to": "2026-02-01T12:00:00Z"}, "from"),
        ("/heatmap/range", {"from": "2026-02-01T10:00:00Z", "to": "yesterday"}, "to"),
        ("/heatmap/range", {"from": "not-a-time", "to": "2026-02-01T10:00:00Z"}, "from"),  # not Litestar's from_
        ("/heatmap/range", {"from": "2016-02-01T10:00:00Z", "to": "2026-02-01T10:00:00Z"}, "to"),
        ("/heatmap/daily", {"dt": "2026-02-01", "client_id": "ac me"}, "client_id"),
        ("/heatmap/daily", {"dt": "2026-02-01", "screen_id": "x" * 65}, "screen_id"),
        ("/heatmap/buckets", {"grain": "month"}, "grain"),
    ],
)
def test_bad_parameters_give_400_naming_them(api: TestClient, path, params, parameter):
    response = api.get(path, params={"client_id": CLIENT, "screen_id": SCREEN, **params})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["field"]) == (400, parameter)
    assert body["detail"].startswith(f"{parameter}: ")


def test_etag_and_cache_control(api: TestClient, dataset: Dataset):
    params = {"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{WEEK:%Y-%m-%d}"}
    first = api.get("/heatmap/daily", params=params)
    # Three weeks back is long past the late-event window: final, cacheable for a day.
    assert first.headers["cache-control"] == "public, max-age=86400"
    etag = first.headers["etag"]
    again = api.get("/heatmap/daily", params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = api.get(
        "/heatmap/daily", params={**params, "dt": f"{WEEK + DAY:%Y-%m-%d}"}, headers={"If-None-Match": etag}
    )
    assert other.status_code == 200 and other.headers["etag"] != etag
    # Today can still change: revalidate every time.
    today = datetime.now(UTC)
    response = api.get("/heatmap/hourly", params={**params, "dt": f"{today:%Y-%m-%d}", "hour": today.hour})
    assert response.headers["cache-control"] == "public, no-cache" and response.headers["etag"]


def test_read_keys(open_settings, dataset: Dataset):
    keyed = open_settings.model_copy(
        update={"auth_enabled": True, "read_keys": f"{CLIENT}:{READ_KEY},{OTHER_CLIENT}:other-secret"}
    )
    params = {"client_id": CLIENT, "screen_id": SCREEN, "dt": f"{WEEK:%Y-%m-%d}"}
    with TestClient(create_app(keyed)) as api:
        assert api.get("/heatmap/daily", params=params).status_code == 401
        assert api.get("/heatmap/daily", params=params, headers={"X-Read-Key": "other-secret"}).status_code == 403
        # Header bytes beyond ASCII are just a key that opens nothing.
        assert api.get("/heatmap/daily", params=params, headers={b"X-Read-Key": b"cl\xe9"}).status_code == 403
        granted = api.get("/heatmap/daily", params=params, headers={"X-Read-Key": READ_KEY})
        assert granted.status_code == 200 and granted.headers["cache-control"].startswith("private")
        assert (
            api.get(
                "/heatmap/screens", params={"client_id": OTHER_CLIENT}, headers={"X-Read-Key": READ_KEY}
            ).status_code
            == 403
        )
        assert api.get("/heatmap/clients").status_code == 401
        assert api.get("/heatmap/clients", headers={"X-Read-Key": READ_KEY}).json() == {"clients": [CLIENT]}
        assert (
            api.put(
                f"/screenshots/{OTHER_CLIENT}/{SCREEN}",
                content=PNG,
                headers={"Content-Type": "image/png", "X-Read-Key": READ_KEY},
            ).status_code
            == 403
        )
        # A malformed id is a 400 before any key is looked at.
        assert api.get("/heatmap/daily", params={**params, "client_id": "a b"}).status_code == 400


def test_screenshot_upload_and_fetch(api: TestClient, open_settings):
    path = f"/screenshots/{CLIENT}/stored"
    assert api.get(path).status_code == 404
    stored = api.put(path, content=PNG, headers={"Content-Type": "image/png"})
    assert stored.status_code == 200, stored.text
    assert stored.json()["bytes"] == len(PNG)
    fetched = api.get(path)
    assert fetched.status_code == 200 and fetched.content == PNG
    assert fetched.headers["content-type"] == "image/png" and fetched.headers["x-content-type-options"] == "nosniff"
    assert api.get(path, headers={"If-None-Match": fetched.headers["etag"]}).status_code == 304

    from heatmap_core.s3 import s3_client

    stored_object = s3_client(open_settings).get_object(
        Bucket=open_settings.assets_bucket, Key=f"screenshots/{CLIENT}/stored"
    )
    assert stored_object["Body"].read() == PNG


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"<html><script>alert(1)</script>", "image/png", 415),
        (PNG, "text/html", 415),
        (b"", "image/png", 415),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * (5 * 1024 * 1024), "image/png", 413),
    ],
)
def test_screenshot_upload_limits(api: TestClient, body, content_type, status):
    response = api.put(f"/screenshots/{CLIENT}/refused", content=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert api.get(f"/screenshots/{CLIENT}/refused").status_code == 404


def test_health_schema_and_dashboard(api: TestClient):
    assert api.get("/health").json() == {"status": "ok"}
    paths = api.get("/schema/openapi.json").json()["paths"]
    assert {
        "/heatmap/hourly",
        "/heatmap/daily",
        "/heatmap/weekly",
        "/heatmap/range",
        "/heatmap/clients",
        "/heatmap/screens",
        "/heatmap/buckets",
        "/heatmap/scroll/hourly",
        "/heatmap/scroll/daily",
        "/heatmap/scroll/weekly",
        "/heatmap/scroll/range",
        "/screenshots/{client_id}/{screen_id}",
    } <= set(paths)
    types = ["all", "mousemove", "click", "rageclick", "scroll", "touch"]
    devices = ["all", "desktop", "tablet", "mobile", "unknown"]
    for path in (
        "hourly",
        "daily",
        "weekly",
        "range",
        "buckets",
        *(f"scroll/{g}" for g in ("hourly", "daily", "weekly", "range")),
    ):
        operation = paths[f"/heatmap/{path}"]["get"]
        assert operation["description"], path  # the handler's docstring
        assert all(parameter["description"] for parameter in operation["parameters"]), path
        enums = {p["name"]: p["schema"].get("enum") for p in operation["parameters"] if p["name"] in ("type", "device")}
        assert enums == ({"device": devices} if path.startswith("scroll") else {"type": types, "device": devices}), path
        assert "type or device" in operation["responses"]["400"]["description"]
        body = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert body == {"scroll/range": "RangeScrollMap", "range": "RangeHeatmap", "buckets": "BucketList"}.get(
            path, "ScrollMap" if path.startswith("scroll") else "Heatmap"
        )
    depth_row = api.get("/schema/openapi.json").json()["components"]["schemas"]["DepthRow"]["properties"]
    assert {name: bool(field.get("description")) for name, field in depth_row.items()} == dict.fromkeys(
        ("depth_row", "y_norm", "reached", "share", "folds"), True
    )
    assert api.get("/", follow_redirects=False).headers["location"] == "/dashboard/"
    assert (
        api.get("/?client=acme&grain=day", follow_redirects=False).headers["location"]
        == "/dashboard/?client=acme&grain=day"
    )
    assert 'id="stage"' in api.get("/dashboard/").text
    assert api.get("/vendor/heatmap.js/heatmap.min.js").status_code == 200
