"""ClickHouse reads. Parameterized SQL only: values travel as ``{name:Type}``
parameters; the only interpolated names are table names from heatmap_core.schema
and the configured database."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from heatmap_core.clickhouse import clickhouse
from heatmap_core.schema import TABLES
from heatmap_core.settings import Settings
from heatmap_core.sql import BUCKET_WINDOW, in_window, time_array_parameter, time_parameter, window_parameters
from heatmap_core.timeutil import as_utc, naive_utc
from query_api.buckets import LENGTH, Grain, Span, plan_range
from query_api.models import BucketSummary, Cell

_KEY = "client_id = {client_id:String} AND screen_id = {screen_id:String}"


class HeatmapStore:
    """One ClickHouse unit of work per call (the embedded engine's lock is held only inside it)."""

    def __init__(self, settings: Settings):
        self._settings = settings

    def _table(self, grain: str) -> str:
        return f"`{self._settings.clickhouse_database}`.`{TABLES[grain].name}`"

    def _union(self, select: str) -> str:
        """``select`` (with a ``{table}`` slot) over the three bucket tables."""
        return " UNION ALL ".join(select.format(table=self._table(grain)) for grain in LENGTH)

    def cells(self, client_id: str, screen_id: str, spans: Iterable[Span]) -> list[Cell]:
        """Summed cells of every bucket inside ``spans``."""
        by_grain: dict[str, list[Span]] = {}
        for span in spans:
            by_grain.setdefault(span.grain, []).append(span)
        if not by_grain:
            return []
        parameters: dict = {"client_id": client_id, "screen_id": screen_id}
        parts = []
        for grain, grain_spans in by_grain.items():
            parameters[f"{grain}_from"] = [naive_utc(s.start) for s in grain_spans]
            parameters[f"{grain}_to"] = [naive_utc(s.end) for s in grain_spans]
            # The outer bounds keep the primary-key range scan; the spans pick the buckets.
            parameters[f"{grain}_lo"] = naive_utc(grain_spans[0].start)
            parameters[f"{grain}_hi"] = naive_utc(grain_spans[-1].end)
            parts.append(
                f"SELECT cell_x, cell_y, count FROM {self._table(grain)} WHERE {_KEY}"
                f" AND {in_window(time_parameter(f'{grain}_lo'), time_parameter(f'{grain}_hi'))}"
                f" AND arrayExists((lo, hi) -> {in_window('lo', 'hi')},"
                f" {time_array_parameter(f'{grain}_from')}, {time_array_parameter(f'{grain}_to')})"
            )
        sql = (
            f"SELECT cell_x, cell_y, sum(count) FROM ({' UNION ALL '.join(parts)})"
            " GROUP BY cell_x, cell_y ORDER BY cell_x, cell_y"
        )
        with clickhouse(self._settings) as client:
            rows = client.query(sql, parameters=parameters).result_rows
        return [Cell(int(x), int(y), int(count)) for x, y, count in rows]

    def range_cells(
        self, client_id: str, screen_id: str, start: datetime, end: datetime
    ) -> tuple[list[Span], list[Cell]]:
        """Plan [start, end) over the rollups present, then sum it, in one unit of work."""
        with clickhouse(self._settings) as client:
            present = client.query(
                f"SELECT DISTINCT 'week', bucket_start FROM {self._table('week')} WHERE {_KEY} AND {BUCKET_WINDOW}"
                f" UNION ALL SELECT DISTINCT 'day', bucket_start FROM {self._table('day')} WHERE {_KEY} AND {BUCKET_WINDOW}",
                parameters={"client_id": client_id, "screen_id": screen_id, **window_parameters(start, end)},
            ).result_rows
            spans = plan_range(start, end, {(grain, as_utc(moment)) for grain, moment in present})
            return spans, self.cells(client_id, screen_id, spans)

    def clients(self) -> list[str]:
        sql = self._union("SELECT DISTINCT client_id FROM {table}")
        with clickhouse(self._settings) as client:
            rows = client.query(f"SELECT DISTINCT client_id FROM ({sql}) ORDER BY client_id").result_rows
        return [row[0] for row in rows]

    def screens(self, client_id: str) -> list[str]:
        sql = self._union("SELECT DISTINCT screen_id FROM {table} WHERE client_id = {{client_id:String}}")
        with clickhouse(self._settings) as client:
            rows = client.query(
                f"SELECT DISTINCT screen_id FROM ({sql}) ORDER BY screen_id", parameters={"client_id": client_id}
            ).result_rows
        return [row[0] for row in rows]

    def buckets(self, client_id: str, screen_id: str, grain: Grain) -> list[BucketSummary]:
        """Buckets of one grain holding rows, newest first, with their total and cell count."""
        with clickhouse(self._settings) as client:
            rows = client.query(
                f"SELECT bucket_start, sum(count), count() FROM {self._table(grain)} WHERE {_KEY}"
                " GROUP BY bucket_start ORDER BY bucket_start DESC",
                parameters={"client_id": client_id, "screen_id": screen_id},
            ).result_rows
        return [
            BucketSummary(start=as_utc(start), end=as_utc(start) + LENGTH[grain], total=int(total), cells=int(cells))
            for start, total, cells in rows
        ]
