"""Response bodies (msgspec Structs; Litestar derives the OpenAPI schema from them)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from heatmap_core.grid import GRID_H, GRID_W
from query_api.buckets import Grain


class Cell(msgspec.Struct):
    cell_x: int
    cell_y: int
    count: int


class Heatmap(msgspec.Struct):
    """The DESIGN.md contract for one bucket."""

    cells: list[Cell]
    grid_w: int = GRID_W
    grid_h: int = GRID_H


class BucketSpan(msgspec.Struct):
    """``buckets`` consecutive buckets of ``grain`` covering [start, end)."""

    grain: Grain
    start: datetime
    end: datetime
    buckets: int


class RangeHeatmap(msgspec.Struct):
    cells: list[Cell]
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    used: list[BucketSpan] = msgspec.field(name="buckets")
    grid_w: int = GRID_W
    grid_h: int = GRID_H


class ClientList(msgspec.Struct):
    clients: list[str]


class ScreenList(msgspec.Struct):
    client_id: str
    screens: list[str]


class BucketSummary(msgspec.Struct):
    start: datetime
    end: datetime
    total: int
    cells: int


class BucketList(msgspec.Struct):
    client_id: str
    screen_id: str
    grain: Grain
    buckets: list[BucketSummary]


class Health(msgspec.Struct):
    status: str


class ScreenshotInfo(msgspec.Struct):
    client_id: str
    screen_id: str
    content_type: str
    bytes: int
    etag: str
