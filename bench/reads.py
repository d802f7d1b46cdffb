"""Query latency at 20,000 cells: p50 and p99 of GET /heatmap/{hourly,daily,weekly,range} (an hour,
a day, a week, 30 days) and of GET /heatmap/freshness (the recent day, the 30 days: what a live
dashboard polls) through the query API, cold and warm, alone and while an hour of 1M lake events
(10M with --big) is being materialized, beside the same SQL sent by a clickhouse-connect client
(warm: the API's own query, from ``span_sum_sql`` or ``materialized_at_sql``; cold: a new client's
first).

The CPU each warm answer costs, summed over the processes that give it (the bench's HTTP or
ClickHouse client, the API, the ClickHouse server), is measured in blocks of reads in a row: on a
shared machine it moves far less than the latencies.

Each map read comes twice: over final buckets (kept in the API's memory after the first read, see
query_api/caching.py) and over recent ones (can still change: ClickHouse answers every time); the
freshness reads come over the recent ones only (never cached).
Everything runs on a chdb_server of the bench's own.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import httpx
import psutil

from bench.common import Result, console, percentile, private_clickhouse, scratch_bucket, uvicorn_app
from bench.scale import write_lake_hour
from heatmap_assets.partitions import hour_key
from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import TABLES
from heatmap_core.settings import Settings
from heatmap_core.timeutil import BUCKET_LENGTH, naive_utc, week_start
from infra.programs import dagster_materialize_command
from query_api.buckets import Grain, Span
from query_api.caching import is_final
from query_api.dimensions import Selection
from query_api.store import materialized_at_sql, span_sum_sql
from traffic.answers import cell_counts

GRID = 20_000  # the whole 100 x 200 grid: every bucket of the bench holds 20,000 cells
# Warm reads of each kind: with nearest-rank percentiles, a p99 of 50 reads is their slowest one; of
# 200 it has two reads above it, so one stall of the shared host no longer is the figure.
WARM = 200
COLD, BIG_COLD = 3, 10  # fresh API processes
CPU_READS = 50  # reads in a row per CPU block: CPU times tick in 10 ms, so 0.2 ms a read
EVENTS, BIG_EVENTS = 1_000_000, 10_000_000
SELECTION = Selection("bench", "home")
DAY, WEEK = timedelta(days=1), timedelta(days=7)
FRESHNESS = "/heatmap/freshness"


@dataclass(frozen=True)
class Read:
    name: str
    path: str
    params: dict[str, str]
    bucket: Span | None = None  # the bucket read; None for a range (its spans are in the answer)

    @property
    def freshness(self) -> bool:
        return self.path == FRESHNESS


def _reads(first_hour: datetime, week: datetime, range_start: datetime, label: str) -> list[Read]:
    base = {"client_id": "bench", "screen_id": "home"}
    day = first_hour.replace(hour=0)
    return [
        Read(
            f"hour, {label}",
            "/heatmap/hourly",
            {**base, "dt": f"{day:%Y-%m-%d}", "hour": str(first_hour.hour)},
            Span("hour", first_hour, first_hour + BUCKET_LENGTH["hour"]),
        ),
        Read(f"day, {label}", "/heatmap/daily", {**base, "dt": f"{day:%Y-%m-%d}"}, Span("day", day, day + DAY)),
        Read(
            f"week, {label}",
            "/heatmap/weekly",
            {**base, "week_start": f"{week:%Y-%m-%d}"},
            Span("week", week, week + WEEK),
        ),
        Read(
            f"30 days, {label}",
            "/heatmap/range",
            {**base, "from": f"{range_start:%Y-%m-%dT%H:%M:%SZ}", "to": f"{range_start + 30 * DAY:%Y-%m-%dT%H:%M:%SZ}"},
        ),
    ]


def _freshness_reads(day: datetime, range_start: datetime) -> list[Read]:
    """The live view's poll over the recent ``day`` and over the 30 days from ``range_start``."""
    return [
        Read(
            f"freshness, {name}, recent",
            FRESHNESS,
            {"client_id": "bench", "from": f"{start:%Y-%m-%dT%H:%M:%SZ}", "to": f"{end:%Y-%m-%dT%H:%M:%SZ}"},
        )
        for name, start, end in (("day", day, day + DAY), ("30 days", range_start, range_start + 30 * DAY))
    ]


