"""Hostile input on both live APIs: every refusal is a 4xx naming the field, never a 5xx, and
nothing reaches Kafka or the served maps.

Guarantee: ids carrying path separators, dots, percent-encodings, NUL, line breaks, unicode
(right-to-left overrides, homoglyphs), SQL metacharacters or 65+ characters; NaN, Infinity and
out-of-range numbers as raw bytes; event times outside the accepted window either way; and
bodies over the cap, announced by Content-Length or streamed chunked, are each refused with a
4xx whose problem-details `field` names what was wrong, by the ingestion API (with a write key,
and with keys off) and the query API (with a read key, and with keys off).

Measured: each API runs under uvicorn as the stack runs it; the ingestion API on the test's own
topic, which is read from the beginning afterwards (it must hold no record), the query API on a
ClickHouse database holding known rows (no hostile request may be answered 200). Twenty chunked
50 MB bodies are streamed to the ingestion API while its process RSS is sampled: the growth
must stay far below one buffered body. Schemathesis (with and without keys, both APIs) and
hypothesis on the body run in tests/ingestion and tests/query; stateful schemathesis would add
nothing here, since no route's input depends on another's output (a batch_id is the client's).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

import httpx
import psutil
import pytest

from heatmap_core.settings import Settings
from infra.processes import command_line
from query_api.screenshots import MAX_SCREENSHOT_BYTES
from tests.conftest import serve_app, week_of
from tests.ingestion.conftest import WRITE_KEYS, WRITE_KEYS_SETTING, make_batch, read_topic

from .figures import Figures, record
from .tenants import ACME, GLOBEX, HOUR, READ_KEYS, SCREENS, rfc3339, write_tenants

pytestmark = pytest.mark.reliability

ACME_WRITES = {"X-Write-Key": WRITE_KEYS[ACME]}

# Values no id may take: each must be refused naming the id's field.
HOSTILE_IDS = {
    "slash": "a/b",
    "backslash": "a\\b",
    "dot-dot": "..",
    "dot": ".",
    "dot-dot path": "../../etc/passwd",
    "percent-encoded slash": "a%2Fb",
    "percent-encoded dot-dot": "%2e%2e",
    "NUL": "acme\x00",
    "trailing newline": "acme\n",
    "carriage return": "acme\r\nX-Injected: 1",
    "tab": "acme\t",
    "space": "acme ",
    "right-to-left override": "\u202eemca",
    "Cyrillic homoglyph": "\u0430cme",
    "fullwidth": "\uff41\uff43\uff4d\uff45",
    "zero-width space": "ac\u200bme",
    "emoji": "acme\U0001f525",
    "SQL quote": "acme' OR '1'='1",
    "SQL comment": "acme;--",
    "SQL drop": "x'); DROP TABLE heatmap_hourly;--",
    "65 characters": "a" * 65,
    "empty": "",
}


@dataclass
class Probes:
    """Every hostile request sent and how it was answered; a mismatch is a request answered otherwise than expected."""

    statuses: Counter[int] = field(default_factory=Counter)
    mismatches: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def refused(self) -> int:
        return sum(n for status, n in self.statuses.items() if 400 <= status < 500)

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    def expect(self, what: str, response: httpx.Response, statuses: set[int], field: str | None) -> None:
        """``response`` must have one of ``statuses`` and, when ``field`` is given, name it in problem details."""
        self.statuses[response.status_code] += 1
        named = _problem_field(response)
        if response.status_code not in statuses or (field is not None and named != field):
            self.mismatches.append(f"{what}: {response.status_code} field={named!r} {response.text[:200]!r}")


def _problem_field(response: httpx.Response) -> str | None:
    if response.headers.get("content-type") != "application/problem+json":
        return None
    return json.loads(response.content).get("field")


# --- the ingestion API -------------------------------------------------------------------------

MAX_BODY_BYTES = 512 * 1024
CHUNKED_BODIES = 20
CHUNKED_BODY_BYTES = 50 * 1024 * 1024
CHUNK = b" " * (1024 * 1024)
# A server that buffered one 50 MB body would grow by at least that; a bounded one by a few MB.
RSS_GROWTH_BOUND = 25 * 1024 * 1024


def _with_view(**view) -> dict:
    return make_batch(
        view={"view_id": "view-0001", "viewport_w": 1280, "viewport_h": 800, **view, "screen_w": 1280, "screen_h": 3000}
    )


def _with_token(batch: dict, holder: dict, name: str, token: str) -> bytes:
    """``batch`` as JSON bytes with ``holder[name]`` (``holder``: an object inside it) written as the raw
    token ``token``, which need not be JSON at all."""
    holder[name] = "__TOKEN__"
    return json.dumps(batch).replace('"__TOKEN__"', token).encode()


# Tokens no number of a batch may be: not JSON (NaN, Infinity), out of every range, or overflowing a double.
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1" + "0" * 400, "1.5", "-0.5"]
HOSTILE_TIMES = {
    "past edge": lambda now: rfc3339(now - timedelta(hours=72, minutes=5)),
    "future edge": lambda now: rfc3339(now + timedelta(minutes=15)),
    "year 1": lambda now: "0001-01-01T00:00:00Z",
    "year 9999": lambda now: "9999-12-31T23:59:59Z",
    "year 1 at +01:00 (before year 1 in UTC)": lambda now: "0001-01-01T00:00:00+01:00",
    "year 9999 at -01:00 (past 9999 in UTC)": lambda now: "9999-12-31T23:59:59-01:00",
    "no zone": lambda now: now.replace(tzinfo=None).isoformat(),
    "February 30": lambda now: "2026-02-30T10:00:00Z",
    "hour 24": lambda now: f"{now:%Y-%m-%d}T24:00:00Z",
    "leap second": lambda now: f"{now:%Y-%m-%d}T23:59:60Z",
    "offset +25:00": lambda now: f"{now:%Y-%m-%dT%H:%M:%S}+25:00",
    "unix seconds as text": lambda now: str(int(now.timestamp())),
    "NUL inside": lambda now: rfc3339(now) + "\x00",
}


def _post(http: httpx.Client, body: dict | bytes, headers: dict[str, str]) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return http.post("/events/batch", content=content, headers={"Content-Type": "application/json", **headers})


def _hostile_batches() -> Iterator[tuple[str, bytes | dict, str]]:
    """(what, body, the field its refusal must name)."""
    for name, value in HOSTILE_IDS.items():
        yield f"client_id {name}", make_batch(client_id=value), "client_id"
        yield f"screen_id {name}", make_batch(screen_id=value), "screen_id"
        yield f"batch_id {name}", make_batch(batch_id=value), "batch_id"
        yield f"view_id {name}", _with_view(view_id=value), "view.view_id"
    for token in HOSTILE_NUMBERS:
        for name in ("x_norm", "y_norm"):
            batch = make_batch(events=1)
            yield f"{name} {token[:12]}", _with_token(batch, batch["events"][0], name, token), f"events[0].{name}"
        batch = _with_view()
        yield f"viewport_w {token[:12]}", _with_token(batch, batch["view"], "viewport_w", token), "view.viewport_w"
    # Nested past any decoder's stack, behind a bad byte that makes the validator search the document.
    deep = b"[" * 100_000 + b"]" * 100_000
    # (Searching it for the byte's field is given up for "body": it once ended in a RecursionError, a 500.)
    yield "bad byte then deep nesting", b'{"screen_id": "\xff", "client_id": ' + deep + b"}", "body"
    yield "deep nesting in an id", b'{"client_id": ' + deep + b"}", "client_id"
    now = datetime.now(UTC)
    for name, moment in HOSTILE_TIMES.items():
        batch = make_batch(events=2)
        batch["events"][1]["event_time"] = moment(now)
        yield f"event_time {name}", batch, "events[1].event_time"


def _server_process(url: str) -> psutil.Process:
    """The uvicorn process serve_app started for ``url`` (a child of this one, listening on its port)."""
    port = str(urlsplit(url).port)
    found = [
        child
        for child in psutil.Process().children(recursive=True)
        if "uvicorn" in (command := command_line(child)) and port in command
    ]
    assert len(found) == 1, found
    return found[0]


@dataclass
class ChunkedBodies:
    """Request bodies sent chunked (no Content-Length), counting the bytes handed to the connection."""

    streamed: int = 0

    def body(self, total: int) -> Iterator[bytes]:
        for _ in range(total // len(CHUNK)):
            yield CHUNK
            self.streamed += len(CHUNK)


@dataclass
class PeakRss:
    """The highest resident set size of a process, sampled every 20 ms while running."""

    process: psutil.Process
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def keyed_ingest(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth_enabled": True, "write_keys": WRITE_KEYS_SETTING})


def test_hostile_input_on_the_ingestion_api(keyed_ingest: Settings):
    open_ingest = keyed_ingest.model_copy(update={"auth_enabled": False})
    assert keyed_ingest.max_body_bytes == MAX_BODY_BYTES
    probes = Probes()
    oversize = b'{"client_id": "acme", "screen_id": "home_v1", "events": [' + b" " * MAX_BODY_BYTES + b"]}"
    with (
        serve_app("ingestion_api.app:app", keyed_ingest) as keyed,
        serve_app("ingestion_api.app:app", open_ingest) as open_,
    ):
        for base, headers in ((keyed, ACME_WRITES), (open_, {})):
            with httpx.Client(base_url=base, timeout=60) as http:
                for what, body, field_name in _hostile_batches():
                    probes.expect(f"{base} {what}", _post(http, body, headers), {400}, field_name)
                probes.expect(f"{base} oversize with Content-Length", _post(http, oversize, headers), {413}, "body")
        with httpx.Client(base_url=keyed, timeout=60) as http:
            # Without a key a request is refused before its body is read, whatever the body holds.
            for what, body, _ in list(_hostile_batches())[::7]:
                probes.expect(f"no key, {what}", _post(http, body, {}), {401}, None)
            # Another tenant's client_id with acme's key.
            probes.expect(
                "acme's key, globex's batch", _post(http, make_batch(client_id=GLOBEX), ACME_WRITES), {403}, "client_id"
            )

            for key in ("acme-write-key\x00", "acme-write-key\n", "' OR '1'='1", "a" * 5000):
                answer = http.post("/events/batch", params={"write_key": key}, json=make_batch())
                probes.expect(f"write_key {key[:16]!r}", answer, {401}, None)

        server = _server_process(keyed)
        before = server.memory_info().rss
        chunked = ChunkedBodies()
        with PeakRss(server) as rss, httpx.Client(base_url=keyed, timeout=120) as http:
            for index in range(CHUNKED_BODIES):
                response = http.post(
                    "/events/batch",
                    content=chunked.body(CHUNKED_BODY_BYTES),
                    headers={**ACME_WRITES, "Content-Type": "application/json"},
                )
                probes.expect(f"chunked 50 MB body {index}", response, {413}, "body")
        growth = rss.peak - before
        # The server still answers, and a valid batch after all that is accepted (the one record checked below).
        accepted = httpx.post(f"{keyed}/events/batch", json=make_batch(), headers=ACME_WRITES, timeout=30)

    published = [record.batch_id for _, record in read_topic(keyed_ingest)]
    hostile_published = len(published) - published.count(accepted.json().get("batch_id"))
    memory = (
        f"server RSS peak {growth / 2**20:.1f} MiB above its start while {CHUNKED_BODIES} chunked 50 MB bodies "
        f"were sent ({chunked.streamed / 2**20:.0f} MiB in all), each answered 413"
    )
    record(
        Figures(
            scenario="Hostile input: ingestion API",
            load=f"{probes.sent} hostile requests, with a write key and with keys off, "
            f"incl. {CHUNKED_BODIES} chunked 50 MB bodies",
            faults="hostile ids, NaN/Infinity/overflowing numbers, out-of-window times, oversize bodies",
            acknowledged=sum(n for status, n in probes.statuses.items() if status < 300),
            served=0,
            lost=0,
            duplicated=0,
            http_5xx=probes.server_errors,
            test="tests/reliability/test_hostile_input.py::test_hostile_input_on_the_ingestion_api",
            notes=f"{probes.sent} requests, {probes.refused} answered 4xx, {len(probes.mismatches)} not as expected, "
            f"topic records = {hostile_published}; {memory}",
        )
    )
    assert probes.mismatches == [], "\n".join(probes.mismatches)
    assert probes.server_errors == 0
    assert accepted.status_code == 202, accepted.text
    assert published == [accepted.json()["batch_id"]]
    assert growth < RSS_GROWTH_BOUND, memory


# --- the query API -----------------------------------------------------------------------------

HOSTILE_DATES = [
    "2026-02-30",
    "2026-13-01",
    "0000-01-01",
    "0001-01-01",
    "9999-12-31",
    "10000-01-01",
    "2026-1-1",
    "\u0662\u0660\u0662\u0666-\u0660\u0661-\u0660\u0664",
    "NaN",
    "1e309",
    "../../etc",
    "2026-01-04\x00",
    "2026-01-04'--",
]
HOSTILE_HOURS = ["NaN", "Infinity", "1e309", "-1", "24", "1.5", "0x10", "\u0663", "1\x00", "9" * 30, "1' OR '1'='1"]
HOSTILE_TIMES_OF_RANGE = [
    "NaN",
    "Infinity",
    "1e309",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:00:00-01:00",
    "1969-12-31T23:00:00Z",
    "2106-02-07T06:00:00Z",
    "2026-01-04T00:30:00Z",
    "2026-01-04T00:00:00Z\x00",
    "2026-01-04T00:00:00Z' OR 1=1--",
]
HOSTILE_CHOICES = ["ALL", "all\n", "click' OR '1'='1", "mousemove\x00", "", "%", "*", "\uff43lick", "hour;--"]


def _query_routes() -> dict[str, dict[str, str]]:
    """Every read of the query API with valid parameters for acme's screen."""
    dt, hour = f"{HOUR:%Y-%m-%d}", str(HOUR.hour)
    week = f"{week_of(HOUR):%Y-%m-%d}"
    span = {"from": rfc3339(HOUR), "to": rfc3339(HOUR + timedelta(hours=2))}
    screen = {"client_id": ACME, "screen_id": SCREENS[ACME][0]}
    return {
        "/heatmap/hourly": {**screen, "dt": dt, "hour": hour, "type": "click", "device": "desktop"},
        "/heatmap/daily": {**screen, "dt": dt, "type": "all"},
        "/heatmap/weekly": {**screen, "week_start": week, "device": "all"},
        "/heatmap/range": {**screen, **span},
        "/heatmap/scroll/hourly": {**screen, "dt": dt, "hour": hour, "device": "mobile"},
        "/heatmap/scroll/daily": {**screen, "dt": dt},
        "/heatmap/scroll/weekly": {**screen, "week_start": week},
        "/heatmap/scroll/range": {**screen, **span},
        "/heatmap/screens": {"client_id": ACME},
        "/heatmap/buckets": {**screen, "grain": "hour", "type": "click", "device": "all"},
        "/heatmap/freshness": {"client_id": ACME, **span},
    }


