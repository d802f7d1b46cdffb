"""Per-client read keys.

A read key is the dashboard credential of one client: it opens that client's
heatmaps, listings and screenshots. It travels in the X-Read-Key header (never
in the URL, where it would land in logs and shared links). With
HEATMAP_AUTH_ENABLED=false (the local demo) everything is open.
"""

from __future__ import annotations

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import Reference, SecurityScheme

from heatmap_core.ids import InvalidId, is_valid_id
from heatmap_core.settings import Settings
from heatmap_http.problems import RequestRejected

READ_KEY_HEADER = "X-Read-Key"
SECURITY_SCHEME = "readKey"
SECURITY_COMPONENTS: dict[str, SecurityScheme | Reference] = {
    SECURITY_SCHEME: SecurityScheme(
        type="apiKey", name=READ_KEY_HEADER, security_scheme_in="header", description="the client's read key"
    )
}


def readable_clients(settings: Settings, presented: str | None) -> set[str] | None:
    """Clients the presented key opens; None means every client (auth off).

    A key that opens nothing is refused here, so no route can answer it with an empty success.
    """
    if not settings.auth_enabled:
        return None
    # RFC 9110 5.5: whitespace around a header value is not part of the value.
    key = (presented or "").strip(" \t")
    if not key:
        raise NotAuthorizedException(f"send a read key in the {READ_KEY_HEADER} header")
    owners = set(settings.key_owners("read_keys", key))
    if not owners:
        raise PermissionDeniedException("this read key opens no client")
    return owners


async def client_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Admit a request for ``client_id`` only with that client's read key.

    It decides on exactly the value the handler gets: the path segment where the
    route has one, else the query parameter (which the app-level guard has already
    made single). An id that is not valid is refused with a 400 here, not waved
    through to a later check. ``async`` although it never awaits: Litestar runs a
    sync guard in a worker thread, a hop per request.
    """
    source = connection.path_params if "client_id" in connection.path_params else connection.query_params
    client_id = source.get("client_id")
    if not is_valid_id(client_id):
        raise RequestRejected(400, str(InvalidId("client_id", client_id)), field="client_id")
    allowed = readable_clients(connection.app.state.settings, connection.headers.get(READ_KEY_HEADER))
    if allowed is not None and client_id not in allowed:
        raise PermissionDeniedException(f"this read key does not open client {client_id!r}")
