"""Prometheus exposition through prometheus-client, one registry per app instance
(tests run several apps in one process; a global registry would refuse the second)."""

from __future__ import annotations

from litestar import MediaType, Response, get
from litestar.handlers import HTTPRouteHandler
from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# The *_created series double every counter without telling an operator anything.
disable_created_metrics()


class AppMetrics:
    """A registry and the counter every service has: unhandled errors (answered 500)."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.unhandled = Counter(
            "heatmap_http_unhandled_errors",
            "Requests answered 500 because a handler raised an unexpected error (see the log for the traceback).",
            ["service"],
            registry=self.registry,
        ).labels(service)

    def handler(self) -> HTTPRouteHandler:
        """GET /metrics in Prometheus text format."""
        registry = self.registry

        @get(
            "/metrics",
            media_type=MediaType.TEXT,
            summary="Counters in Prometheus text format",
            tags=["ops"],
            sync_to_thread=False,
        )
        def metrics() -> Response[bytes]:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

        return metrics
