"""The object store refuses landing's writes while records keep arriving, two ways: its bucket taken
away (NoSuchBucket), and its key pair rotated by an operator without landing's (InvalidAccessKeyId,
S3Proxy's answer to a key it does not know; AWS S3 and MinIO answer the same).

Guarantee: while S3 refuses, landing commits no offsets (the group's committed offsets, read from
Kafka every second, do not move), says why once in its log (one `object_store_refusing` line naming
the bucket and S3's error code, one `object_store_back` when it ends, no other warning between) and
at GET /health (503, `degraded`, the bucket and the code, for as long as it lasts); when the
refusal ends it lands everything without being restarted, and the lake and the served hourly maps
hold every record of the topic exactly once. A refusal whose cause changes (the bucket put back
while the key pair was rotated) is one refusal: /health names the current code, the log its one pair.

A refused key is not fatal to landing: like any refusal its writes are retried for up to two
minutes (landing/writer.py), so an operator who puts the key back within that time finds landing
running and caught up; past it landing exits, and its supervisor's restart replays the uncommitted
range (nothing is lost either way, only the process's continuity).

Measured: known records produced straight to the test's topic (acknowledged = records in the
topic) before, during and after a 20 s refusal on a private S3Proxy (for the rotation, restarted
with another key pair and, after the 20 s, with landing's again); the lake is read back whole and
the maps are tallied cell by cell through the query API (tests/reliability/served.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from heatmap_core.events import RawBatchRecord
from heatmap_core.settings import Settings
from heatmap_core.timeutil import hour_start
from tests.conftest import free_port
from tests.landing.conftest import (
    LandingProcess,
    committed_offsets,
    event_row,
    expected_rows,
    make_records,
    produce,
    read_lake,
    wait_landed,
)

from .figures import Figures, record
from .landing_scenarios import (
    batches_of,
    bucket_taken_away,
    credentials_rotated,
    health,
    paused,
    restart_s3,
    restart_s3_with_other_keys,
)
from .served import tally_served

pytestmark = pytest.mark.reliability

REFUSAL_S = 20.0
EVENTS = 30_000
CLIENTS = ("acme", "globex", "initech")
LANDING_ARGS = ("--flush-interval", "0.5", "--max-events", "2000")
# Above credentials_rotated's pause of landing, so the group keeps it.
SESSION_TIMEOUT_MS = "30000"
# Landing's retries back off to one every 15 s (landing/writer.py): the next failure names the new cause.
CAUSE_CHANGED_WITHIN_S = 45.0


@dataclass(frozen=True)
class Refusal:
    scenario: str  # as in RELIABILITY.md
    error_code: str  # what S3 answers landing's writes meanwhile
    fault: str  # what is done to the store, for the figures
    on: Callable[[Settings, LandingProcess], AbstractContextManager[None]]  # the store refuses while it runs


REFUSALS = [
    pytest.param(
        Refusal(
            "S3 refusing writes (bucket gone: NoSuchBucket)",
            "NoSuchBucket",
            "the raw bucket taken away on the S3 server",
            lambda settings, _landing: bucket_taken_away(settings),
        ),
        id="bucket-gone",
    ),
    pytest.param(
        Refusal(
            "S3 refusing writes (access denied: credentials rotated)",
            "InvalidAccessKeyId",
            "landing's key refused (the S3 server restarted with another key pair, then with landing's)",
            credentials_rotated,
        ),
        id="access-denied",
    ),
]


def _wait_health(port: int, status: int, timeout_s: float, error_code: str | None = None) -> dict:
    """GET /health's report once it answers ``status`` (and names ``error_code``, when given)."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, report = health(port)
        if code == status and error_code in (None, report["object_store"].get("error_code")):
            return report
        assert time.monotonic() < deadline, f"health still {code} {report} after {timeout_s:.0f} s"
        time.sleep(0.2)


def _records(events: int, seed: int) -> list[RawBatchRecord]:
    """Known records of the two last complete hours, for the test's topic."""
    start = hour_start(datetime.now(UTC)) - timedelta(hours=2)
    return make_records(
        events=events, per_record=50, clients=CLIENTS, start=start, span=timedelta(minutes=119), seed=seed
    )


