"""Response bodies (msgspec Structs; Litestar derives the OpenAPI schema from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec

from heatmap_core.grid import GRID_H, GRID_W
from query_api.buckets import Grain
from query_api.dimensions import ALL, DeviceFilter, TypeFilter


class CellColumns(msgspec.Struct):
    """An answer's cells as three columns of one length: cell ``i`` is at
    (``cell_x[i]``, ``cell_y[i]``) and holds ``count[i]``. Ordered by (cell_x, cell_y), each
    cell once, only cells with a count. ClickHouse writes them (``HeatmapStore.cells``); this is
    their schema. Columns, not one object per cell: a full grid's answer is 0.2 MB, not 0.75 MB."""

    cell_x: Annotated[list[int], msgspec.Meta(description="grid column of each cell, 0 to grid_w - 1")]
    cell_y: Annotated[list[int], msgspec.Meta(description="grid row of each cell, 0 to grid_h - 1")]
    count: Annotated[list[int], msgspec.Meta(description="the cell's events")]


class Heatmap(msgspec.Struct, kw_only=True):
    """The DESIGN.md contract for one bucket (cells as columns: docs/ARCHITECTURE.md, "Answers"),
    with the filter that selected its cells echoed.

    ``cells`` holds them already encoded (``HeatmapStore.cells``, a ``msgspec.Raw`` that msgspec
    writes as it is); the annotation is their schema, which Litestar documents.
    """

    cells: CellColumns
    type: TypeFilter = ALL
    device: DeviceFilter = ALL
    grid_w: int = GRID_W
    grid_h: int = GRID_H


class BucketSpan(msgspec.Struct):
    """``buckets`` consecutive buckets of ``grain`` covering [start, end)."""

    grain: Grain
    start: datetime
    end: datetime
    buckets: int


class RangeHeatmap(Heatmap, kw_only=True):
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    used: list[BucketSpan] = msgspec.field(name="buckets")


class DepthRow(msgspec.Struct):
    """One depth row of the screen and the page views that scrolled down to it."""

    depth_row: Annotated[int, msgspec.Meta(description="grid row of the depth, 0 (top) to grid_h - 1")]
    y_norm: Annotated[
        float, msgspec.Meta(description="the row's top edge as a depth of the screen: depth_row / grid_h")
    ]
    reached: Annotated[int, msgspec.Meta(description="page views whose deepest scroll reached this row")]
    share: Annotated[float, msgspec.Meta(description="reached / views: 1.0 at row 0")]
    folds: Annotated[
        int, msgspec.Meta(description="page views whose fold (viewport height as a depth) lies in this row")
    ]


class Fold(msgspec.Struct):
    """The median fold: the first row by which half of the views' folds are counted."""

    depth_row: Annotated[int, msgspec.Meta(description="grid row of the median fold")]
    y_norm: Annotated[float, msgspec.Meta(description="that row's top edge as a depth of the screen")]


class ScrollMap(msgspec.Struct, kw_only=True):
    """Scroll reach of one bucket: ``views`` page views, the share reaching each depth row, the median fold.

    No views: ``views`` 0, ``rows`` empty, ``fold`` null.
    """

    views: Annotated[
        int,
        msgspec.Meta(description="page views counted (reached at row 0); a view active in two hours counts in each"),
    ]
    rows: Annotated[list[DepthRow], msgspec.Meta(description="the depth rows holding data, in order")]
    fold: Annotated[Fold | None, msgspec.Meta(description="the median fold; null when no views")]
    device: DeviceFilter = ALL
    grid_h: int = GRID_H


class RangeScrollMap(ScrollMap, kw_only=True):
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    used: list[BucketSpan] = msgspec.field(name="buckets")


class ClientList(msgspec.Struct):
    clients: list[str]


class ScreenDimensions(msgspec.Struct):
    """The event types and devices holding cells of one screen, each sorted."""

    screen_id: str
    types: Annotated[list[str], msgspec.Meta(description="event types holding cells of the screen, sorted")]
    devices: Annotated[list[str], msgspec.Meta(description="devices holding cells of the screen, sorted")]


class ScreenList(msgspec.Struct):
    client_id: str
    screens: list[str]
    dimensions: list[ScreenDimensions]  # one per screen, in the order of ``screens``


class BucketSummary(msgspec.Struct):
    """One bucket holding cells of the filter: the events counted, the distinct cells, the types and
    devices present, and the page views of its scroll reach (0: none recorded)."""

    start: datetime
    end: datetime
    total: Annotated[int, msgspec.Meta(description="events counted in the bucket (of the type and device asked)")]
    cells: Annotated[int, msgspec.Meta(description="distinct cells holding them")]
    types: Annotated[list[str], msgspec.Meta(description="event types present in the bucket, sorted")]
    devices: Annotated[list[str], msgspec.Meta(description="devices present in the bucket, sorted")]
    views: Annotated[
        int, msgspec.Meta(description="page views of the bucket's scroll reach (device filter only); 0: none")
    ]


class BucketList(msgspec.Struct, kw_only=True):
    client_id: str
    screen_id: str
    grain: Grain
    buckets: list[BucketSummary]
    type: TypeFilter = ALL
    device: DeviceFilter = ALL


class Freshness(msgspec.Struct, kw_only=True):
    """When the client's data of [from, to) last changed: the newest write (to the second) of a bucket
    overlapping the range that held or now holds the client's rows (null: none written since the write
    log began); it tells a live view how fresh the numbers it shows are.
    """

    client_id: str
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    materialized_at: datetime | None


class Health(msgspec.Struct):
    status: str


class ScreenshotInfo(msgspec.Struct):
    client_id: str
    screen_id: str
    content_type: str
    bytes: int
    etag: str
