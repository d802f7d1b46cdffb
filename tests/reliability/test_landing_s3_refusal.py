"""The object store refuses landing's writes (its bucket taken away: NoSuchBucket) while records keep arriving.

Guarantee: while S3 refuses, landing commits no offsets (the group's committed offsets, read from
Kafka every second, do not move), says why once in its log (one `object_store_refusing` line naming
the bucket and S3's error code, one `object_store_back` when it ends, no other warning between) and
at GET /health (503, `degraded`, the bucket and the code, for as long as it lasts); when the
refusal ends it lands everything, and the lake and the served hourly maps hold every record of
the topic exactly once.

Measured: known records produced straight to the test's topic (acknowledged = records in the
topic) before, during and after a 20 s refusal on a private S3Proxy; the lake is read back whole
and the maps are tallied cell by cell through the query API (tests/reliability/served.py).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from heatmap_core.timeutil import hour_start
from tests.conftest import free_port
from tests.landing.conftest import (
    committed_offsets,
    event_row,
    expected_rows,
    make_records,
    produce,
    read_lake,
    wait_landed,
)

from .figures import Figures, record
from .landing_scenarios import batches_of, bucket_taken_away, health
from .served import tally_served

pytestmark = pytest.mark.reliability

REFUSAL_S = 20.0
EVENTS = 30_000
CLIENTS = ("acme", "globex", "initech")
LANDING_ARGS = ("--flush-interval", "0.5", "--max-events", "2000")


def _wait_health(port: int, status: int, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        code, report = health(port)
        if code == status:
            return report
        assert time.monotonic() < deadline, f"health still {code} {report} after {timeout_s:.0f} s"
        time.sleep(0.2)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _log_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_landing_holds_its_offsets_while_s3_refuses_and_lands_everything_after(private_s3, start_landing, tmp_path):
    start = hour_start(datetime.now(UTC)) - timedelta(hours=2)
    records = make_records(
        events=EVENTS, per_record=50, clients=CLIENTS, start=start, span=timedelta(minutes=119), seed=16
    )
    before, during, after = records[:200], records[200:400], records[400:]
    port = free_port()
    landing = start_landing(*LANDING_ARGS, lake=private_s3, HEATMAP_LANDING_HEALTH_PORT=str(port))

    origins = produce(private_s3, before)
    wait_landed(private_s3, landing)
    assert _wait_health(port, 200, 5)["status"] == "ok"

    slices = [during[i : i + 20] for i in range(0, len(during), 20)]
    held_samples, health_samples = [], []
    with bucket_taken_away(private_s3):
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
            scenario="S3 refusing writes (bucket gone: NoSuchBucket)",
            load=f"{len(records)} records, {EVENTS} events, produced to the topic before, during and after the refusal",
            faults=f"the raw bucket taken away on the S3 server for {REFUSAL_S:.0f} s while "
            f"{sum(len(r.events) for r in during)} events arrived",
            http_5xx=0,
            test="tests/reliability/test_landing_s3_refusal.py::"
            "test_landing_holds_its_offsets_while_s3_refuses_and_lands_everything_after",
            notes=f"committed offsets unchanged in {len(held_samples)} reads during the refusal; "
            f"{len(refusal_lines)} log line naming the bucket and {refusal_lines[0]['error_code']}, "
            f"{len(warnings_between)} warnings in all until writes went through; "
            f"GET /health 503 in {sum(code == 503 for code, _ in health_samples)} of {len(health_samples)} probes; "
            f"lake rows JSON {len(json_rows)}, Parquet {len(parquet_rows)}",
        )
    )

    # Nothing committed while writes failed.
    assert held_samples and all(sample == held for sample in held_samples), (held, held_samples)
    # Said once, naming the bucket and S3's code; said again once when it ended; nothing else in between.
    assert [(line["bucket"], line["error_code"]) for line in refusal_lines] == [(private_s3.raw_bucket, "NoSuchBucket")]
    assert [(line["bucket"], line["error_code"]) for line in back_lines] == [(private_s3.raw_bucket, "NoSuchBucket")]
    assert warnings_between == [refusal_lines[0]]
    # Health said why for as long as it lasted, and ok after.
    assert refusing["status"] == "degraded" and refusing["bucket"] == private_s3.raw_bucket
    assert refusing["object_store"]["error_code"] == "NoSuchBucket"
    assert all(code == 503 and report == refusing for code, report in health_samples)
    assert back["object_store"] == {"state": "ok"}
    assert _instant(landed["last_commit_at"]) > _instant(refusing["last_commit_at"])
    # Every record of the topic once in the lake (both formats) and in the served maps.
    assert json_rows == expected_rows(records, origins)
    assert parquet_rows == json_rows
    assert (tally.lost, tally.duplicated, tally.served) == (0, 0, EVENTS)