HOSTILE_PARAMETERS = {
    "client_id": list(HOSTILE_IDS.values()),
    "screen_id": list(HOSTILE_IDS.values()),
    "dt": HOSTILE_DATES,
    "week_start": HOSTILE_DATES,
    "hour": HOSTILE_HOURS,
    "from": HOSTILE_TIMES_OF_RANGE,
    "to": HOSTILE_TIMES_OF_RANGE,
    "type": HOSTILE_CHOICES,
    "device": HOSTILE_CHOICES,
    "grain": HOSTILE_CHOICES,
}
# Percent-encodings sent as they are (the server decodes them): invalid UTF-8, an overlong slash, NUL, RTL.
RAW_ENCODED = ["%C0%AF", "%FF", "acme%00", "acme%0A", "%E2%80%AEemca", "..%2F..%2Fetc", "%25%32%46", "acme%"]


def _url(path: str, params: dict[str, str]) -> str:
    return path + "?" + "&".join(f"{quote(name)}={quote(value, safe='')}" for name, value in params.items())


def _hostile_reads() -> Iterator[tuple[str, str, str]]:
    """(what, path and query, the field its refusal must name)."""
    for path, valid in _query_routes().items():
        for name in valid:
            for value in HOSTILE_PARAMETERS[name]:
                yield f"{path} {name}={value[:20]!r}", _url(path, {**valid, name: value}), name
            if name in ("client_id", "screen_id"):
                for raw in RAW_ENCODED:
                    query = _url(path, {k: v for k, v in valid.items() if k != name})
                    yield f"{path} {name}={raw} (raw)", f"{query}&{name}={raw}", name