def _write_buckets(settings: Settings, grain: str, starts: list[datetime]) -> None:
    """Each bucket of 20,000 cells written as the pipeline writes one (``replace_bucket``), so the
    write log that freshness reads holds it."""
    table = TABLES[grain]
    with clickhouse(settings) as client:
        for start in starts:
            replace_bucket(
                client,
                table,
                start,
                select_sql="SELECT 'bench', 'home', 'click', 'desktop', {bucket:DateTime('UTC')}, "
                "toUInt8(number % 100), toUInt8(intDiv(number, 100)), toUInt64(1 + number % 9) "
                f"FROM numbers({GRID})",
                parameters={"bucket": naive_utc(start)},
                database=settings.clickhouse_database,
                expected_rows=GRID,
            )


def _write_period(settings: Settings, range_start: datetime, label: str) -> list[Read]:
    """30 days of day buckets from ``range_start`` (a midnight), the weeks inside them and one hour of
    each day, so the planner answers the range from weeks and days; and the four reads of the period:
    its second day (final) or its last day (recent: can still change), that day's hour 10 and week;
    for the recent period also the freshness of that day and of the 30 days."""
    days = [range_start + i * DAY for i in range(30)]
    weeks = {week_start(d) for d in days if week_start(d) >= range_start and week_start(d) + WEEK <= days[-1] + DAY}
    day = days[1] if label == "final" else days[-1]
    weeks.add(week_start(day))  # the recent day's week is still open: never inside the range, never final
    _write_buckets(settings, "day", days)
    _write_buckets(settings, "week", sorted(weeks))
    _write_buckets(settings, "hour", [d + timedelta(hours=10) for d in days])
    reads = _reads(day + timedelta(hours=10), week_start(day), range_start, label)
    return reads if label == "final" else [*reads, *_freshness_reads(day, range_start)]


def _reference_sql(settings: Settings, answer: dict, read: Read) -> tuple[str, dict]:
    """The API's own query for ``read``, having checked its answer: the freshness query, or the cells
    query from the spans the answer reports (range) or from the bucket."""
    if read.freshness:
        assert answer["materialized_at"] is not None, (read, answer)
        bounds = (datetime.fromisoformat(read.params["from"]), datetime.fromisoformat(read.params["to"]))
        query = materialized_at_sql(settings.clickhouse_database, "bench", *bounds)
        assert query is not None
        return query
    assert len(cell_counts(answer)) == GRID, read  # every cell once, in order
    if read.bucket is not None:
        spans = [read.bucket]
    else:
        grains: dict[str, Grain] = {"hour": "hour", "day": "day", "week": "week"}
        spans = [
            Span(grains[u["grain"]], datetime.fromisoformat(u["start"]), datetime.fromisoformat(u["end"]))
            for u in answer["buckets"]
        ]
    query = span_sum_sql(settings.clickhouse_database, TABLES, SELECTION, spans)
    assert query is not None
    return query


def _timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def run(settings: Settings, big: bool = False) -> list[Result]:
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    final_start = (now_hour - 45 * DAY).replace(hour=0)
    # 30 days to today's midnight: the last ones can still change.
    recent_start = (now_hour - 30 * DAY).replace(hour=0)
    with (
        tempfile.TemporaryDirectory(prefix="bench-reads-") as data_dir,
        private_clickhouse(settings, Path(data_dir)) as (private, server),
    ):
        private = private.model_copy(
            update={
                "clickhouse_database": f"bench_{uuid.uuid4().hex[:8]}",
                "raw_bucket": f"bench-reads-{uuid.uuid4().hex[:8]}",
                "auth_enabled": False,
            }
        )
        with clickhouse(private) as client:
            apply_schema(client, private.clickhouse_database)
        with scratch_bucket(private):
            reads = [*_write_period(private, final_start, "final"), *_write_period(private, recent_start, "recent")]
            for read in reads:
                end = read.bucket.end if read.bucket else datetime.fromisoformat(read.params["to"])
                assert read.name.endswith("recent") != is_final(end, private), read
            return _measure(private, reads, big, Path(data_dir), server)


def _cpu_ms_per_call(call: Callable[[], object], processes: dict[str, psutil.Process]) -> dict[str, float]:
    """CPU milliseconds (user + system) of each process per call, over ``CPU_READS`` calls in a row."""

    def cpu_s() -> dict[str, float]:
        return {name: sum(process.cpu_times()[:2]) for name, process in processes.items()}

    before = cpu_s()
    for _ in range(CPU_READS):
        call()
    return {name: (spent - before[name]) * 1000 / CPU_READS for name, spent in cpu_s().items()}