def _landing_with_health(start_landing, lake: Settings) -> tuple[LandingProcess, int]:
    """Landing writing to ``lake``, its GET /health on a free port (the port is returned too)."""
    port = free_port()
    landing = start_landing(
        *LANDING_ARGS,
        lake=lake,
        HEATMAP_LANDING_HEALTH_PORT=str(port),
        HEATMAP_LANDING_SESSION_TIMEOUT_MS=SESSION_TIMEOUT_MS,
    )
    return landing, port


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _log_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_landing_holds_its_offsets_while_s3_refuses_and_lands_everything_after(
    refusal: Refusal, private_s3, start_landing, tmp_path, request
):
    records = _records(EVENTS, seed=16)
    before, during, after = records[:200], records[200:400], records[400:]
    landing, port = _landing_with_health(start_landing, private_s3)

    origins = produce(private_s3, before)
    wait_landed(private_s3, landing)
    assert _wait_health(port, 200, 5)["status"] == "ok"

    slices = [during[i : i + 20] for i in range(0, len(during), 20)]
    held_samples, health_samples = [], []
    with refusal.on(private_s3, landing):
        origins += produce(private_s3, slices.pop(0))
        refusing = _wait_health(port, 503, 30)
        refused_at = time.monotonic()
        held = committed_offsets(private_s3, landing.group)
        while time.monotonic() - refused_at < REFUSAL_S:
            if slices:
                origins += produce(private_s3, slices.pop(0))
            held_samples.append(committed_offsets(private_s3, landing.group))
            health_samples.append(health(port))
            time.sleep(1)
        assert not slices
    back = _wait_health(port, 200, 30)
    origins += produce(private_s3, after)
    wait_landed(private_s3, landing)
    _, landed = health(port)
    survived = landing.process.poll() is None
    landing.stop_cleanly()

    lines = _log_lines(landing.log())
    refusal_lines = [line for line in lines if line.get("event") == "object_store_refusing"]
    back_lines = [line for line in lines if line.get("event") == "object_store_back"]
    first, last = lines.index(refusal_lines[0]), lines.index(back_lines[-1])
    warnings_between = [line for line in lines[first : last + 1] if line["level"] in ("warning", "error")]

    json_rows = sorted(event_row(e) for f in read_lake(private_s3, "json") for e in f.events)
    parquet_rows = sorted(event_row(e) for f in read_lake(private_s3, "parquet") for e in f.events)
    tally = tally_served(private_s3, batches_of(records), tmp_path, land=False)
    record(
        Figures.from_tally(
            tally,
            scenario=refusal.scenario,
            load=f"{len(records)} records, {EVENTS} events, produced to the topic before, during and after the refusal",
            faults=f"{refusal.fault} for {REFUSAL_S:.0f} s while {sum(len(r.events) for r in during)} events arrived",
            http_5xx=0,
            test=request.node.nodeid,
            notes=f"landing {'ran throughout' if survived else 'exited'}; committed offsets unchanged in {len(held_samples)} reads during the refusal; "
            f"{len(refusal_lines)} log line naming the bucket and {refusal_lines[0]['error_code']}, "
            f"{len(warnings_between)} warnings in all until writes went through; "
            f"GET /health 503 in {sum(code == 503 for code, _ in health_samples)} of {len(health_samples)} probes; "
            f"lake rows JSON {len(json_rows)}, Parquet {len(parquet_rows)}",
        )
    )

    assert survived
    # Nothing committed while writes failed.
    assert held_samples and all(sample == held for sample in held_samples), (held, held_samples)
    # Said once, naming the bucket and S3's code; said again once when it ended; nothing else in between.
    assert [(line["bucket"], line["error_code"]) for line in refusal_lines] == [
        (private_s3.raw_bucket, refusal.error_code)
    ]
    assert [(line["bucket"], line["error_code"]) for line in back_lines] == [
        (private_s3.raw_bucket, refusal.error_code)
    ]
    assert warnings_between == [refusal_lines[0]]
    # Health said why for as long as it lasted, and ok after.
    assert refusing["status"] == "degraded" and refusing["bucket"] == private_s3.raw_bucket
    assert refusing["object_store"]["error_code"] == refusal.error_code
    assert all(code == 503 and report == refusing for code, report in health_samples)
    assert back["object_store"] == {"state": "ok"}
    assert _instant(landed["last_commit_at"]) > _instant(refusing["last_commit_at"])
    # Every record of the topic once in the lake (both formats) and in the served maps.
    assert json_rows == expected_rows(records, origins)
    assert parquet_rows == json_rows
    assert (tally.lost, tally.duplicated, tally.served) == (0, 0, EVENTS)


def test_health_names_the_current_cause_when_a_refusal_changes_it(private_store, start_landing):
    """The bucket taken away (NoSuchBucket), then put back while the key pair was rotated
    (InvalidAccessKeyId): one refusal, whose cause GET /health follows; the log names the first.

    Landing is paused across the change (``paused``), so that to it the refusal never ends between the
    two causes. No served maps here: the lake is read back whole, every record once.
    """
    records = _records(3_000, seed=17)
    before, during, after = records[:20], records[20:40], records[40:]
    landing, port = _landing_with_health(start_landing, private_store)
    origins = produce(private_store, before)
    wait_landed(private_store, landing)

    with ExitStack() as landing_paused:
        with bucket_taken_away(private_store):
            origins += produce(private_store, during)
            bucket_gone = _wait_health(port, 503, 30)
            landing_paused.enter_context(paused(landing))
        # The bucket is back, and the store restarted with a key pair that is not landing's.
        restart_s3_with_other_keys(private_store)
    try:
        key_refused = _wait_health(port, 503, CAUSE_CHANGED_WITHIN_S, error_code="InvalidAccessKeyId")
    finally:
        restart_s3(private_store)
    back = _wait_health(port, 200, 30)
    origins += produce(private_store, after)
    wait_landed(private_store, landing)
    survived = landing.process.poll() is None
    landing.stop_cleanly()

    assert survived
    assert bucket_gone["object_store"]["error_code"] == "NoSuchBucket"
    # One refusal, since the bucket went: its cause followed, its start kept.
    assert key_refused["status"] == "degraded"
    assert key_refused["object_store"]["since"] == bucket_gone["object_store"]["since"]
    assert back["object_store"] == {"state": "ok"}
    lines = _log_lines(landing.log())
    said = [(line["event"], line["error_code"]) for line in lines if line.get("event", "").startswith("object_store_")]
    assert said == [("object_store_refusing", "NoSuchBucket"), ("object_store_back", "NoSuchBucket")]
    assert sorted(event_row(e) for f in read_lake(private_store, "json") for e in f.events) == expected_rows(
        records, origins
    )
