"""Property-based requests from the ingestion API's OpenAPI document against a live server on
the real Kafka and Redis: no 5xx, every answer as documented, successes included."""

from __future__ import annotations

from pathlib import Path

from heatmap_core.settings import Settings
from tests.conftest import run_schemathesis, serve_app

from .conftest import ACME, read_topic


def test_schemathesis_accepting_generated_batches(ingest_settings: Settings, tmp_path: Path):
    """Keys off and an event-time window of a century each way, so that schema-valid batches
    are published (202) and the success path is checked, not only refusals."""
    wide_open = ingest_settings.model_copy(
        update={"auth_enabled": False, "event_time_past_hours": 876_000, "event_time_future_minutes": 52_560_000}
    )
    with serve_app("ingestion_api.app:app", wide_open) as base:
        run_schemathesis(base, tmp_path)
    assert read_topic(wide_open), "no generated batch was accepted: the success path went unchecked"


def test_schemathesis_with_a_valid_write_key(ingest_settings: Settings, tmp_path: Path):
    with serve_app("ingestion_api.app:app", ingest_settings) as base:
        run_schemathesis(base, tmp_path, headers=ACME)
