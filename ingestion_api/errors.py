"""How a refused batch is answered: one JSON shape naming the field, one counter."""

from __future__ import annotations

import logging
from collections.abc import Callable

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from ingestion_api.models import ErrorBody
from ingestion_api.observability import Metrics, log_event

# Kafka outages are usually seconds (leader election, restart); the demo client backs off on top.
KAFKA_RETRY_AFTER_S = 5
IN_FLIGHT_RETRY_AFTER_S = 1


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


def _field_and_detail(exc: HTTPException, max_body_bytes: int) -> tuple[str | None, str]:
    if isinstance(exc, BatchRejected):
        return exc.field, exc.detail
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # Litestar's msgspec decoding reports the path ("events[3].x_norm"), or "data" for the whole body.
        first = exc.extra[0]
        field = first.get("key") or "data"
        field = "body" if field == "data" else field
        return field, f"{field}: {first.get('message')}"
    if exc.status_code == 413:
        return "body", f"body: larger than the {max_body_bytes} bytes a batch may have"
    if exc.status_code == 400:
        # Undecodable JSON: the whole body is the offending field.
        return "body", f"body: {exc.detail}"
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
