"""A failure no handler expected is answered 500 in the problem-details shape, logged with
its traceback and counted in /metrics (the probe's 500s once appeared in neither)."""

from __future__ import annotations

import logging
import re

from litestar.testing import TestClient

from heatmap_core.clickhouse import clickhouse
from heatmap_core.schema import TABLES
from query_api.app import create_app

from .conftest import CLIENT, SCREEN


def _unhandled(metrics_text: str) -> float:
    [value] = re.findall(r'^heatmap_http_unhandled_errors_total\{service="query"\} (\S+)$', metrics_text, re.M)
    return float(value)


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unexpected_error_is_logged_with_traceback_and_counted(settings):
    open_settings = settings.model_copy(update={"auth_enabled": False})
    # Litestar reconfigures logging at startup, so keep the records with a handler of our own.
    kept, logger = _Kept(), logging.getLogger("heatmap_http")
    logger.addHandler(kept)
    with TestClient(create_app(open_settings), raise_server_exceptions=False) as api:
        assert _unhandled(api.get("/metrics").text) == 0
        # Break the store under the running app: its table disappears.
        with clickhouse(open_settings) as client:
            client.command(f"DROP TABLE {open_settings.clickhouse_database}.{TABLES['day'].name}")
        response = api.get("/heatmap/daily", params={"client_id": CLIENT, "screen_id": SCREEN, "dt": "2026-02-01"})

        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == 500 and "Exception" not in response.json()["detail"]
        assert _unhandled(api.get("/metrics").text) == 1
    logger.removeHandler(kept)
    [record] = kept.records
    assert "GET /heatmap/daily" in record.getMessage()
    assert record.exc_info is not None and "UNKNOWN_TABLE" in str(record.exc_info[1])
