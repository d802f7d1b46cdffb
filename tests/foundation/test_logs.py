"""heatmap_core.logs: one JSON object per line, a flood of one kind reduced to a line per interval with a count."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import time

from heatmap_core.logs import JsonLines, RepeatThrottle, log_event
from tests.conftest import ROOT


def _logger(name: str, interval_s: float) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    handler.addFilter(RepeatThrottle(interval_s))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def _read(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_third_party_flood_is_one_line_then_one_per_interval_carrying_the_count():
    logger, stream = _logger("aiokafka.flood_test", interval_s=1.0)

    def connect_failed(attempt: int) -> None:  # one call site, as in the client library
        logger.error("Unable connect to node with id %s: attempt %s", attempt % 3, attempt)

    for attempt in range(1000):
        connect_failed(attempt)
    logger.warning("Unable to update metadata from %s", [1])  # another call site: another kind
    time.sleep(1.1)
    connect_failed(1000)

    lines = _read(stream)
    assert [(line["level"], line["message"], line.get("suppressed")) for line in lines] == [
        ("error", "Unable connect to node with id 0: attempt 0", None),
        ("warning", "Unable to update metadata from [1]", None),
        ("error", "Unable connect to node with id 1: attempt 1000", 999),
    ]
    assert {line["logger"] for line in lines} == {"aiokafka.flood_test"}


def test_own_events_keep_their_fields_and_only_repeated_warnings_are_held_back():
    logger, stream = _logger("ingestion_api.flood_test", interval_s=60.0)
    for batch in range(3):
        log_event(logger, "batch_accepted", batch_id=f"b{batch}", events=5)
    for _ in range(50):
        log_event(logger, "batch_rejected", logging.WARNING, status=503)
    log_event(logger, "kafka_unreachable", logging.WARNING, always=True, since="T0")
    log_event(logger, "kafka_unreachable", logging.WARNING, always=True, since="T1")

    lines = [{k: v for k, v in line.items() if k != "ts"} for line in _read(stream)]
    own = {"logger": "ingestion_api.flood_test"}
    assert lines == [
        *({**own, "level": "info", "event": "batch_accepted", "batch_id": f"b{b}", "events": 5} for b in range(3)),
        {**own, "level": "warning", "event": "batch_rejected", "status": 503},
        {**own, "level": "warning", "event": "kafka_unreachable", "since": "T0"},
        {**own, "level": "warning", "event": "kafka_unreachable", "since": "T1"},
    ]


def test_configure_logging_routes_everything_through_one_json_handler():
    script = """
import logging
uvicorn = logging.getLogger("uvicorn")
uvicorn.addHandler(logging.StreamHandler())
uvicorn.propagate = False
uvicorn.setLevel(logging.INFO)
logging.getLogger("uvicorn.access").propagate = False  # as uvicorn --no-access-log leaves it
from heatmap_core.logs import configure_logging
configure_logging("DEBUG")
logging.getLogger("landing").debug("own debug line")
logging.getLogger("kafka.conn").info("third-party chatter")
logging.getLogger("kafka.conn").warning("third-party warning")
logging.getLogger("uvicorn.error").info("Application startup complete.")
logging.getLogger("uvicorn.access").info("GET /health 200")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("query_api").exception("failed")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["logger"], line["level"], line["message"]) for line in lines] == [
        ("landing", "debug", "own debug line"),
        ("kafka.conn", "warning", "third-party warning"),
        ("uvicorn.error", "info", "Application startup complete."),
        ("query_api", "error", "failed"),
    ]
    assert lines[-1]["exc"].startswith("Traceback") and lines[-1]["exc"].endswith("ZeroDivisionError: division by zero")
    assert done.stdout == ""