def _measure(settings: Settings, reads: list[Read], big: bool, data_dir: Path, server: psutil.Process) -> list[Result]:
    cold: dict[str, list[float]] = {r.name: [] for r in reads}
    cold_direct: dict[str, list[float]] = {r.name: [] for r in reads}
    references: dict[str, tuple[str, dict]] = {}
    for _ in range(BIG_COLD if big else COLD):
        with (
            uvicorn_app("query_api.app:app", settings) as served,
            httpx.Client(base_url=served.url, timeout=60) as http,
        ):
            for read in reads:
                started = time.perf_counter()
                answer = http.get(read.path, params=read.params).json()
                cold[read.name].append((time.perf_counter() - started) * 1000)
                references[read.name] = _reference_sql(settings, answer, read)
                started = time.perf_counter()
                fresh = clickhouse_connect.get_client(dsn=settings.clickhouse_url)
                fresh.query(*references[read.name])
                cold_direct[read.name].append((time.perf_counter() - started) * 1000)
                fresh.close()

    with uvicorn_app("query_api.app:app", settings) as served, httpx.Client(base_url=served.url, timeout=60) as http:
        direct = clickhouse_connect.get_client(dsn=settings.clickhouse_url)

        def sample(read: Read) -> tuple[float, float]:
            api_ms = _timed(lambda: http.get(read.path, params=read.params).raise_for_status())
            return api_ms, _timed(lambda: direct.query(*references[read.name]))

        for read in reads:
            sample(read)  # the first read of the process (cold) is measured above
        alone = {read.name: [sample(read) for _ in range(WARM)] for read in reads}

        api = served.process
        cpu: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        for read in reads:

            def api_read(read: Read = read) -> object:
                return http.get(read.path, params=read.params).raise_for_status()

            def direct_read(read: Read = read) -> object:
                return direct.query(*references[read.name])

            answer = _cpu_ms_per_call(
                api_read,
                {"bench": psutil.Process(), "API": api, "ClickHouse": server},
            )
            query = _cpu_ms_per_call(
                direct_read,
                {"bench": psutil.Process(), "ClickHouse": server},
            )
            cpu[read.name] = answer, query
            console.print(
                f"{read.name}: CPU per warm read: "
                + ", ".join(f"{name} {ms:.2f}" for name, ms in answer.items())
                + " ms; the same SQL on clickhouse-connect: "
                + ", ".join(f"{name} {ms:.2f}" for name, ms in query.items())
                + " ms"
            )

        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        events = BIG_EVENTS if big else EVENTS
        write_lake_hour(settings, hour, events, "json")
        busy: dict[str, list[tuple[float, float]]] = {read.name: [] for read in reads}
        job = _start_materialization(settings, hour, data_dir)
        started = time.perf_counter()
        while job.poll() is None:
            for read in reads:
                busy[read.name].append(sample(read))
        console.print(
            f"materialization of {events:,} events took {time.perf_counter() - started:.0f} s (exit {job.returncode})"
        )
        assert job.returncode == 0, (data_dir / "materialize.log").read_text()[-3000:]

    results = []
    for read in reads:
        answer, query = cpu[read.name]
        results.append(
            Result(
                "reads",
                f"{read.name}, warm, CPU per read: bench + API + ClickHouse (n={CPU_READS})",
                sum(answer.values()),
                "the same SQL, clickhouse-connect: bench + ClickHouse",
                sum(query.values()),
                "ms",
                False,
            )
        )
        rows = [
            ("cold", cold[read.name], cold_direct[read.name]),
            ("warm", [a for a, _ in alone[read.name]], [d for _, d in alone[read.name]]),
            ("warm, during materialization", [a for a, _ in busy[read.name]], [d for _, d in busy[read.name]]),
        ]
        for state, api_ms, direct_ms in rows:
            for label, fraction in (("p50", 0.5), ("p99", 0.99)):
                results.append(
                    Result(
                        "reads",
                        f"{read.name}, {state}, {label} (n={len(api_ms)})",
                        percentile(api_ms, fraction),
                        "the same SQL, clickhouse-connect",
                        percentile(direct_ms, fraction),
                        "ms",
                        False,
                    )
                )
    return results


def _start_materialization(settings: Settings, hour: datetime, data_dir: Path) -> subprocess.Popen:
    """heatmap_hourly for ``hour`` in a Dagster process of its own, as the stack's daemon runs it."""
    home = data_dir / "dagster_home"
    home.mkdir(exist_ok=True)
    log = (data_dir / "materialize.log").open("w")
    return subprocess.Popen(
        dagster_materialize_command("heatmap_hourly", hour_key(hour)),
        env={**os.environ, **settings.as_env(), "DAGSTER_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
