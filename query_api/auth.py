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

from heatmap_core.ids import is_valid_id
from heatmap_core.settings import Settings

READ_KEY_HEADER = "X-Read-Key"
SECURITY_SCHEME = "readKey"
SECURITY_COMPONENTS: dict[str, SecurityScheme | Reference] = {
    SECURITY_SCHEME: SecurityScheme(
        type="apiKey", name=READ_KEY_HEADER, security_scheme_in="header", description="the client's read key"
    )
}


def readable_clients(settings: Settings, presented: str | None) -> set[str] | None:
    """Clients the presented key opens; None means every client (auth off)."""
    if not settings.auth_enabled:
        return None
    if not presented:
        raise NotAuthorizedException(f"send a read key in the {READ_KEY_HEADER} header")
    return set(settings.key_owners("read_keys", presented))


def client_guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Admit a request for ``client_id`` (path or query) only with that client's read key."""
    client_id = connection.path_params.get("client_id") or connection.query_params.get("client_id")
    if not is_valid_id(client_id):
        return  # parameter validation answers 400 naming client_id
    allowed = readable_clients(connection.app.state.settings, connection.headers.get(READ_KEY_HEADER))
    if allowed is not None and client_id not in allowed:
        raise PermissionDeniedException(f"this read key does not open client {client_id!r}")
