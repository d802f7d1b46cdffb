"""Tenants isolated on both live APIs: a key opens its own client only, listings included, and
CORS answers the configured origins only.

Guarantee: a write key publishes batches of its own client_id only (another client's batch is a
403 and reaches no topic); a read key reads heatmaps, lists clients, screens and buckets, asks
freshness, and uploads and downloads screenshots of its own client only; no answer given to one
tenant's key carries another tenant's client or screen names or screenshot bytes; an origin not
configured gets no Access-Control-Allow-Origin, on a preflight or a simple request, on either API.

Measured: both APIs under uvicorn as the stack runs them, the ingestion API on the test's own
topic (read from the beginning afterwards: exactly the batches each key may write), the query
API on two tenants' known rows (tests/reliability/tenants.py), whose screen names appear in no
row of the other's. A probe is one request; a leak is a probe answered with a status that opens
data it should not, or whose body holds the other tenant's names or bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest

from heatmap_core.settings import Settings
from tests.conftest import serve_app
from tests.ingestion.conftest import WRITE_KEYS, WRITE_KEYS_SETTING, make_batch, read_topic

from .figures import Figures, record
from .tenants import ACME, GLOBEX, HOUR, READ_KEYS, SCREENS, rfc3339, write_tenants

pytestmark = pytest.mark.reliability

# Each tenant's screenshot: distinct bytes, so a body holding the other's is recognised.
SCREENSHOTS = {client: b"\x89PNG\r\n\x1a\n" + client.encode() * 8 for client in (ACME, GLOBEX)}
CONFIGURED_ORIGIN = "http://localhost:8001"
# Origins a careless matcher (prefix, suffix, scheme- or case-blind) would admit.
STRANGE_ORIGINS = [
    "http://evil.example",
    "null",
    "http://localhost:8001.evil.example",
    "http://evil.localhost:8001",
    "http://localhost:80010",
    "https://localhost:8001",
    "http://localhost:8001/",
    "http://localhost",
    "http://127.0.0.2:8001",
]


@dataclass
class Probes:
    """Requests made and the leaks among them."""

    sent: int = 0
    server_errors: int = 0
    leaks: list[str] = field(default_factory=list)

    def expect(self, what: str, response: httpx.Response, status: int, *, foreign: list[bytes]) -> None:
        """A leak: any status but ``status`` (a 200 where a refusal was due opens data), or any of
        ``foreign`` (the other tenant's names and bytes) in the body."""
        self.sent += 1
        self.server_errors += response.status_code >= 500
        found = [item for item in foreign if item in response.content]
        if response.status_code != status or found:
            self.leaks.append(f"{what}: {response.status_code} holding {found} {response.content[:200]!r}")

    def holds(self, what: str, answer: object, expected: object) -> None:
        """An answer's content must be exactly ``expected`` (a listing with more in it leaks)."""
        if answer != expected:
            self.leaks.append(f"{what}: {answer!r}, expected {expected!r}")


def _foreign(client: str) -> list[bytes]:
    """What no answer to ``client``'s key may hold: the other tenant's id, screen names and screenshot."""
    other = GLOBEX if client == ACME else ACME
    return [other.encode(), *(screen.encode() for screen in SCREENS[other]), SCREENSHOTS[other]]


def _unasked(other: str) -> list[bytes]:
    """What a refusal of a request naming ``other``'s first screen may not hold (it may echo what was asked)."""
    return [screen.encode() for screen in SCREENS[other][1:]] + [SCREENSHOTS[other]]


def _reads(client: str) -> dict[str, dict[str, str]]:
    """Every read of the query API for ``client``'s first screen, with valid parameters."""
    dt, span = f"{HOUR:%Y-%m-%d}", {"from": rfc3339(HOUR), "to": rfc3339(HOUR + timedelta(hours=1))}
    screen = {"client_id": client, "screen_id": SCREENS[client][0]}
    return {
        "/heatmap/hourly": {**screen, "dt": dt, "hour": str(HOUR.hour)},
        "/heatmap/daily": {**screen, "dt": dt},
        "/heatmap/range": {**screen, **span},
        "/heatmap/scroll/hourly": {**screen, "dt": dt, "hour": str(HOUR.hour)},
        "/heatmap/screens": {"client_id": client},
        "/heatmap/buckets": {**screen, "grain": "hour"},
        "/heatmap/freshness": {"client_id": client, **span},
    }


def _check_read_keys(base: str, probes: Probes) -> None:
    with httpx.Client(base_url=base, timeout=60) as http:
        for client, key in READ_KEYS.items():
            other = GLOBEX if client == ACME else ACME
            headers = {"X-Read-Key": key}
            foreign = _foreign(client)
            listed = http.get("/heatmap/clients", headers=headers)
            probes.expect(f"{client} lists clients", listed, 200, foreign=foreign)
            probes.holds(f"{client}'s client listing", listed.json(), {"clients": [client]})
            screens = http.get("/heatmap/screens", params={"client_id": client}, headers=headers)
            probes.expect(f"{client} lists its screens", screens, 200, foreign=foreign)
            probes.holds(f"{client}'s screen listing", screens.json()["screens"], sorted(SCREENS[client]))
            buckets = http.get("/heatmap/buckets", params=_reads(client)["/heatmap/buckets"], headers=headers)
            probes.expect(f"{client} lists its buckets", buckets, 200, foreign=foreign)
            starts = [bucket["start"] for bucket in buckets.json()["buckets"]]
            probes.holds(f"{client}'s bucket listing", starts, [rfc3339(HOUR)])
            for path, params in _reads(client).items():
                probes.expect(
                    f"{client} reads {path}", http.get(path, params=params, headers=headers), 200, foreign=foreign
                )
                # The other tenant's read, with this key: refused, and nothing of theirs in the refusal.
                theirs = http.get(path, params=_reads(other)[path], headers=headers)
                probes.expect(f"{client} reads {other}'s {path}", theirs, 403, foreign=_unasked(other))

            own, their = f"/screenshots/{client}/{SCREENS[client][0]}", f"/screenshots/{other}/{SCREENS[other][0]}"
            png = {**headers, "Content-Type": "image/png"}
            probes.expect(
                f"{client} uploads its screenshot",
                http.put(own, content=SCREENSHOTS[client], headers=png),
                200,
                foreign=foreign,
            )
            probes.expect(
                f"{client} uploads over {other}'s",
                http.put(their, content=SCREENSHOTS[client], headers=png),
                403,
                foreign=_unasked(other),
            )
        # Both uploaded by now: each downloads its own bytes, and cannot fetch the other's.
        for client, key in READ_KEYS.items():
            other = GLOBEX if client == ACME else ACME
            headers = {"X-Read-Key": key}
            mine = http.get(f"/screenshots/{client}/{SCREENS[client][0]}", headers=headers)
            probes.expect(f"{client} downloads its screenshot", mine, 200, foreign=_foreign(client))
            probes.holds(f"{client}'s screenshot", mine.content, SCREENSHOTS[client])
            theirs = http.get(f"/screenshots/{other}/{SCREENS[other][0]}", headers=headers)
            probes.expect(f"{client} downloads {other}'s screenshot", theirs, 403, foreign=_unasked(other))


def _check_write_keys(base: str, probes: Probes) -> dict[str, int]:
    """Each write key posts its own batch (202) and the other's (403); returns the events acknowledged
    per batch_id, the only batches the topic may hold."""
    allowed = {}
    with httpx.Client(base_url=base, timeout=60) as http:
        for client, key in WRITE_KEYS.items():
            other = GLOBEX if client == ACME else ACME
            own = make_batch(client_id=client)
            answer = http.post("/events/batch", json=own, headers={"X-Write-Key": key})
            probes.expect(f"{client} writes its batch", answer, 202, foreign=[])
            allowed[own["batch_id"]] = answer.json()["events"] if answer.status_code == 202 else 0
            for how, headers, params in (
                ("header", {"X-Write-Key": key}, {}),
                ("query parameter", {}, {"write_key": key}),
                # The header wins over the query parameter: the other's key in the query opens nothing.
                ("header, other's key in the query", {"X-Write-Key": key}, {"write_key": WRITE_KEYS[other]}),
            ):
                refused = http.post("/events/batch", json=make_batch(client_id=other), headers=headers, params=params)
                probes.expect(f"{client}'s key ({how}) writes {other}'s batch", refused, 403, foreign=[])
            # A read key is no write key.
            read_key = http.post("/events/batch", json=own, headers={"X-Write-Key": READ_KEYS[client]})
            probes.expect(f"{client}'s read key writes", read_key, 401, foreign=[])
    return allowed


def _check_cors(base: str, path: str, method: str, probes: Probes) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        for origin in [CONFIGURED_ORIGIN, *STRANGE_ORIGINS]:
            preflight = http.options(path, headers={"Origin": origin, "Access-Control-Request-Method": method})
            simple = http.get("/health", headers={"Origin": origin})
            for kind, response in (("preflight", preflight), ("simple", simple)):
                probes.sent += 1
                admitted = response.headers.get("access-control-allow-origin")
                if admitted != (origin if origin == CONFIGURED_ORIGIN else None):
                    probes.leaks.append(f"{base} CORS {kind} from {origin!r}: Access-Control-Allow-Origin {admitted!r}")


@pytest.fixture(scope="module")
def tenants(stack: Settings) -> Settings:
    return write_tenants(stack)


def test_tenants_are_isolated(tenants: Settings, settings: Settings):
    ingest = settings.model_copy(update={"auth_enabled": True, "write_keys": WRITE_KEYS_SETTING})
    assert CONFIGURED_ORIGIN in tenants.cors_origin_list and CONFIGURED_ORIGIN in ingest.cors_origin_list
    probes = Probes()
    with serve_app("query_api.app:app", tenants) as query, serve_app("ingestion_api.app:app", ingest) as ingestion:
        _check_read_keys(query, probes)
        allowed = _check_write_keys(ingestion, probes)
        _check_cors(query, "/heatmap/daily", "GET", probes)
        _check_cors(ingestion, "/events/batch", "POST", probes)
    published = [record for _, record in read_topic(ingest)]
    wrong_tenant = [r.batch_id for r in published if r.batch_id not in allowed]
    probes.sent += 1
    if wrong_tenant:
        probes.leaks.append(f"published batches no key may write: {wrong_tenant}")

    record(
        Figures(
            scenario="Tenants isolated",
            load=f"{probes.sent} probes with two tenants' write and read keys on both APIs, "
            f"{len(STRANGE_ORIGINS)} unlisted origins",
            faults="another tenant's ids, paths and screenshots; a read key as a write key; unlisted CORS origins",
            acknowledged=sum(allowed.values()),
            served=sum(len(r.events) for r in published if r.batch_id in allowed),
            lost=0,
            duplicated=0,
            http_5xx=probes.server_errors,
            test="tests/reliability/test_tenants.py::test_tenants_are_isolated",
            notes=f"{probes.sent} probes, {len(probes.leaks)} leaks; acknowledged and served: the events of each "
            f"write key's own batch, counted in the topic (not landed), which holds {len(published)} batches",
        )
    )
    assert probes.leaks == [], "\n".join(probes.leaks)
    assert probes.server_errors == 0
    assert sorted(r.batch_id for r in published) == sorted(allowed)
