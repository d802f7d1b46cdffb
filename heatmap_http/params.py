"""One rule for query parameters and credentials: each is sent at most once.

Every parameter our APIs take is single-valued. Were a repeated one let through,
a guard and a handler could read different copies (the guard the first, Litestar's
parser the last) and authorize one client while serving another. So a repeat is
refused, with a 400 naming it, before any guard or handler looks at the request.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Coroutine, Iterable

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from heatmap_http.problems import RequestRejected


def single_valued(
    headers: Iterable[str] = (),
) -> Callable[[ASGIConnection, BaseRouteHandler], Coroutine[None, None, None]]:
    """An app-level guard (app guards run before every other): query parameters and the
    named credential headers appear at most once."""
    watched = tuple(headers)

    # async although it never awaits: Litestar runs a sync guard in a worker thread, a hop per request.
    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        repeated = [
            name for name, seen in Counter(k for k, _ in connection.query_params.multi_items()).items() if seen > 1
        ]
        repeated += [name for name in watched if len(connection.headers.getall(name, [])) > 1]
        if repeated:
            raise RequestRejected(400, f"{repeated[0]}: sent more than once; send it once", field=repeated[0])

    return guard
