"""Kafka stopped for 60 s under load: ingestion's log stays small and still tells the outage's story.

Runs its own single-node Kafka (the shared one is never stopped) and the ingestion
API under uvicorn against it, its log kept in a file as the stack keeps it.
"""

from __future__ import annotations

import json
import time

import pytest

from infra import supervisor
from infra.programs import PROGRAMS
from tests.conftest import serve_app

from .load import under_load

pytestmark = pytest.mark.reliability

OUTAGE_S = 60.0
MAX_LINES_PER_MINUTE = 100


def _lines(log_path) -> list[dict]:
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def _wait_for_event(log_path, event: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(line.get("event") == event for line in _lines(log_path)):
        assert time.monotonic() < deadline, f"no {event} in the ingestion log within {timeout_s:.0f} s"
        time.sleep(0.5)


def test_kafka_outage_logs_a_bounded_number_of_lines(private_kafka, tmp_path):
    log_path = tmp_path / "ingestion.log"
    with serve_app("ingestion_api.app:app", private_kafka, log_path=log_path) as url, under_load(url) as load:
        time.sleep(5)
        accepted_before = len(load.accepted)
        supervisor.stop_program(private_kafka, "kafka")
        stopped = time.monotonic()
        lines_at_stop = len(_lines(log_path))
        time.sleep(OUTAGE_S)
        supervisor.start(private_kafka, PROGRAMS, ["kafka"], do_fetch=False)
        _wait_for_event(log_path, "kafka_back", timeout_s=60)
        outage_min = (time.monotonic() - stopped) / 60
        accepted_at_return = len(load.accepted)
        time.sleep(3)

    lines = _lines(log_path)
    during = lines[lines_at_stop:]
    during = during[: next(i for i, line in enumerate(during) if line.get("event") == "kafka_back") + 1]
    unreachable = [line for line in lines if line.get("event") == "kafka_unreachable"]
    back = [line for line in lines if line.get("event") == "kafka_back"]
    print(
        f"\nanswers {dict(load.answers)}; outage {outage_min * 60:.0f} s; {len(during)} log lines during it "
        f"({len(during) / outage_min:.0f} per minute), of which third-party "
        f"{sum(1 for line in during if not line['logger'].startswith('ingestion_api'))}; "
        f"lines standing for held-back ones: {[(line['logger'], line['suppressed']) for line in during if 'suppressed' in line]}"
    )
    assert accepted_before > 0 and load.answers["503"] > 0 and len(load.accepted) > accepted_at_return
    assert len(during) / outage_min < MAX_LINES_PER_MINUTE
    # When Kafka went away and when it came back, each said once.
    assert len(unreachable) == 1 and len(back) == 1
    assert back[0]["since"] == unreachable[0]["since"] and back[0]["after_s"] >= OUTAGE_S
    # The 503s answered meanwhile are still visible.
    assert any(line.get("event") == "batch_rejected" and line["status"] == 503 for line in during)
