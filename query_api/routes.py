"""HTTP handlers: parse, delegate to the store, shape the answer. ClickHouse is
asked on the event loop (the store's asyncio client); the blocking S3 calls of
the screenshots run in worker threads (sync_to_thread=True)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any, cast

from litestar import Controller, HttpMethod, Request, Response, get, put, route
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ClientException, NotFoundException
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import HeaderParameter, Parameter, QueryParameter, RawBody
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

from heatmap_core.ids import ID_PATTERN
from heatmap_core.settings import Settings
from heatmap_http.problems import documented, statuses
from query_api.auth import READ_KEY_HEADER, SECURITY_SCHEME, client_guard, readable_clients
from query_api.buckets import Grain, Span, day_bucket, hour_bucket, range_bounds, week_bucket
from query_api.caching import FinalReads, cached_json, etag_matches
from query_api.dimensions import ALL, DeviceFilter, Selection, TypeFilter
from query_api.models import (
    BucketList,
    BucketSpan,
    CellColumns,
    ClientList,
    Freshness,
    Heatmap,
    RangeHeatmap,
    RangeScrollMap,
    ScreenList,
    ScreenshotInfo,
    ScrollMap,
)
from query_api.screenshots import MAX_SCREENSHOT_BYTES, SIGNATURES, InvalidImage, ScreenshotStore
from query_api.scroll import reach
from query_api.store import HeatmapStore

_ID = {"pattern": ID_PATTERN, "min_length": 1, "max_length": 64}
ClientId = Annotated[str, Parameter(description="client id, 1-64 of [A-Za-z0-9_-]", **_ID)]
ScreenId = Annotated[str, Parameter(description="screen id, 1-64 of [A-Za-z0-9_-]", **_ID)]
Day = Annotated[date, Parameter(description="UTC date YYYY-MM-DD")]
Hour = Annotated[int, Parameter(ge=0, le=23, description="UTC hour 0-23")]
WeekStart = Annotated[date, Parameter(description="the Sunday (UTC) a week starts on, YYYY-MM-DD")]
GrainParam = Annotated[Grain, Parameter(description="bucket grain: hour, day or week (weeks start on Sunday, UTC)")]
From = Annotated[
    datetime, QueryParameter(name="from", description="range start, an RFC 3339 time on a UTC hour boundary")
]
To = Annotated[datetime, QueryParameter(name="to", description="range end (exclusive), on a UTC hour boundary")]
TypeParam = Annotated[
    TypeFilter,
    Parameter(
        description="event type: all (the default: every stored type summed, the answer before v2) or one type",
    ),
]
DeviceParam = Annotated[
    DeviceFilter,
    Parameter(description="device class from the viewport width: all (the default) or one class; v1 data is unknown"),
]
ReadKey = Annotated[str | None, HeaderParameter(name=READ_KEY_HEADER, required=False, description="client read key")]

_IMAGES = {
    media: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)) for media in SIGNATURES
}


@dataclass
class ImageUpload(Operation):
    """The body is raw image bytes, which Litestar cannot infer from ``body: RawBody``."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content=_IMAGES)


@dataclass
class ImageDownload(Operation):
    """A 200 carries the image's own type; errors stay JSON."""

    def __post_init__(self) -> None:
        self.responses = {
            **(self.responses or {}),
            "200": OpenAPIResponse(description="the screenshot", content=_IMAGES),
        }


# Seconds a client waits before retrying a read refused because ClickHouse cannot be reached.
CLICKHOUSE_RETRY_AFTER_S = 5
# ... or because a range's rollups changed under each attempt to read it (a writer's swap is brief).
ROLLUPS_CHANGING_RETRY_AFTER_S = 1
# Every route that reads ClickHouse may answer this while the server is down or restarting.
_CLICKHOUSE_DOWN = documented(
    {
        503: "ClickHouse unreachable (down or restarting), or a range's rollups rewritten under each attempt"
        " to read it: nothing read; retry after Retry-After (seconds)."
    }
)
_SECURED: dict[str, Any] = {
    "guards": [client_guard],
    "security": [{SECURITY_SCHEME: []}],
    "responses": {
        **documented(
            {
                400: "a parameter is missing, sent twice or invalid (a date, an hour, an id, a type or device"
                " outside its enum, ...): `field` names it as sent and `detail` starts with it"
            }
        ),
        **statuses(401, 403),
        **_CLICKHOUSE_DOWN,
    },
}
_CACHED = [
    ResponseHeader(
        name="ETag", documentation_only=True, description="hash of the body; send it back in If-None-Match for a 304"
    ),
    ResponseHeader(
        name="Cache-Control",
        documentation_only=True,
        description="max-age once the bucket can no longer change, else no-cache",
    ),
]


