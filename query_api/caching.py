"""HTTP caching of heatmap answers.

Every answer carries a strong ETag (a hash of its body), so a client can
revalidate with If-None-Match and get 304. A bucket whose end lies further in
the past than ingestion still accepts events (event_time_past_hours) plus
SETTLE for the pipeline to land and roll them up can no longer change: it may
be cached for a day without asking. Anything younger says no-cache. Answers
are per client, hence private when keys are on.

The same rule keeps answers in the process (``FinalReads``): a read whose
buckets are all final is answered once by ClickHouse and then from memory, so
a dashboard flipping between past days pays only the answer's encoding. A range
that ends in recent buckets keeps which of its final days and weeks have
rollups, and plans its recent ones from what the last read saw, which the
read of the cells checks in the same query.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Protocol, TypeVar

import msgspec
from async_lru import alru_cache
from litestar import Request, Response
from litestar.status_codes import HTTP_304_NOT_MODIFIED

from heatmap_core.schema import SCROLL_TABLES, TABLES
from heatmap_core.settings import Settings
from heatmap_core.timeutil import BUCKET_LENGTH
from query_api.auth import READ_KEY_HEADER
from query_api.buckets import ROLLUP_GRAINS, Grain, Span, fitting_starts, midnight, plan_range
from query_api.dimensions import Selection
from query_api.store import HeatmapStore, PlannedOn, RollupWindow, StalePlan, Tables

SETTLE = timedelta(hours=6)
# Reads of a range whose recent rollups changed under the last one (a rollup is written once a day
# per screen and grain, so a second attempt is rare and a third rarer still).
PLAN_ATTEMPTS = 3
FINAL_MAX_AGE_S = 86400


def is_final(end: datetime, settings: Settings, now: datetime | None = None) -> bool:
    now = now or datetime.now(UTC)
    return end + timedelta(hours=settings.event_time_past_hours) + SETTLE <= now


def final_before(grain: Grain, settings: Settings, now: datetime | None = None) -> datetime:
    """The latest midnight before which every bucket of ``grain`` is final.

    Days and weeks start at midnight, so a bucket starting before it starts a day
    earlier at the latest and ends ``BUCKET_LENGTH[grain]`` later, at ``is_final``'s horizon or before.
    """
    now = now or datetime.now(UTC)
    horizon = now - timedelta(hours=settings.event_time_past_hours) - SETTLE
    return midnight((horizon - BUCKET_LENGTH[grain] + timedelta(days=1)).date())


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


Answer = TypeVar("Answer", covariant=True)


class PlannedRead(Protocol[Answer]):
    """``HeatmapStore.cells`` or ``.scroll``: a read of spans, checking the rollups they were planned on."""

    def __call__(
        self, selection: Selection, spans: Iterable[Span], planned_on: PlannedOn | None
    ) -> Awaitable[Answer]: ...


@dataclass
class _LastPlan:
    """What the last read of a screen's recent windows planned on; None before any read, or after a
    read found it stale. Replaced whole, so concurrent reads sharing it see one plan or the other."""

    planned_on: PlannedOn | None = None


def _no_plan_yet(_screen: Selection, _windows: tuple[RollupWindow, ...]) -> _LastPlan:
    """A new holder; ``lru_cache`` keeps one per screen and recent windows."""
    return _LastPlan()


class RollupsChanging(RuntimeError):
    """Every attempt at a range found its recent rollups changed between asking and reading them."""


class FinalReads:
    """The store's map reads (cells and scroll reach, of buckets or of a range), with the answers of
    final buckets kept in process.

    - Only a read that ends at or before ``is_final``'s horizon is kept: its buckets can no longer
      change, so the kept answer is the one ClickHouse would give. Any other read goes to
      ClickHouse every time.
    - The key is the whole read: the kind (the method), the selection (client, screen, type,
      device) and the buckets (the spans, or the range's bounds); two clients, filters or buckets
      never share an entry.
    - At most ``entries`` answers per kind are kept; the least recently used goes first.
    - A range that is not final is planned from the rollups present in ClickHouse
      (``plan_range``): which final days and weeks have one is kept per screen and
      window (``final_before`` splits the range); the recent rest is planned from what the last
      read of it saw, and checked by the read itself (``_recent_range``).
    - Tenant isolation is not decided here: the route's guard refuses a client before any read.

    The answers are shared between requests, so nobody may change the lists returned (scroll reach;
    the cells are JSON bytes).
    """

    def __init__(self, store: HeatmapStore, settings: Settings, entries: int):
        self._store = store
        self._settings = settings
        # alru_cache keeps an answer once read (a failed read is not kept) and gives concurrent reads
        # of one key the same one.
        self._cells = alru_cache(maxsize=entries)(store.cells)
        self._scroll = alru_cache(maxsize=entries)(store.scroll)
        self._range_cells = alru_cache(maxsize=entries)(store.range_cells)
        self._range_scroll = alru_cache(maxsize=entries)(store.range_scroll)
        self._presence = alru_cache(maxsize=entries)(store.presence)
        self._last_plans = lru_cache(maxsize=entries)(_no_plan_yet)

    def _final(self, end: datetime) -> bool:
        return is_final(end, self._settings)

    async def cells(self, selection: Selection, spans: Iterable[Span]) -> msgspec.Raw:
        spans = tuple(spans)
        if all(self._final(span.end) for span in spans):
            return await self._cells(selection, spans)
        return await self._store.cells(selection, spans)

    async def scroll(self, selection: Selection, spans: Iterable[Span]) -> list[tuple[int, int, int]]:
        spans = tuple(spans)
        if all(self._final(span.end) for span in spans):
            return await self._scroll(selection, spans)
        return await self._store.scroll(selection, spans)

    async def range_cells(self, selection: Selection, start: datetime, end: datetime) -> tuple[list[Span], msgspec.Raw]:
        if self._final(end):
            return await self._range_cells(selection, start, end)
        return await self._recent_range(TABLES, self._store.cells, selection, start, end)

    async def range_scroll(
        self, selection: Selection, start: datetime, end: datetime
    ) -> tuple[list[Span], list[tuple[int, int, int]]]:
        if self._final(end):
            return await self._range_scroll(selection, start, end)
        return await self._recent_range(SCROLL_TABLES, self._store.scroll, selection, start, end)

    async def _recent_range(
        self, tables: Tables, read: PlannedRead[Answer], selection: Selection, start: datetime, end: datetime
    ) -> tuple[list[Span], Answer]:
        """``read`` of [start, end) as ``plan_range`` covers it, from the rollups present in ClickHouse.

        The range's windows before ``final_before`` (of each rollup grain) can no longer change: their
        presence is kept. Those after it are planned from what the last read of them saw, and the read
        checks that in the same query (``PlannedOn``); only when a rollup was written or dropped
        there since does it take a query of its own and a second read, itself checked: each answer is
        read on the rollups its plan was made from. ``RollupsChanging`` after ``PLAN_ATTEMPTS`` such
        reads.
        """
        screen = Selection(selection.client_id, selection.screen_id)  # presence ignores the filter
        final, recent = [], []
        for grain in ROLLUP_GRAINS:
            split = min(max(start, final_before(grain, self._settings)), end)
            final.append((tables[grain], *fitting_starts(grain, start, split, end)))
            recent.append((tables[grain], *fitting_starts(grain, split, end, end)))
        final_present = await self._presence(screen, tuple(final))
        recent_windows = tuple(recent)
        last = self._last_plans(screen, recent_windows)
        for _ in range(PLAN_ATTEMPTS):
            planned_on = last.planned_on
            if planned_on is None:
                planned_on = PlannedOn(screen, recent_windows, await self._store.presence(screen, recent_windows))
                last.planned_on = planned_on
            spans = plan_range(start, end, final_present | planned_on.present)
            try:
                return spans, await read(selection, spans, planned_on)
            except StalePlan:
                last.planned_on = None  # a rollup came or went: ask which are there now
        raise RollupsChanging(f"the rollups of the range changed under each of {PLAN_ATTEMPTS} reads")

    def kept(self) -> int:
        """How many answers are kept, all kinds together."""
        caches = (self._cells, self._scroll, self._range_cells, self._range_scroll, self._presence, self._last_plans)
        return sum(cache.cache_info().currsize for cache in caches)
