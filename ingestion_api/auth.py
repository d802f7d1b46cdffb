"""Per-client write keys: a key may write only its own client_id.

The key travels in the ``X-Write-Key`` header, or in the ``write_key`` query
parameter for ``navigator.sendBeacon``, which cannot set headers. Write keys
sit in web pages, so they identify and scope a client; they are not secrets.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from heatmap_core.settings import Settings
from ingestion_api.errors import BatchRejected

WRITE_KEY_HEADER = "X-Write-Key"
WRITE_KEY_PARAM = "write_key"


class WriteKeys:
    def __init__(self, settings: Settings):
        self.enabled = settings.auth_enabled
        self._settings = settings

    def writer(self, request: ASGIConnection) -> str | None:
        """The client_id the request's key belongs to; None when auth is off."""
        if not self.enabled:
            return None
        # RFC 9110 5.5: whitespace around a header value is not part of it (servers strip the
        # leading part, so the trailing part must go too for one key to mean one thing); the
        # query parameter is taken exactly as sent.
        header = request.headers.get(WRITE_KEY_HEADER)
        given = header.strip(" \t") if header is not None else request.query_params.get(WRITE_KEY_PARAM)
        if not given:
            raise BatchRejected(
                401,
                f"missing write key: send it in the {WRITE_KEY_HEADER} header or the {WRITE_KEY_PARAM} query parameter",
            )
        owners = self._settings.key_owners("write_keys", given)
        if not owners:
            raise BatchRejected(401, "unknown write key")
        return owners[0]

    async def guard(self, connection: ASGIConnection, _: BaseRouteHandler) -> None:
        """Route guard: refuse a missing or unknown key before the body is read; the handler gets its owner.

        async although it never awaits: Litestar runs a sync guard in a worker thread, a hop per request.
        """
        connection.state.writer = self.writer(connection)

    def authorize(self, writer: str | None, client_id: str, events: int) -> None:
        if writer is not None and writer != client_id:
            raise BatchRejected(
                403,
                f"this write key may write client_id {writer!r} only, not {client_id!r}",
                field="client_id",
                events=events,
            )