@dataclass(frozen=True)
class ScreenReads:
    """Reads of one selection (client, screen, type, device), answered as cached JSON for the request at hand.

    Every body echoes its filter, so answers of different filters never share an ETag.
    """

    request: Request
    store: FinalReads
    settings: Settings
    selection: Selection

    async def bucket(self, span: Span) -> Response[Heatmap]:
        # The cells arrive encoded (msgspec.Raw); the field's annotation is the schema OpenAPI shows.
        cells = cast("CellColumns", await self.store.cells(self.selection, [span]))
        body = Heatmap(cells=cells, type=self.selection.type, device=self.selection.device)
        return cached_json(self.request, body, span.end, self.settings)

    async def range(self, start: datetime, end: datetime) -> Response[RangeHeatmap]:
        spans, cells = await self.store.range_cells(self.selection, start, end)
        body = RangeHeatmap(
            cells=cast("CellColumns", cells),
            type=self.selection.type,
            device=self.selection.device,
            start=start,
            end=end,
            used=_used(spans),
        )
        return cached_json(self.request, body, end, self.settings)

    async def scroll_bucket(self, span: Span) -> Response[ScrollMap]:
        views, rows, fold = reach(await self.store.scroll(self.selection, [span]))
        body = ScrollMap(views=views, rows=rows, fold=fold, device=self.selection.device)
        return cached_json(self.request, body, span.end, self.settings)

    async def scroll_range(self, start: datetime, end: datetime) -> Response[RangeScrollMap]:
        spans, summed = await self.store.range_scroll(self.selection, start, end)
        views, rows, fold = reach(summed)
        body = RangeScrollMap(
            views=views, rows=rows, fold=fold, device=self.selection.device, start=start, end=end, used=_used(spans)
        )
        return cached_json(self.request, body, end, self.settings)


def _used(spans: list[Span]) -> list[BucketSpan]:
    return [BucketSpan(grain=s.grain, start=s.start, end=s.end, buckets=s.buckets) for s in spans]


def provide_cell_reads(
    request: Request,
    final_reads: NamedDependency[FinalReads],
    settings: NamedDependency[Settings],
    client_id: ClientId,
    screen_id: ScreenId,
    type: TypeParam = ALL,  # named as the client sends it; shadows the builtin in this scope only
    device: DeviceParam = ALL,
) -> ScreenReads:
    return ScreenReads(request, final_reads, settings, Selection(client_id, screen_id, type, device))


def provide_scroll_reads(
    request: Request,
    final_reads: NamedDependency[FinalReads],
    settings: NamedDependency[Settings],
    client_id: ClientId,
    screen_id: ScreenId,
    device: DeviceParam = ALL,
) -> ScreenReads:
    return ScreenReads(request, final_reads, settings, Selection(client_id, screen_id, device=device))


class HeatmapController(Controller):
    path = "/heatmap"
    tags = ("heatmap",)
    dependencies = {"screen": Provide(provide_cell_reads, sync_to_thread=False)}  # noqa: RUF012  (Litestar copies it per app)

    @get("/hourly", **_SECURED, response_headers=_CACHED)
    async def hourly(self, screen: NamedDependency[ScreenReads], dt: Day, hour: Hour) -> Response[Heatmap]:
        """Cells of one UTC hour."""
        return await screen.bucket(hour_bucket(dt, hour))

    @get("/daily", **_SECURED, response_headers=_CACHED)
    async def daily(self, screen: NamedDependency[ScreenReads], dt: Day) -> Response[Heatmap]:
        """Cells of one UTC day."""
        return await screen.bucket(day_bucket(dt))

    @get("/weekly", **_SECURED, response_headers=_CACHED)
    async def weekly(self, screen: NamedDependency[ScreenReads], week_start: WeekStart) -> Response[Heatmap]:
        """Cells of one week, Sunday 00:00 UTC to the next Sunday."""
        return await screen.bucket(week_bucket(week_start))

    @get("/range", **_SECURED, response_headers=_CACHED)
    async def range_(self, screen: NamedDependency[ScreenReads], from_: From, to: To) -> Response[RangeHeatmap]:
        """Cells of [from, to), summed from the fewest rows: whole weeks, whole days, then hours.

        ``buckets`` reports the spans of each grain that answered.
        """
        return await screen.range(*range_bounds(from_, to))

    @get(
        "/clients",
        security=[{SECURITY_SCHEME: []}],
        responses={**statuses(400, 401, 403), **_CLICKHOUSE_DOWN},
    )
    async def clients(
        self, store: NamedDependency[HeatmapStore], settings: NamedDependency[Settings], read_key: ReadKey = None
    ) -> ClientList:
        """Clients holding data (with keys on: those the presented read key opens)."""
        allowed = readable_clients(settings, read_key)
        return ClientList(clients=[c for c in await store.clients() if allowed is None or c in allowed])

    @get("/screens", **_SECURED)
    async def screens(self, store: NamedDependency[HeatmapStore], client_id: ClientId) -> ScreenList:
        """Screens of a client holding data; ``dimensions`` gives each one's event types and devices."""
        dimensions = await store.screens(client_id)
        return ScreenList(client_id=client_id, screens=[d.screen_id for d in dimensions], dimensions=dimensions)

    @get("/freshness", **_SECURED)
    async def freshness(
        self, store: NamedDependency[HeatmapStore], client_id: ClientId, from_: From, to: To
    ) -> Freshness:
        """When the buckets of [from, to) were last written (null: never); a live dashboard view shows it."""
        start, end = range_bounds(from_, to)
        return Freshness(
            client_id=client_id,
            start=start,
            end=end,
            materialized_at=await store.materialized_at(client_id, start, end),
        )

    @get("/buckets", **_SECURED)
    async def buckets(
        self,
        store: NamedDependency[HeatmapStore],
        client_id: ClientId,
        screen_id: ScreenId,
        grain: GrainParam,
        type: TypeParam = ALL,  # named as the client sends it; shadows the builtin in this scope only
        device: DeviceParam = ALL,
    ) -> BucketList:
        """Buckets of one grain holding cells of the type and device for a screen, newest first."""
        selection = Selection(client_id, screen_id, type, device)
        return BucketList(
            client_id=client_id,
            screen_id=screen_id,
            grain=grain,
            buckets=await store.buckets(selection, grain),
            type=type,
            device=device,
        )


