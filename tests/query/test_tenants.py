"""Tenant isolation of the query API, as an outside probe tries it: repeated or malformed
client ids, no key, another tenant's key, duplicated key headers. The answer is a 400
or a 401/403, never another tenant's data (the probe once read globex with no key)."""

from __future__ import annotations

import http.client
from urllib.parse import quote, urlsplit

import httpx
import pytest

from .conftest import CLIENT, DAY, HOUR, OTHER_CLIENT, PNG, READ_KEY, SCREEN, WEEK

OTHER_KEY = "x"  # keyed_api's read key of OTHER_CLIENT

ROUTES = {
    "hourly": f"/heatmap/hourly?screen_id={SCREEN}&dt={WEEK + 10 * HOUR:%Y-%m-%d}&hour=10",
    "daily": f"/heatmap/daily?screen_id={SCREEN}&dt={WEEK:%Y-%m-%d}",
    "weekly": f"/heatmap/weekly?screen_id={SCREEN}&week_start={WEEK:%Y-%m-%d}",
    "range": f"/heatmap/range?screen_id={SCREEN}&from={WEEK:%Y-%m-%dT%H:%M:%SZ}&to={WEEK + 8 * DAY:%Y-%m-%dT%H:%M:%SZ}",
    "scroll hourly": f"/heatmap/scroll/hourly?screen_id={SCREEN}&dt={WEEK + 10 * HOUR:%Y-%m-%d}&hour=10",
    "scroll daily": f"/heatmap/scroll/daily?screen_id={SCREEN}&dt={WEEK:%Y-%m-%d}&device=mobile",
    "scroll weekly": f"/heatmap/scroll/weekly?screen_id={SCREEN}&week_start={WEEK:%Y-%m-%d}",
    "scroll range": f"/heatmap/scroll/range?screen_id={SCREEN}&from={WEEK:%Y-%m-%dT%H:%M:%SZ}&to={WEEK + 8 * DAY:%Y-%m-%dT%H:%M:%SZ}",
    "filtered hourly": f"/heatmap/hourly?screen_id={SCREEN}&dt={WEEK + 10 * HOUR:%Y-%m-%d}&hour=10&type=click&device=desktop",
    "freshness": f"/heatmap/freshness?from={WEEK:%Y-%m-%dT%H:%M:%SZ}&to={WEEK + 8 * DAY:%Y-%m-%dT%H:%M:%SZ}",
    "screens": "/heatmap/screens?",
    "buckets": f"/heatmap/buckets?screen_id={SCREEN}&grain=hour",
    "filtered buckets": f"/heatmap/buckets?screen_id={SCREEN}&grain=day&type=rageclick&device=mobile",
}
REPEATS = {
    "ours then theirs": [CLIENT, OTHER_CLIENT],
    "theirs then ours": [OTHER_CLIENT, CLIENT],
    "empty first": ["", OTHER_CLIENT],
    "invalid first": ["a b", OTHER_CLIENT],
}
KEYS = {"no key": {}, "our key": {"X-Read-Key": READ_KEY}, "their key": {"X-Read-Key": OTHER_KEY}}


def _with_clients(route: str, clients: list[str]) -> str:
    return route + "".join(f"&client_id={quote(client)}" for client in clients)


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("repeat", REPEATS)
@pytest.mark.parametrize("route", ROUTES)
def test_repeated_client_id_is_refused_naming_it(keyed_api: str, route, repeat, key):
    response = httpx.get(keyed_api + _with_clients(ROUTES[route], REPEATS[repeat]), headers=KEYS[key])

    assert response.status_code == 400, response.text
    assert response.json()["field"] == "client_id"


@pytest.mark.parametrize("route", ROUTES)
def test_single_client_id_needs_that_clients_key(keyed_api: str, route):
    def status(client: str, headers: dict) -> int:
        return httpx.get(keyed_api + _with_clients(ROUTES[route], [client]), headers=headers).status_code

    assert status(OTHER_CLIENT, {}) == 401
    assert status(OTHER_CLIENT, {"X-Read-Key": READ_KEY}) == 403
    assert status(OTHER_CLIENT, {"X-Read-Key": "no-such-key"}) == 403
    assert status(CLIENT, {"X-Read-Key": READ_KEY}) == 200
    # A malformed id is refused for what it is, with or without a key, and never skips the check.
    assert status("a b", {}) == 400 and status("a b", {"X-Read-Key": READ_KEY}) == 400


def test_screenshots_are_authorized_on_the_path_client(keyed_api: str):
    ours, theirs = f"/screenshots/{CLIENT}/{SCREEN}", f"/screenshots/{OTHER_CLIENT}/{SCREEN}"
    png = {"Content-Type": "image/png"}
    stored = httpx.put(keyed_api + theirs, content=PNG, headers={**png, "X-Read-Key": OTHER_KEY})
    assert stored.status_code == 200

    # A query client_id does not override the path's: our key cannot reach their screenshot.
    assert httpx.get(f"{keyed_api}{theirs}?client_id={CLIENT}", headers={"X-Read-Key": READ_KEY}).status_code == 403
    put = httpx.put(f"{keyed_api}{theirs}?client_id={CLIENT}", content=PNG, headers={**png, "X-Read-Key": READ_KEY})
    assert put.status_code == 403
    assert httpx.get(keyed_api + theirs).status_code == 401
    repeated = httpx.get(f"{keyed_api}{ours}?client_id={CLIENT}&client_id={CLIENT}", headers={"X-Read-Key": READ_KEY})
    assert (repeated.status_code, repeated.json()["field"]) == (400, "client_id")
    assert httpx.get(keyed_api + theirs, headers={"X-Read-Key": OTHER_KEY}).content == PNG


def test_listing_shows_only_the_keys_clients(keyed_api: str):
    assert httpx.get(f"{keyed_api}/heatmap/clients").status_code == 401
    assert httpx.get(f"{keyed_api}/heatmap/clients", headers={"X-Read-Key": "no-such-key"}).status_code == 403
    mine = httpx.get(f"{keyed_api}/heatmap/clients", headers={"X-Read-Key": READ_KEY})
    assert mine.json() == {"clients": [CLIENT]}


def test_a_read_key_header_sent_twice_is_refused(keyed_api: str):
    """httpx merges repeated headers; a raw connection sends both, as a hostile client would."""
    url = urlsplit(keyed_api)
    assert url.hostname is not None, keyed_api
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        connection.putrequest("GET", _with_clients(ROUTES["screens"], [OTHER_CLIENT]))
        connection.putheader("X-Read-Key", READ_KEY)
        connection.putheader("X-Read-Key", OTHER_KEY)
        connection.endheaders()
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status in (400, 401, 403), body
    assert OTHER_CLIENT.encode() not in body or b'"field"' in body


def test_options_allows_every_method_of_the_path(keyed_api: str):
    answer = httpx.options(f"{keyed_api}/screenshots/{CLIENT}/{SCREEN}")
    assert answer.status_code == 204
    assert set(answer.headers["allow"].split(", ")) == {"GET", "OPTIONS", "PUT"}
