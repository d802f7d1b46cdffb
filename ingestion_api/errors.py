"""How a refused batch is answered: one JSON shape naming the field, one counter."""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException

from ingestion_api.observability import Metrics, log_event

# Kafka or Redis outages are usually seconds (leader election, restart); the demo client backs off on top.
UNAVAILABLE_RETRY_AFTER_S = 5
IN_FLIGHT_RETRY_AFTER_S = 1


class ErrorBody(msgspec.Struct, omit_defaults=True):
    status_code: int
    detail: str
    # The offending field as a path into the body, e.g. "events[3].x_norm".
    field: str | None = None


class BatchRejected(HTTPException):
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
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
        super().__init__(detail=detail, status_code=status_code, headers=headers)
        self.field = field
        self.events = events


class InvalidField(BatchRejected):
    def __init__(self, field: str, message: str, *, events: int | None = None):
        super().__init__(400, f"{field}: {message}", field=field, events=events)


def _field_and_detail(exc: HTTPException, max_body_bytes: int) -> tuple[str | None, str]:
    if isinstance(exc, BatchRejected):
        return exc.field, exc.detail
    if exc.status_code == 413:
        return "body", f"body: larger than the {max_body_bytes} bytes a batch may have"
    return None, exc.detail


def rejection_handler(metrics: Metrics, max_body_bytes: int) -> Callable[[Request, HTTPException], Response[ErrorBody]]:
    """The exception handler of the ingest route: counts, logs and answers every refusal alike."""

    def respond(_: Request, exc: HTTPException) -> Response[ErrorBody]:
        field, detail = _field_and_detail(exc, max_body_bytes)
        metrics.rejected(exc.status_code, getattr(exc, "events", None))
        log_event(
            "batch_rejected",
            logging.WARNING if exc.status_code >= 500 else logging.INFO,
            status=exc.status_code,
            field=field,
            detail=detail,
        )
        return Response(
            ErrorBody(status_code=exc.status_code, detail=detail, field=field),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    return respond
