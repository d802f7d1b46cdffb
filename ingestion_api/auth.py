"""Per-client write keys: a key may write only its own client_id.

The key travels in the ``X-Write-Key`` header, or in the ``write_key`` query
parameter for ``navigator.sendBeacon``, which cannot set headers. Write keys
sit in web pages, so they identify and scope a client; they are not secrets.
"""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from heatmap_core.settings import Settings
from ingestion_api.errors import BatchRejected

WRITE_KEY_HEADER = "X-Write-Key"
WRITE_KEY_PARAM = "write_key"


class WriteKeys:
    def __init__(self, settings: Settings):
        self.enabled = settings.auth_enabled
        self._keys = settings.keys("write_keys")

    def writer(self, request: ASGIConnection) -> str | None:
        """The client_id the request's key belongs to; None when auth is off."""
        if not self.enabled:
            return None
        given = request.headers.get(WRITE_KEY_HEADER) or request.query_params.get(WRITE_KEY_PARAM)
        if not given:
            raise BatchRejected(
                401,
                f"missing write key: send it in the {WRITE_KEY_HEADER} header or the {WRITE_KEY_PARAM} query parameter",
            )
        # Compare against every key in constant time rather than a dict lookup keyed by the secret.
        owners = [client for client, key in self._keys.items() if hmac.compare_digest(key.encode(), given.encode())]
        if not owners:
            raise BatchRejected(401, "unknown write key")
        return owners[0]

    def guard(self, connection: ASGIConnection, _: BaseRouteHandler) -> None:
        """Route guard: refuse a missing or unknown key before the body is read."""
        self.writer(connection)

    def authorize(self, writer: str | None, client_id: str, events: int) -> None:
        if writer is not None and writer != client_id:
            raise BatchRejected(
                403,
                f"this write key may write client_id {writer!r} only, not {client_id!r}",
                field="client_id",
                events=events,
            )
