"""Property-based requests from the OpenAPI schema against the live API, on known data:
no 5xx, and every answer matches what the schema documents."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_schemathesis

from .conftest import READ_KEY


def test_schemathesis_open_api_on_data(live_api: str, tmp_path: Path):
    """Keys off: generated requests for known screens get 200s with cells, not only refusals."""
    run_schemathesis(live_api, tmp_path)


def test_schemathesis_with_a_valid_read_key(keyed_api: str, tmp_path: Path):
    run_schemathesis(keyed_api, tmp_path, headers={"X-Read-Key": READ_KEY})