def _hostile_screenshot_paths() -> Iterator[tuple[str, str, str]]:
    """(what, path, the field a 400 must name): hostile ids as path segments, percent-encoded so that
    each stays one segment."""
    for name, value in HOSTILE_IDS.items():
        segment = quote(value, safe="")
        yield f"screenshot client {name}", f"/screenshots/{segment}/{SCREENS[ACME][0]}", "client_id"
        yield f"screenshot screen {name}", f"/screenshots/{ACME}/{segment}", "screen_id"
    for raw in RAW_ENCODED:
        yield f"screenshot screen {raw} (raw)", f"/screenshots/{ACME}/{raw}", "screen_id"


@pytest.fixture(scope="module")
def tenants(stack: Settings) -> Settings:
    return write_tenants(stack)


def test_hostile_input_on_the_query_api(tenants: Settings):
    probes = Probes()
    read_key = {"X-Read-Key": READ_KEYS[ACME]}
    png = b"\x89PNG\r\n\x1a\n" + bytes(32)
    open_ = tenants.model_copy(update={"auth_enabled": False})
    with serve_app("query_api.app:app", tenants) as keyed, serve_app("query_api.app:app", open_) as opened:
        for base, headers in ((keyed, read_key), (opened, {})):
            with httpx.Client(base_url=base, timeout=60) as http:
                for path, valid in _query_routes().items():
                    control = http.get(_url(path, valid), headers=headers)
                    assert control.status_code == 200, (path, control.text)
                for what, url, field_name in _hostile_reads():
                    probes.expect(f"{base} {what}", http.get(url, headers=headers), {400}, field_name)
                for what, path, field_name in _hostile_screenshot_paths():
                    # A segment that no longer names the route is a 404; one that does is a 400 naming it.
                    for response in (
                        http.get(path, headers=headers),
                        http.put(path, content=png, headers={**headers, "Content-Type": "image/png"}),
                    ):
                        named = field_name if response.status_code == 400 else None
                        probes.expect(f"{base} {response.request.method} {what}", response, {400, 404}, named)
        with httpx.Client(base_url=keyed, timeout=60) as http:
            for what, url, field_name in list(_hostile_reads())[::5]:
                # Without a key: a malformed client_id is refused for what it is, everything else for the key.
                expected = {400} if field_name == "client_id" else {401}
                probes.expect(f"no key, {what}", http.get(url), expected, "client_id" if expected == {400} else None)
            for key in ("' OR '1'='1", "a" * 5000, READ_KEYS[ACME].upper(), f"{READ_KEYS[ACME]},{READ_KEYS[GLOBEX]}"):
                probes.expect(
                    f"clients with key {key[:20]!r}",
                    http.get("/heatmap/clients", headers={"X-Read-Key": key}),
                    {403},
                    None,
                )
            # Screenshots over their 5 MiB cap, announced and chunked.
            screenshot = f"/screenshots/{ACME}/{SCREENS[ACME][0]}"
            image = {**read_key, "Content-Type": "image/png"}
            oversize = png + bytes(MAX_SCREENSHOT_BYTES)
            probes.expect(
                "screenshot over the cap", http.put(screenshot, content=oversize, headers=image), {413}, "body"
            )
            for index in range(3):
                chunked = ChunkedBodies().body(CHUNKED_BODY_BYTES)
                answer = http.put(screenshot, content=chunked, headers=image)
                probes.expect(f"chunked 50 MB screenshot {index}", answer, {413}, "body")

    served = probes.statuses[200]
    record(
        Figures(
            scenario="Hostile input: query API",
            load=f"{probes.sent} hostile reads and screenshot requests, with a read key and with keys off",
            faults="hostile ids in query and path (raw percent-encodings incl. invalid UTF-8), dates, hours, "
            "range bounds, enums; unknown read keys; screenshots over the cap, announced and chunked",
            acknowledged=0,
            served=served,
            lost=0,
            duplicated=0,
            http_5xx=probes.server_errors,
            test="tests/reliability/test_hostile_input.py::test_hostile_input_on_the_query_api",
            notes=f"{probes.sent} requests, {probes.refused} answered 4xx, {len(probes.mismatches)} not as expected, "
            f"{served} answered 200",
        )
    )
    assert probes.mismatches == [], "\n".join(probes.mismatches)
    assert probes.server_errors == 0 and served == 0
