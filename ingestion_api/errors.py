"""How a refused batch is answered: the shared problem-details shape naming the field, one counter."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException

from heatmap_http.problems import RequestRejected, describe, problem_response
from ingestion_api.observability import Metrics, log_event

# Kafka or Redis outages are usually seconds (leader election, restart); the demo client backs off on top.
UNAVAILABLE_RETRY_AFTER_S = 5
IN_FLIGHT_RETRY_AFTER_S = 1


class BatchRejected(RequestRejected):
    """A refusal raised by the ingestion code; knows the field and, once decoded, the event count."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        *,
        field: str | None = None,
        events: int | None = None,
        retry_after_s: int | None = None,
    ):
        super().__init__(status_code, detail, field=field, retry_after_s=retry_after_s)
        self.events = events


class InvalidField(BatchRejected):
    def __init__(self, field: str, message: str, *, events: int | None = None):
        super().__init__(400, f"{field}: {message}", field=field, events=events)


class BodyTooLarge(BatchRejected):
    def __init__(self, max_body_bytes: int):
        super().__init__(413, f"body: larger than the {max_body_bytes} bytes a batch may have", field="body")


def rejection_handler(metrics: Metrics, max_body_bytes: int) -> Callable[[Request, HTTPException], Response[Any]]:
    """The exception handler of the ingest route: counts, logs and answers every refusal alike."""

    def respond(request: Request, exc: HTTPException) -> Response[Any]:
        if exc.status_code == 413 and not isinstance(exc, BatchRejected):
            exc = BodyTooLarge(max_body_bytes)
        metrics.rejected(exc.status_code, getattr(exc, "events", None))
        field, detail = described = describe(request, exc)
        log_event(
            "batch_rejected",
            logging.WARNING if exc.status_code >= 500 else logging.INFO,
            status=exc.status_code,
            field=field,
            detail=detail,
        )
        return problem_response(request, exc, described)

    return respond
