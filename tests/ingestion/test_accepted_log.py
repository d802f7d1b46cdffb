"""Accepted batches are logged as one line per interval with per-client counts; each batch only at DEBUG."""

from __future__ import annotations

import logging

import pytest
from litestar.testing import TestClient

from ingestion_api.app import create_app

from .conftest import ACME, WRITE_KEYS, make_batch

GLOBEX = {"X-Write-Key": WRITE_KEYS["globex"]}


def _events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict]:
    return [record.__dict__["event_fields"] for record in caplog.records if record.msg == name]


def test_one_line_per_interval_counts_every_202_by_client(ingest_settings, caplog):
    caplog.set_level(logging.INFO, logger="ingestion_api")
    # An interval longer than the test: the only line is the one the shutdown writes.
    settings = ingest_settings.model_copy(update={"ingestion_log_interval_s": 3600.0})
    resent = make_batch(events=4)
    with TestClient(create_app(settings)) as client:
        for body, headers in [
            (resent, ACME),
            (make_batch(events=2), ACME),
            (resent, ACME),  # acknowledged again as a duplicate, not published
            (make_batch("globex", events=7), GLOBEX),
            ({**make_batch(events=1), "client_id": "bad id"}, ACME),  # refused: not counted
        ]:
            client.post("/events/batch", json=body, headers=headers)
        assert _events(caplog, "batches_accepted") == []

    [line] = _events(caplog, "batches_accepted")
    assert line["since"] <= line["until"]
    assert {key: value for key, value in line.items() if key not in ("since", "until")} == {
        "batches": 3,
        "events": 13,
        "duplicates": 1,
        "clients": {
            "acme": {"batches": 2, "events": 6, "duplicates": 1},
            "globex": {"batches": 1, "events": 7, "duplicates": 0},
        },
    }
    assert _events(caplog, "batch_accepted") == []


def test_each_batch_is_traced_at_debug(ingest_settings, caplog):
    caplog.set_level(logging.DEBUG, logger="ingestion_api")
    batch = make_batch(events=3)
    with TestClient(create_app(ingest_settings)) as client:
        assert client.post("/events/batch", json=batch, headers=ACME).status_code == 202

    [trace] = _events(caplog, "batch_accepted")
    assert {key: trace[key] for key in ("client_id", "screen_id", "batch_id", "events", "duplicate")} == {
        "client_id": "acme",
        "screen_id": "home_v1",
        "batch_id": batch["batch_id"],
        "events": 3,
        "duplicate": False,
    }
    assert isinstance(trace["partition"], int) and isinstance(trace["offset"], int)