class ScrollController(Controller):
    """Scroll reach: per depth row the share of page views that scrolled down to it, and the median fold."""

    path = "/heatmap/scroll"
    tags = ("heatmap",)
    dependencies = {"screen": Provide(provide_scroll_reads, sync_to_thread=False)}  # noqa: RUF012  (Litestar copies it per app)

    @get("/hourly", **_SECURED, response_headers=_CACHED)
    async def hourly(self, screen: NamedDependency[ScreenReads], dt: Day, hour: Hour) -> Response[ScrollMap]:
        """Scroll reach of one UTC hour: per depth row, the share of page views that scrolled down to it; the median fold."""
        return await screen.scroll_bucket(hour_bucket(dt, hour))

    @get("/daily", **_SECURED, response_headers=_CACHED)
    async def daily(self, screen: NamedDependency[ScreenReads], dt: Day) -> Response[ScrollMap]:
        """Scroll reach of one UTC day: the sum of its hours (a view active in two hours counts in each)."""
        return await screen.scroll_bucket(day_bucket(dt))

    @get("/weekly", **_SECURED, response_headers=_CACHED)
    async def weekly(self, screen: NamedDependency[ScreenReads], week_start: WeekStart) -> Response[ScrollMap]:
        """Scroll reach of one week, Sunday 00:00 UTC to the next Sunday."""
        return await screen.scroll_bucket(week_bucket(week_start))

    @get("/range", **_SECURED, response_headers=_CACHED)
    async def range_(self, screen: NamedDependency[ScreenReads], from_: From, to: To) -> Response[RangeScrollMap]:
        """Scroll reach of [from, to), summed like the cells' range: whole weeks, whole days, then hours."""
        return await screen.scroll_range(*range_bounds(from_, to))


class ScreenshotController(Controller):
    path = "/screenshots/{client_id:str}/{screen_id:str}"
    tags = ("screenshots",)

    # Litestar 2.25 builds a path's automatic OPTIONS answer from its first handler only
    # (Allow: GET, OPTIONS here); so this path answers OPTIONS itself.
    @route(http_method=HttpMethod.OPTIONS, include_in_schema=False, sync_to_thread=False)
    def allow(self) -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, PUT"})

    @put(
        **{**_SECURED, "responses": statuses(400, 401, 403, 413, 415)},
        sync_to_thread=True,
        operation_class=ImageUpload,
        request_max_body_size=MAX_SCREENSHOT_BYTES,
        status_code=200,
        description=f"PNG, JPEG or WebP bytes as the body, at most {MAX_SCREENSHOT_BYTES} bytes; replaces the screen's screenshot.",
    )
    def upload(
        self,
        request: Request,
        screenshots: NamedDependency[ScreenshotStore],
        client_id: ClientId,
        screen_id: ScreenId,
        body: RawBody,
    ) -> ScreenshotInfo:
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        try:
            etag = screenshots.put(client_id, screen_id, body, content_type)
        except InvalidImage as exc:
            raise ClientException(str(exc), status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE) from exc
        return ScreenshotInfo(
            client_id=client_id, screen_id=screen_id, content_type=content_type, bytes=len(body), etag=etag
        )

    @get(
        **{**_SECURED, "responses": statuses(400, 401, 403, 404)},
        sync_to_thread=True,
        operation_class=ImageDownload,
        description="The screen's screenshot with its stored Content-Type; 404 when none.",
    )
    def download(
        self, request: Request, screenshots: NamedDependency[ScreenshotStore], client_id: ClientId, screen_id: ScreenId
    ) -> Response[bytes]:
        found = screenshots.get(client_id, screen_id)
        if found is None:
            raise NotFoundException(f"no screenshot for {client_id}/{screen_id}; upload one with PUT")
        headers = {"ETag": found.etag, "Cache-Control": "private, no-cache", "X-Content-Type-Options": "nosniff"}
        if etag_matches(request.headers.get("if-none-match"), found.etag):
            return Response(content=b"", status_code=304, headers=headers)
        return Response(content=found.body, media_type=found.content_type, headers=headers)
