"""HTTP caching of heatmap answers.

Every answer carries a strong ETag (a hash of its body), so a client can
revalidate with If-None-Match and get 304. A bucket whose end lies further in
the past than ingestion still accepts events (event_time_past_hours) plus
SETTLE for the pipeline to land and roll them up can no longer change: it may
be cached for a day without asking. Anything younger says no-cache. Answers
are per client, hence private when keys are on.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import msgspec
from litestar import Request, Response
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from heatmap_core.settings import Settings
from query_api.auth import READ_KEY_HEADER

SETTLE = timedelta(hours=6)
FINAL_MAX_AGE_S = 86400


def is_final(end: datetime, settings: Settings, now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    return end + timedelta(hours=settings.event_time_past_hours) + SETTLE <= now


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def cached_json(request: Request, body: msgspec.Struct, end: datetime, settings: Settings) -> Response:
    """``body`` as JSON with ETag and Cache-Control, or 304 when the client's copy is current."""
    payload = msgspec.json.encode(body)
    etag = f'"{hashlib.sha256(payload).hexdigest()[:32]}"'
    scope = "private" if settings.auth_enabled else "public"
    freshness = f"max-age={FINAL_MAX_AGE_S}" if is_final(end, settings) else "no-cache"
    headers = {"ETag": etag, "Cache-Control": f"{scope}, {freshness}", "Vary": READ_KEY_HEADER}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=payload, media_type="application/json", headers=headers)
