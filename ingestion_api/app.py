"""The ingestion API: POST /events/batch -> Kafka; GET /health, /metrics, /schema; the demo at /demo/.

Run with ``uvicorn ingestion_api.app:app``; tests build their own app with
``create_app(settings)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar, Request, Response, Router, get, post
from litestar.config.cors import CORSConfig
from litestar.di import NamedDependency, Provide
from litestar.dto import MsgspecDTO
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, Reference, SecurityScheme
from litestar.params import JSONBody
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from litestar.typing import FieldDefinition

from heatmap_core.logs import configure_logging
from heatmap_core.settings import Settings, get_settings
from heatmap_http.params import single_valued
from heatmap_http.problems import documented, exception_handlers
from ingestion_api.auth import WRITE_KEY_HEADER, WRITE_KEY_PARAM, WriteKeys
from ingestion_api.errors import rejection_handler
from ingestion_api.ledger import BatchLedger
from ingestion_api.models import BatchAccepted, BatchIn, Health, decode_batch
from ingestion_api.observability import Metrics
from ingestion_api.openapi import BatchOperation
from ingestion_api.publisher import KafkaPublisher
from ingestion_api.service import IngestService

DEMO_DIR = Path(__file__).resolve().parent.parent / "dashboard" / "demo"
DEMO_PATH = "/demo"

_REFUSALS = documented(
    {
        400: "Invalid field; `field` names it, e.g. events[3].x_norm. Nothing was published.",
        401: f"Missing or unknown write key ({WRITE_KEY_HEADER} header or write_key query parameter).",
        403: "The write key belongs to another client_id.",
        409: "The same batch_id is being published by another request; retry after Retry-After.",
        413: "Body larger than the configured cap.",
        503: "Kafka (or Redis, unless HEATMAP_INGESTION_WITHOUT_REDIS=accept) unavailable: nothing acknowledged; "
        "retry after Retry-After.",
    }
)
# Either credential opens the route (OpenAPI: alternatives are separate requirement objects).
_WRITE_KEY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    "writeKeyHeader": SecurityScheme(
        type="apiKey", name=WRITE_KEY_HEADER, security_scheme_in="header", description="the client's write key"
    ),
    "writeKeyQuery": SecurityScheme(
        type="apiKey",
        name=WRITE_KEY_PARAM,
        security_scheme_in="query",
        description="the client's write key, for navigator.sendBeacon, which cannot set headers",
    ),
}


class BatchInDTO(MsgspecDTO[BatchIn]):
    """Our strict decoder instead of Litestar's lax conversion; the OpenAPI schema still comes from BatchIn."""

    def decode_bytes(self, value: bytes) -> BatchIn:
        return decode_batch(value)

    @classmethod
    def create_openapi_schema(cls, field_definition, handler_id, schema_creator):
        # The DTO's generated transfer model drops list constraints (events' minItems);
        # document BatchIn itself, which is exactly what decode_batch enforces.
        return schema_creator.for_field_definition(FieldDefinition.from_annotation(BatchIn))


def batch_route(service: IngestService) -> HTTPRouteHandler:
    """POST /events/batch, bound to this app's service: no per-request dependency resolution on the hot path."""

    @post(
        "/events/batch",
        dto=BatchInDTO,
        return_dto=None,
        status_code=202,
        summary="Ingest one batch of pointer events",
        description="Answers 202 only after Kafka acknowledged the batch (acks=all). A batch_id already "
        "acknowledged for this client is acknowledged again with duplicate=true and not re-published.",
        responses=_REFUSALS,
        security=[{name: []} for name in _WRITE_KEY_SCHEMES],
        operation_class=BatchOperation,
    )
    async def post_batch(data: JSONBody[BatchIn], request: Request) -> BatchAccepted:
        return await service.ingest(data, request.state.writer)

    return post_batch


@get(
    "/health",
    summary="Kafka and Redis reachability",
    description="200 while batches are accepted: both answer, or only Redis is down and "
    "HEATMAP_INGESTION_WITHOUT_REDIS=accept (status degraded); 503 otherwise.",
    responses={503: ResponseSpec(Health, description="degraded: batches are refused", generate_examples=False)},
)
async def health(service: NamedDependency[IngestService]) -> Response[Health]:
    kafka, redis = await asyncio.gather(service.publisher.ping(), service.ledger.ping(), return_exceptions=True)
    report = Health(
        status="ok" if kafka is None and redis is None else "degraded",
        kafka="ok" if kafka is None else str(kafka),
        redis="ok" if redis is None else str(redis),
    )
    # An instance that accepts batches without Redis must stay in its load balancer's rotation.
    accepting = kafka is None and (redis is None or service.accepts_without_redis)
    return Response(report, status_code=200 if accepting else 503)


@get("/", include_in_schema=False)
async def index() -> Redirect:
    return Redirect(f"{DEMO_PATH}/")


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    metrics = Metrics()
    write_keys = WriteKeys(settings)
    service = IngestService(settings, KafkaPublisher(settings), BatchLedger(settings), write_keys, metrics)

    def provide_service() -> IngestService:
        return service

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await service.publisher.start()
        accepted_lines = asyncio.create_task(service.accepted_log.run())
        try:
            yield
        finally:
            accepted_lines.cancel()
            service.accepted_log.flush()
            await service.publisher.stop()
            await service.ledger.close()

    ingest = Router(
        "/",
        route_handlers=[batch_route(service)],
        guards=[write_keys.guard],
        exception_handlers={HTTPException: rejection_handler(metrics, settings.max_body_bytes)},
    )
    return Litestar(
        route_handlers=[
            ingest,
            health,
            metrics.handler(),
            index,
            create_static_files_router(path=DEMO_PATH, directories=[DEMO_DIR], html_mode=True, include_in_schema=False),
        ],
        dependencies={"service": Provide(provide_service, sync_to_thread=False)},
        lifespan=[lifespan],
        guards=[single_valued(headers=[WRITE_KEY_HEADER])],
        exception_handlers=exception_handlers(metrics.unhandled),
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Content-Type", WRITE_KEY_HEADER],
            max_age=600,
        ),
        openapi_config=OpenAPIConfig(
            title="Heatmap ingestion API",
            version="1.0.0",
            path="/schema",
            components=Components(security_schemes=_WRITE_KEY_SCHEMES),
        ),
        # The process entry point configures logging once (heatmap_core.logs); Litestar must not replace it.
        logging_config=None,
    )


configure_logging(get_settings().ingestion_log_level)
app = create_app()
