"""ClickHouse reads. Parameterized SQL only: values travel as ``{name:Type}``
parameters; the only interpolated names are table names from heatmap_core.schema
and the configured database."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from heatmap_core.clickhouse import clickhouse, utc_param
from heatmap_core.schema import TABLES
from heatmap_core.settings import Settings
from query_api.buckets import LENGTH, Grain, Span, plan_range
from query_api.models import BucketSummary, Cell

_KEY = "client_id = {client_id:String} AND screen_id = {screen_id:String}"


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


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
            parameters[f"{grain}_from"] = [utc_param(s.start) for s in grain_spans]
            parameters[f"{grain}_to"] = [utc_param(s.end) for s in grain_spans]
            # The outer bounds keep the primary-key range scan; the spans pick the buckets.
            parameters[f"{grain}_lo"] = utc_param(grain_spans[0].start)
            parameters[f"{grain}_hi"] = utc_param(grain_spans[-1].end)
            parts.append(
                f"SELECT cell_x, cell_y, count FROM {self._table(grain)} WHERE {_KEY}"
                f" AND bucket_start >= {{{grain}_lo:DateTime('UTC')}} AND bucket_start < {{{grain}_hi:DateTime('UTC')}}"
                f" AND arrayExists((lo, hi) -> bucket_start >= lo AND bucket_start < hi,"
                f" {{{grain}_from:Array(DateTime('UTC'))}}, {{{grain}_to:Array(DateTime('UTC'))}})"
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
                f"SELECT DISTINCT 'week', bucket_start FROM {self._table('week')} WHERE {_KEY}"
                " AND bucket_start >= {start:DateTime('UTC')} AND bucket_start < {end:DateTime('UTC')}"
                f" UNION ALL SELECT DISTINCT 'day', bucket_start FROM {self._table('day')} WHERE {_KEY}"
                " AND bucket_start >= {start:DateTime('UTC')} AND bucket_start < {end:DateTime('UTC')}",
                parameters={"client_id": client_id, "screen_id": screen_id, "start": utc_param(start), "end": utc_param(end)},
            ).result_rows
            spans = plan_range(start, end, {(grain, _aware(moment)) for grain, moment in present})
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
            BucketSummary(start=_aware(start), end=_aware(start) + LENGTH[grain], total=int(total), cells=int(cells))
            for start, total, cells in rows
        ]
