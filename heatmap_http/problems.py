"""One error shape for both APIs: RFC 9457 problem details, with ``field`` naming what was wrong.

``field`` is a query parameter (``client_id``), a header (``X-Write-Key``) or a
path into the JSON body (``events[3].x_norm``); it is absent only when no single
field is at fault (a missing key, an outage). Every refusal of either API goes
through :func:`problem_response`, so clients parse one shape.
"""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import ExceptionHandlersMap
from prometheus_client import Counter

PROBLEM_MEDIA_TYPE = "application/problem+json"

logger = logging.getLogger("heatmap_http")
# Litestar names a missing parameter only in its message (with the name the client must send).
_MISSING = re.compile(r"^Missing required \w+ parameter '([^']+)'")


class Problem(msgspec.Struct, omit_defaults=True):
    """The body of every error answer (RFC 9457); documented once in both OpenAPI documents."""

    status: int
    title: str
    detail: str
    type: str = "about:blank"
    # The request field at fault: a query parameter, a header, or a JSON path into the body.
    field: str | None = None


class RequestRejected(HTTPException):
    """A refusal raised by our own code, which knows the field at fault."""

    def __init__(self, status_code: int, detail: str, *, field: str | None = None, retry_after_s: int | None = None):
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
        super().__init__(detail=detail, status_code=status_code, headers=headers)
        self.field = field


def documented(descriptions: dict[int, str]) -> dict[int, ResponseSpec]:
    """OpenAPI response specs for refusals, each with the problem-details body and media type."""
    return {
        code: ResponseSpec(
            data_container=Problem, description=text, media_type=PROBLEM_MEDIA_TYPE, generate_examples=False
        )
        for code, text in descriptions.items()
    }


def statuses(*codes: int) -> dict[int, ResponseSpec]:
    """Refusals documented by their HTTP phrase."""
    return documented({code: HTTPStatus(code).phrase for code in codes})


def _parameter_alias(request: Request, key: str) -> str:
    """The name the client sent (``from``) for a handler argument Litestar reports by its Python name (``from_``)."""
    if key == "data":  # Litestar's name for the request body, reported when the body is empty
        return "body"
    handler = request.scope.get("route_handler")
    signature = getattr(handler, "parsed_fn_signature", None)
    parameter = signature.parameters.get(key) if signature else None
    kwarg = getattr(parameter, "kwarg_definition", None)
    return getattr(kwarg, "name", None) or key  # QueryParameter(name="from"), HeaderParameter(name=...)


def describe(request: Request, exc: HTTPException) -> tuple[str | None, str]:
    """The field at fault (None when no single one is) and the detail, which starts with it."""
    if isinstance(exc, RequestRejected):
        return exc.field, exc.detail
    if exc.status_code == 413:
        return "body", exc.detail
    if isinstance(exc, ValidationException):
        for problem in exc.extra if isinstance(exc.extra, list) else []:
            if isinstance(problem, dict) and problem.get("key"):
                field = _parameter_alias(request, str(problem["key"]))
                if field == "body":
                    return field, "body: missing or empty; send a JSON document"
                return field, f"{field}: {problem.get('message') or 'invalid'}"
        if missing := _MISSING.match(exc.detail):
            return missing[1], f"{missing[1]}: this parameter is required"
    return None, exc.detail


def problem_response(
    request: Request, exc: HTTPException, described: tuple[str | None, str] | None = None
) -> Response[Any]:
    """The problem-details answer for any refusal (``described``: what :func:`describe` already said of it)."""
    field, detail = described or describe(request, exc)
    problem = ProblemDetailsException(
        detail=detail,
        status_code=exc.status_code,
        headers=exc.headers,
        extra={"field": field} if field else None,
        title=HTTPStatus(exc.status_code).phrase,
        type_="about:blank",
    )
    return problem.to_response(request)


def exception_handlers(unhandled: Counter) -> ExceptionHandlersMap:
    """Every HTTPException answered in our shape; anything else a handler raises is a bug:
    logged with its traceback, counted in ``unhandled`` (exported at /metrics), answered 500."""

    def on_unhandled(request: Request, exc: Exception) -> Response[Any]:
        unhandled.inc()
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem_response(request, HTTPException(status_code=500, detail="internal error; it has been logged"))

    return {HTTPException: problem_response, Exception: on_unhandled}
