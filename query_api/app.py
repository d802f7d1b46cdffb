"""The query API application: ``create_app(settings)`` for tests, ``app`` for uvicorn.

python -m uvicorn query_api.app:app --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.exceptions import OperationalError
from litestar import Litestar, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from heatmap_core.clickhouse import apply_schema, clickhouse
from heatmap_core.logs import configure_logging
from heatmap_core.settings import Settings, get_settings
from heatmap_http.metrics import AppMetrics
from heatmap_http.params import single_valued
from heatmap_http.problems import RequestRejected, exception_handlers, problem_response
from query_api.auth import READ_KEY_HEADER, SECURITY_COMPONENTS
from query_api.buckets import BadParameter
from query_api.caching import FinalReads, RollupsChanging
from query_api.models import Health
from query_api.routes import (
    CLICKHOUSE_RETRY_AFTER_S,
    ROLLUPS_CHANGING_RETRY_AFTER_S,
    HeatmapController,
    ScreenshotController,
    ScrollController,
)
from query_api.screenshots import ScreenshotStore
from query_api.store import HeatmapStore

logger = logging.getLogger("query_api")
DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"
DASHBOARD_APP = DASHBOARD / "app"
HEATMAP_JS = DASHBOARD / "node_modules" / "heatmap.js" / "build"


@get("/health", sync_to_thread=False, tags=["ops"])
def health() -> Health:
    return Health(status="ok")


@get("/", include_in_schema=False, sync_to_thread=False)
def index(request: Request) -> Redirect:
    # Keep the query: a shared view link may point at the root.
    query = request.url.query
    return Redirect(f"/dashboard/?{query}" if query else "/dashboard/")


def _on_bad_parameter(request: Request, exc: BadParameter) -> Response[Any]:
    return problem_response(request, RequestRejected(400, f"{exc.parameter}: {exc}", field=exc.parameter))


def _on_clickhouse_unavailable(request: Request, exc: OperationalError) -> Response[Any]:
    # clickhouse-connect raises OperationalError when the server cannot be reached or the connection
    # dies mid-answer (refused, reset, timed out): an outage, not a bug, so a 503 the client retries.
    logger.warning("clickhouse_unavailable on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request,
        RequestRejected(503, "ClickHouse unavailable; retry after Retry-After", retry_after_s=CLICKHOUSE_RETRY_AFTER_S),
    )


def _on_rollups_changing(request: Request, exc: RollupsChanging) -> Response[Any]:
    # Rollups written or dropped between each plan and its read: the next attempt reads the new ones.
    logger.warning("rollups_changing on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(
        request, RequestRejected(503, f"{exc}; retry after Retry-After", retry_after_s=ROLLUPS_CHANGING_RETRY_AFTER_S)
    )


def _freeze_startup_objects() -> None:
    # Modules, the app and its settings live as long as the process: a full collection (which a
    # read's garbage sets off now and then) need not walk them, and took up to 100 ms when it did.
    gc.freeze()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()

    def create_schema() -> None:
        # Idempotent; lets the API answer (empty maps) before the first pipeline run.
        with clickhouse(settings) as client:
            apply_schema(client, settings.clickhouse_database)

    store, screenshots = HeatmapStore(settings), ScreenshotStore(settings)
    final_reads = FinalReads(store, settings, settings.query_cache_entries)
    metrics = AppMetrics("query")
    return Litestar(
        route_handlers=[
            health,
            metrics.handler(),
            index,
            HeatmapController,
            ScrollController,
            ScreenshotController,
            create_static_files_router(
                "/dashboard", directories=[DASHBOARD_APP], html_mode=True, include_in_schema=False
            ),
            create_static_files_router("/vendor/heatmap.js", directories=[HEATMAP_JS], include_in_schema=False),
        ],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "store": Provide(lambda: store, sync_to_thread=False),
            "final_reads": Provide(lambda: final_reads, sync_to_thread=False),
            "screenshots": Provide(lambda: screenshots, sync_to_thread=False),
        },
        on_startup=[create_schema, store.open, _freeze_startup_objects],
        on_shutdown=[store.close],
        state=State({"settings": settings}),
        guards=[single_valued(headers=[READ_KEY_HEADER])],
        exception_handlers={
            **exception_handlers(metrics.unhandled),
            BadParameter: _on_bad_parameter,
            OperationalError: _on_clickhouse_unavailable,
            RollupsChanging: _on_rollups_changing,
        },
        cors_config=CORSConfig(
            allow_origins=settings.cors_origin_list,
            allow_headers=[READ_KEY_HEADER, "Content-Type", "If-None-Match"],
            allow_methods=["GET", "PUT", "OPTIONS"],
            expose_headers=["ETag"],
        ),
        openapi_config=OpenAPIConfig(
            title="Heatmap query API",
            version="1.0.0",
            path="/schema",
            components=Components(security_schemes=SECURITY_COMPONENTS),
            use_handler_docstrings=True,  # each handler's docstring is its operation's description
        ),
        # The process entry point configures logging once (heatmap_core.logs); Litestar must not replace it.
        logging_config=None,
    )


configure_logging()
app = create_app()
