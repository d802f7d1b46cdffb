"""ClickHouse reads. Parameterized SQL only: values travel as ``{name:Type}``
parameters; the only interpolated names are table and column names from
heatmap_core.schema and the configured database.

Cells and scroll reach are read the same way: a ``Selection`` picks the rows
(client, screen, and event type and device unless ``all``), spans of buckets
pick the times, and the kind's measures are summed per position (a cell, a
depth row) over the spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import DatabaseError

from heatmap_core.clickhouse import async_clickhouse
from heatmap_core.schema import SCROLL_TABLES, TABLES, WRITE_LOG, BucketTable
from heatmap_core.settings import Settings
from heatmap_core.sql import in_window, time_array_parameter, time_parameter
from heatmap_core.timeutil import BUCKET_LENGTH, as_utc, naive_utc
from query_api.buckets import EARLIEST, ROLLUP_GRAINS, Grain, Span, fitting_starts, plan_range
from query_api.dimensions import Selection
from query_api.models import BucketSummary, CellColumns, ScreenDimensions

# ClickHouse writes a map read's cells as the JSON of ``models.CellColumns``, byte for byte what
# msgspec would write (fields in order, no spaces, counts as numbers): one row of three arrays, whose
# Raw text is ``[1,2,3]``.
CELLS_JSON_FORMAT = "Template"
CELLS_JSON_SETTINGS = {
    "format_template_resultset_format": "${data}",
    "format_template_row_format": '{"cell_x":${cell_x:Raw},"cell_y":${cell_y:Raw},"count":${count:Raw}}',
}
NO_CELLS = msgspec.json.encode(CellColumns(cell_x=[], cell_y=[], count=[]))


Tables = Mapping[str, BucketTable]  # grain -> table of one kind: schema.TABLES or schema.SCROLL_TABLES
RollupWindow = tuple[BucketTable, datetime, datetime]  # a weekly or daily table and a [lo, hi) of bucket starts
Presence = frozenset[tuple[str, datetime]]  # (grain, bucket_start) of rollup buckets written for a screen


@dataclass(frozen=True)
class PlannedOn:
    """The rollups a range's plan took as present in some windows, seen by an earlier read: the read
    made from the plan checks them itself (``plan_check_sql``) and refuses with ``StalePlan``."""

    screen: Selection
    windows: tuple[RollupWindow, ...]
    present: Presence


class StalePlan(RuntimeError):
    """The windows of ``PlannedOn`` no longer hold the rollups the plan was made from: nothing was read."""


# ClickHouse's code for a throwIf that threw (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO): the plan check's.
_THREW = 395


def presence_sql(
    database: str, screen: Selection, windows: Iterable[RollupWindow]
) -> tuple[str, dict[str, Any]] | None:
    """The query of the (grain, bucket_start) of the rollup buckets written for the screen whose start
    lies in one of ``windows`` (a weekly or daily table and a [lo, hi) each; an empty one is skipped),
    and its parameters; None when every window is empty.

    Presence ignores the type and device filter: a rollup is written whole,
    so one without the filtered rows holds none of them, and is still exact.
    It costs about as much as summing the buckets it finds: ClickHouse opens
    every partition (bucket) inside the windows.
    """
    where, selected = Selection(screen.client_id, screen.screen_id).where([])
    parameters: dict[str, Any] = dict(selected)
    parts = []
    for index, (table, lo, hi) in enumerate(windows):
        if lo < hi:
            parameters |= {f"lo{index}": naive_utc(lo), f"hi{index}": naive_utc(hi)}
            parts.append(
                f"SELECT DISTINCT '{table.grain}' AS grain, bucket_start FROM `{database}`.`{table.name}`"
                f" WHERE {where} AND {in_window(time_parameter(f'lo{index}'), time_parameter(f'hi{index}'))}"
            )
    return (" UNION ALL ".join(parts), parameters) if parts else None


def plan_check_sql(database: str, planned_on: PlannedOn) -> tuple[str, dict[str, Any]] | None:
    """A column for a one-row read that throws unless the windows of ``planned_on`` hold exactly the
    rollups it names (None when its windows are empty: nothing can have changed), and its parameters.

    ClickHouse runs the scalar subquery once, before the read, so a plan made from an earlier read's
    presence costs no round trip of its own; the presence and the buckets are read as close together
    as by two queries in a row.
    """
    query = presence_sql(database, planned_on.screen, planned_on.windows)
    if query is None:
        return None
    present, parameters = query
    planned = sorted(planned_on.present)
    parameters |= {
        "planned_grains": [grain for grain, _ in planned],
        "planned_starts": [naive_utc(start) for _, start in planned],
    }
    seen = f"(SELECT arraySort(groupArray((grain, bucket_start))) FROM ({present}))"
    expected = f"arraySort(arrayZip({{planned_grains:Array(String)}}, {time_array_parameter('planned_starts')}))"
    return f"throwIf({seen} != {expected}, 'the rollups changed since the range was planned')", parameters


def as_columns(
    sums: tuple[str, dict[str, Any]], columns: Sequence[str], check: tuple[str, dict[str, Any]] | None = None
) -> tuple[str, dict[str, Any]]:
    """The query of one row holding each of ``columns`` of the ``sums`` query as an array, in the order
    of its rows, and its parameters (``groupArray`` keeps the order of its input: ClickHouse keeps a
    sort under an aggregate that depends on order and merges the sorted streams into the one it
    aggregates); ``check`` (a ``plan_check_sql`` column and its parameters) rides along."""
    sql, parameters = sums
    selected = [f"groupArray({column}) AS {column}" for column in columns]
    if check is not None:
        selected.append(f"{check[0]} AS plan_check")
        parameters = parameters | check[1]
    return f"SELECT {', '.join(selected)} FROM ({sql})", parameters


@contextmanager
def _plan_checked() -> Iterator[None]:
    try:
        yield
    except DatabaseError as exc:
        if exc.code == _THREW:
            raise StalePlan(str(exc)) from exc
        raise


def span_sum_sql(
    database: str, tables: Tables, selection: Selection, spans: Iterable[Span]
) -> tuple[str, dict[str, Any]] | None:
    """The query summing the kind's measures per map position (a cell, a depth row) over every
    bucket inside ``spans`` (None when there are none), and its parameters; rows come ordered by
    position."""
    by_grain: dict[str, list[Span]] = {}
    for span in spans:
        by_grain.setdefault(span.grain, []).append(span)
    if not by_grain:
        return None
    kind = next(iter(tables.values())).kind
    position, measures = kind.map_position, kind.measures
    columns = ", ".join((*position, *measures))
    parts = []
    parameters: dict[str, Any] = {}
    for grain, grain_spans in by_grain.items():
        table = tables[grain]
        where, selected = selection.where(table.column_names)
        parameters.update(selected)
        # The outer bounds keep the primary-key range scan; the spans pick the buckets.
        parameters[f"{grain}_lo"] = naive_utc(grain_spans[0].start)
        parameters[f"{grain}_hi"] = naive_utc(grain_spans[-1].end)
        part = (
            f"SELECT {columns} FROM `{database}`.`{table.name}` WHERE {where}"
            f" AND {in_window(time_parameter(f'{grain}_lo'), time_parameter(f'{grain}_hi'))}"
        )
        if len(grain_spans) > 1:  # one span is its outer bounds (every bucket read but a range's)
            parameters[f"{grain}_from"] = [naive_utc(s.start) for s in grain_spans]
            parameters[f"{grain}_to"] = [naive_utc(s.end) for s in grain_spans]
            part += (
                f" AND arrayExists((lo, hi) -> {in_window('lo', 'hi')},"
                f" {time_array_parameter(f'{grain}_from')}, {time_array_parameter(f'{grain}_to')})"
            )
        parts.append(part)
    key = ", ".join(position)
    sums = ", ".join(f"sum({measure}) AS {measure}" for measure in measures)  # named: JSON output keys by name
    sql = f"SELECT {key}, {sums} FROM ({' UNION ALL '.join(parts)}) GROUP BY {key} ORDER BY {key}"
    return sql, parameters


def materialized_at_sql(
    database: str, client_id: str, start: datetime, end: datetime
) -> tuple[str, dict[str, Any]] | None:
    """The query of when the client's view of a bucket overlapping [start, end) last changed (Unix
    seconds, NULL when never), and its parameters; None for an empty range.

    It reads the write log (``schema.WRITE_LOG``), which ``replace_bucket`` appends to after each swap
    for the clients of the bucket's new and old rows: a client's log rows are its own, so another
    tenant's writes are never seen. A bucket overlaps the range when it starts before ``end`` and ends
    after ``start`` (a week starting up to six days before ``start`` counts). The lower bound on
    ``bucket_start`` (no bucket is longer than a week) lets the sort key (client_id, bucket_start)
    narrow the read to the client's log rows near the range: O(those rows), not O(its cells).
    """
    if start >= end:
        return None
    sql = (
        f"SELECT toUnixTimestamp(maxOrNull(written_at)) FROM `{database}`.`{WRITE_LOG}`"
        f" WHERE client_id = {{client_id:String}} AND bucket_start >= {time_parameter('earliest')}"
        f" AND bucket_start < {time_parameter('end')} AND bucket_end > {time_parameter('start')}"
    )
    return sql, {
        "client_id": client_id,
        "earliest": naive_utc(max(start - max(BUCKET_LENGTH.values()), EARLIEST)),
        "start": naive_utc(start),
        "end": naive_utc(end),
    }


class HeatmapStore:
    """One ClickHouse unit of work per call, on the asyncio client that ``open`` makes on the app's
    event loop (``close`` on the way out)."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._database = settings.clickhouse_database
        self._client: AsyncClient | None = None

    async def open(self) -> None:
        self._client = await async_clickhouse(self._settings)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise RuntimeError("HeatmapStore used before open() (the app's startup) or after close()")
        return self._client

    def _table(self, table: BucketTable) -> str:
        return f"`{self._database}`.`{table.name}`"

    def _union(self, select: str) -> str:
        """``select`` (with a ``{table}`` slot) over the three cell tables."""
        return " UNION ALL ".join(select.format(table=self._table(table)) for table in TABLES.values())

    async def presence(self, screen: Selection, windows: Iterable[RollupWindow]) -> Presence:
        """``presence_sql``'s rollup buckets."""
        query = presence_sql(self._database, screen, windows)
        if query is None:
            return frozenset()
        present = (await self.client.query(*query)).result_rows
        return frozenset((grain, as_utc(moment)) for grain, moment in present)

    async def _plan(self, tables: Tables, selection: Selection, start: datetime, end: datetime) -> list[Span]:
        """Plan [start, end) over the weekly and daily buckets of ``tables`` that were written for the screen."""
        windows = [(tables[grain], *fitting_starts(grain, start, end, end)) for grain in ROLLUP_GRAINS]
        return plan_range(start, end, await self.presence(selection, windows))

    def _columns_query(
        self, tables: Tables, selection: Selection, spans: Iterable[Span], planned_on: PlannedOn | None
    ) -> tuple[str, dict[str, Any]] | None:
        """The one-row read of the kind's sums over ``spans`` (``as_columns``: the map position and the
        measures as arrays), checking ``planned_on`` when given; None when there is no bucket to sum."""
        sums = span_sum_sql(self._database, tables, selection, spans)
        if sums is None:
            return None
        kind = next(iter(tables.values())).kind
        check = plan_check_sql(self._database, planned_on) if planned_on is not None else None
        return as_columns(sums, (*kind.map_position, *kind.measures), check)

    async def cells(
        self, selection: Selection, spans: Iterable[Span], planned_on: PlannedOn | None = None
    ) -> msgspec.Raw:
        """Summed cells of every bucket inside ``spans``, ordered by (cell_x, cell_y): the JSON of
        ``models.CellColumns``, written by ClickHouse (msgspec embeds it as it is in an answer).
        ``StalePlan`` when the spans were planned on rollups (``planned_on``) no longer there.

        ClickHouse writes it, not Python: building, encoding and freeing 20,000 cells one object at
        a time was about 40% of the API's CPU for a warm read of a day that can still change.
        """
        query = self._columns_query(TABLES, selection, spans, planned_on)
        if query is None:  # no bucket to sum: nothing to ask ClickHouse
            return msgspec.Raw(NO_CELLS)
        with _plan_checked():
            return msgspec.Raw(await self.client.raw_query(*query, settings=CELLS_JSON_SETTINGS, fmt=CELLS_JSON_FORMAT))

    async def range_cells(self, selection: Selection, start: datetime, end: datetime) -> tuple[list[Span], msgspec.Raw]:
        spans = await self._plan(TABLES, selection, start, end)
        return spans, await self.cells(selection, spans)

    async def scroll(
        self, selection: Selection, spans: Iterable[Span], planned_on: PlannedOn | None = None
    ) -> list[tuple[int, int, int]]:
        """Summed ``(depth_row, reached, folds)`` of every bucket inside ``spans``, ordered by depth_row;
        ``StalePlan`` as for ``cells``."""
        # Columns, not rows: clickhouse-connect decodes the native format column by column, and
        # turning rows into tuples one value at a time cost three times the query itself.
        query = self._columns_query(SCROLL_TABLES, selection, spans, planned_on)
        if query is None:
            return []
        with _plan_checked():
            depth_rows, reached, folds, *_check = (await self.client.query(*query)).result_rows[0]
        return list(zip(depth_rows, reached, folds, strict=True))

    async def range_scroll(
        self, selection: Selection, start: datetime, end: datetime
    ) -> tuple[list[Span], list[tuple[int, int, int]]]:
        spans = await self._plan(SCROLL_TABLES, selection, start, end)
        return spans, await self.scroll(selection, spans)

    async def materialized_at(self, client_id: str, start: datetime, end: datetime) -> datetime | None:
        """When the client's view of a bucket overlapping [start, end) last changed, None when never:
        ``materialized_at_sql``."""
        query = materialized_at_sql(self._database, client_id, start, end)
        if query is None:
            return None
        newest = (await self.client.query(*query)).result_rows[0][0]  # an aggregate: always one row
        return None if newest is None else datetime.fromtimestamp(newest, UTC)

    async def clients(self) -> list[str]:
        sql = self._union("SELECT DISTINCT client_id FROM {table}")
        rows = (await self.client.query(f"SELECT DISTINCT client_id FROM ({sql}) ORDER BY client_id")).result_rows
        return [row[0] for row in rows]

    async def screens(self, client_id: str) -> list[ScreenDimensions]:
        """Screens of a client holding cells, each with the event types and devices present, by screen_id."""
        sql = self._union(
            "SELECT DISTINCT screen_id, event_type, device FROM {table} WHERE client_id = {{client_id:String}}"
        )
        answer = await self.client.query(
            "SELECT screen_id, arraySort(groupUniqArray(event_type)), arraySort(groupUniqArray(device))"
            f" FROM ({sql}) GROUP BY screen_id ORDER BY screen_id",
            parameters={"client_id": client_id},
        )
        rows = answer.result_rows
        return [ScreenDimensions(screen_id=screen, types=types, devices=devices) for screen, types, devices in rows]

    async def buckets(self, selection: Selection, grain: Grain) -> list[BucketSummary]:
        """Buckets of one grain holding cells of the selection, newest first, with the views of their scroll reach."""
        cells_where, parameters = selection.where(TABLES[grain].column_names)
        scroll_where, scroll_parameters = selection.where(SCROLL_TABLES[grain].column_names)
        # Two independent reads: sent side by side, the answer waits for the slower one only.
        summaries, reach = await asyncio.gather(
            self.client.query(
                "SELECT bucket_start, sum(count), uniqExact(cell_x, cell_y),"
                " arraySort(groupUniqArray(event_type)), arraySort(groupUniqArray(device))"
                f" FROM {self._table(TABLES[grain])} WHERE {cells_where}"
                " GROUP BY bucket_start ORDER BY bucket_start DESC",
                parameters=parameters,
            ),
            self.client.query(
                f"SELECT bucket_start, sum(reached) FROM {self._table(SCROLL_TABLES[grain])}"
                f" WHERE {scroll_where} AND depth_row = 0 GROUP BY bucket_start",
                parameters=scroll_parameters,
            ),
        )
        # Every counted view reached row 0, so row 0's reach is the bucket's views.
        views: dict[datetime, int] = {start: int(reached) for start, reached in reach.result_rows}
        rows = summaries.result_rows
        return [
            BucketSummary(
                start=as_utc(start),
                end=as_utc(start) + BUCKET_LENGTH[grain],
                total=int(total),
                cells=int(cells),
                types=types,
                devices=devices,
                views=int(views.get(start, 0)),
            )
            for start, total, cells, types, devices in rows
        ]
