"""The query API application: ``create_app(settings)`` for tests, ``app`` for uvicorn.

python -m uvicorn query_api.app:app --host 127.0.0.1 --port 8002
"""

from __future__ import annotations

import re
from pathlib import Path

from litestar import Litestar, Request, Response, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_400_BAD_REQUEST

from heatmap_core.clickhouse import apply_schema, clickhouse
from heatmap_core.logs import configure_logging
from heatmap_core.settings import Settings, get_settings
from query_api.auth import READ_KEY_HEADER, SECURITY_COMPONENTS
from query_api.buckets import BadParameter
from query_api.models import Health, Problem
from query_api.routes import HeatmapController, ScreenshotController
from query_api.screenshots import ScreenshotStore
from query_api.store import HeatmapStore

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


def _bad_request(parameter: str | None, message: str) -> Response:
    """Every 400 names the offending parameter in ``detail`` (for people) and ``extra`` (for code)."""
    detail = f"invalid parameter {parameter!r}: {message}" if parameter else message
    extra = [{"key": parameter, "message": message}] if parameter else None
    return Response(Problem(status_code=400, detail=detail, extra=extra), status_code=HTTP_400_BAD_REQUEST)


def _on_bad_parameter(_: Request, exc: BadParameter) -> Response:
    return _bad_request(exc.parameter, str(exc))


_MISSING = re.compile(r"^Missing required \w+ parameter '([^']+)'")


def _on_validation(_: Request, exc: ValidationException) -> Response:
    problems = exc.extra if isinstance(exc.extra, list) else []
    named = [p for p in problems if isinstance(p, dict) and p.get("key")]
    if named:
        return _bad_request(str(named[0]["key"]), str(named[0].get("message", "invalid")))
    if missing := _MISSING.match(exc.detail):
        return _bad_request(missing[1], "this parameter is required")
    return _bad_request(None, exc.detail)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()

    def create_schema() -> None:
        # Idempotent; lets the API answer (empty maps) before the first pipeline run.
        with clickhouse(settings) as client:
            apply_schema(client, settings.clickhouse_database)

    store, screenshots = HeatmapStore(settings), ScreenshotStore(settings)
    return Litestar(
        route_handlers=[
            health,
            index,
            HeatmapController,
            ScreenshotController,
            create_static_files_router(
                "/dashboard", directories=[DASHBOARD_APP], html_mode=True, include_in_schema=False
            ),
            create_static_files_router("/vendor/heatmap.js", directories=[HEATMAP_JS], include_in_schema=False),
        ],
        dependencies={
            "settings": Provide(lambda: settings, sync_to_thread=False),
            "store": Provide(lambda: store, sync_to_thread=False),
            "screenshots": Provide(lambda: screenshots, sync_to_thread=False),
        },
        on_startup=[create_schema],
        state=State({"settings": settings}),
        exception_handlers={BadParameter: _on_bad_parameter, ValidationException: _on_validation},
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
        ),
        # The process entry point configures logging once (heatmap_core.logs); Litestar must not replace it.
        logging_config=None,
    )


configure_logging()
app = create_app()
