"""The local ClickHouse server (chdb_server), driven only the way components drive a
ClickHouse server: clickhouse-connect over an ``http://`` DSN.

Each test starts its own server process on a free port over a temporary data
directory, so killing or restarting one never touches the shared stack.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from heatmap_core.clickhouse import STAGE_MAX_AGE, apply_schema, clickhouse, replace_bucket, sweep_stage_tables
from heatmap_core.schema import ALL_TABLES, HOURLY, WRITE_LOG
from heatmap_core.settings import Settings
from tests.conftest import ClickHouseServer, free_port, running_clickhouse

DATABASE = "heatmap"
# A recent day: rows older than the hourly table's TTL would be dropped as written.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)


@contextmanager
def running_server(data_dir: Path) -> Iterator[ClickHouseServer]:
    with running_clickhouse(data_dir) as server:
        server.settings = server.settings.model_copy(update={"clickhouse_database": DATABASE})
        yield server


@pytest.fixture
def server(tmp_path) -> Iterator[ClickHouseServer]:
    with running_server(tmp_path) as server:
        yield server


def test_ping_version_and_timezone(server):
    client = server.client()
    assert client.ping() is True
    assert client.server_version.startswith("26.")
    assert client.command("SELECT version()") == client.server_version
    assert str(client.server_tz) == "UTC"
    assert httpx.get(f"{server.dsn}/ping").text == "Ok.\n"
    assert httpx.head(f"{server.dsn}/ping").status_code == 200


def test_project_schema_applies_twice_over_http(server):
    with clickhouse(server.settings) as client:
        apply_schema(client, DATABASE)
        apply_schema(client, DATABASE)
        tables = client.query(
            "SELECT name, partition_key FROM system.tables WHERE database = {db:String} ORDER BY name",
            parameters={"db": DATABASE},
        ).result_rows
    assert tables == sorted(
        [*((table.name, table.partition_key) for table in ALL_TABLES), (WRITE_LOG, "toYYYYMM(bucket_start)")]
    )


ROWS = [
    (1, "plain", datetime(2026, 2, 2, 10, 15, 0), ["a", "b"]),
    (2, 'it\'s "quoted"\ttab\nline \\ é 🙂', datetime(2026, 2, 2, 10, 59, 59), []),
    (3, "", datetime(2026, 2, 3, 0, 0, 0), ["x" * 300]),
]


@pytest.mark.parametrize("compress", ["lz4", "zstd", "gzip", "false"])
def test_rows_inserted_read_back_exactly_with_each_compression(server, compress):
    client = server.client(compress=False if compress == "false" else compress)
    table = f"rows_{compress}"
    client.command(
        f"CREATE TABLE {table} (id UInt32, s String, at DateTime('UTC'), tags Array(String)) ENGINE = MergeTree ORDER BY id"
    )
    summary = client.insert(table, ROWS, column_names=["id", "s", "at", "tags"])
    assert summary.written_rows == len(ROWS)
    assert client.query(f"SELECT id, s, at, tags FROM {table} ORDER BY id").result_rows == ROWS
    many = [(n, f"row {n}", datetime(2026, 1, 1) + timedelta(seconds=n), [str(n)]) for n in range(10, 50_010)]
    client.insert(table, many, column_names=["id", "s", "at", "tags"])
    assert client.query(f"SELECT id, s, at, tags FROM {table} WHERE id >= 10 ORDER BY id").result_rows == many


def test_server_side_parameters(server):
    client = server.client()
    client.command(
        "CREATE TABLE p (id UInt32, s String, at DateTime('UTC'), tags Array(String)) ENGINE = MergeTree ORDER BY id"
    )
    client.insert("p", ROWS, column_names=["id", "s", "at", "tags"])
    found = client.query(
        "SELECT id FROM p WHERE at >= {since:DateTime('UTC')} AND at < {until:DateTime('UTC')} "
        "AND s IN {names:Array(String)} AND has(tags, {tag:String}) ORDER BY id",
        parameters={
            "since": datetime(2026, 2, 2),
            "until": datetime(2026, 2, 3),
            "names": ["plain", ROWS[1][1]],
            "tag": "b",
        },
    ).result_rows
    assert found == [(1,)]
    assert client.query("SELECT {s:String}", parameters={"s": ROWS[1][1]}).result_rows == [(ROWS[1][1],)]
    # Bind values over 4 KiB travel as a multipart form instead of the URL.
    names = [f"name-{n}" for n in range(2000)] + ["plain"]
    assert client.query(
        "SELECT count() FROM p WHERE s IN {names:Array(String)}", parameters={"names": names}
    ).result_rows == [(1,)]
    # Settings ride along as URL parameters, one query at a time.
    assert client.command("SELECT getSetting('max_block_size')", settings={"max_block_size": 1234}) == 1234
    assert client.command("SELECT getSetting('max_block_size')") != 1234


def test_errors_carry_clickhouse_code_and_text(server):
    client = server.client()
    with pytest.raises(DatabaseError) as missing:
        client.query("SELECT * FROM no_such_table")
    assert missing.value.code == 60
    assert "Code: 60. DB::Exception: Unknown table expression identifier 'no_such_table'" in str(missing.value)
    assert "(UNKNOWN_TABLE)" in str(missing.value)
    with pytest.raises(DatabaseError) as syntax:
        client.command("SELEC 1")
    assert syntax.value.code == 62
    assert "(SYNTAX_ERROR)" in str(syntax.value)
    answer = httpx.post(server.dsn, content=b"SELECT * FROM no_such_table")
    assert (answer.status_code, answer.headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert client.command("SELECT 1") == 1


def test_an_insert_the_table_refuses_is_an_error_and_writes_nothing(server):
    """chDB's streaming insert once answered these as written while storing nothing."""
    client = server.client()
    client.command(
        "CREATE TABLE refusing (p UInt32, v UInt32, CONSTRAINT small CHECK v < 100) "
        "ENGINE = MergeTree PARTITION BY p ORDER BY v"
    )
    with pytest.raises(DatabaseError) as partitions:
        client.insert("refusing", [(p, 1) for p in range(101)], column_names=["p", "v"])
    assert partitions.value.code == 252 and "(TOO_MANY_PARTS)" in str(partitions.value)
    with pytest.raises(DatabaseError) as constraint:
        client.insert("refusing", [(1, 1), (2, 500)], column_names=["p", "v"])
    assert constraint.value.code == 469 and "(VIOLATED_CONSTRAINT)" in str(constraint.value)
    assert client.query("SELECT count() FROM refusing").result_rows == [(0,)]
    # The same insert within the limits is kept, and a setting sent with it applies to it.
    summary = client.insert(
        "refusing",
        [(p, 1) for p in range(101)],
        column_names=["p", "v"],
        settings={"max_partitions_per_insert_block": 200},
    )
    assert summary.written_rows == 101
    assert client.query("SELECT count(), sum(v) FROM refusing").result_rows == [(101, 101)]


def test_statement_without_result_set_returns_summary_and_empty_select_returns_empty(server):
    client = server.client()
    summary = client.command("CREATE TABLE e (id UInt8) ENGINE = MergeTree ORDER BY id")
    assert not isinstance(summary, (str, int))
    assert client.command("SELECT id FROM e") == ""
    assert client.query("SELECT id FROM e").result_rows == []


def test_response_compressed_as_the_client_asks(server):
    answer = httpx.post(
        f"{server.dsn}/?enable_http_compression=1",
        content=b"SELECT number FROM numbers(3)",
        headers={"Accept-Encoding": "gzip"},
    )
    assert answer.headers["Content-Encoding"] == "gzip"
    assert answer.text == "0\n1\n2\n"  # httpx undid the gzip
    assert answer.headers["X-ClickHouse-Format"] == "TabSeparated"


def test_get_only_reads(server):
    assert httpx.get(server.dsn, params={"query": "SELECT 1 + 1"}).text == "2\n"
    refused = httpx.get(server.dsn, params={"query": "CREATE TABLE g (id UInt8) ENGINE = MergeTree ORDER BY id"})
    assert (refused.status_code, refused.headers["X-ClickHouse-Exception-Code"]) == (500, "164")
    assert "(READONLY)" in refused.text
    assert server.client().command("EXISTS TABLE g") == 0


def test_no_request_sees_another_ones_session(server):
    """Handles are kept between requests (chdb_server.engine.HandlePool), never their sessions: a
    request's settings, database, read-only mode, SET and temporary tables stay its own, whichever
    handle the next request is given."""

    def ask(sql: str, method: str = "POST", **params: str) -> str:
        answer = httpx.request(method, server.dsn, params=params, content=sql if method == "POST" else None)
        return f"{answer.status_code} {answer.text}".strip()

    default_threads = ask("SELECT getSetting('max_threads')")
    setting = "SELECT getSetting('max_threads') = 1, currentDatabase()"
    httpx.post(server.dsn, content="CREATE DATABASE elsewhere")
    for _ in range(3):  # the second and third rounds run on kept handles
        assert ask(setting, max_threads="1", database="elsewhere") == "200 1\telsewhere"
        assert ask(setting) == "200 0\tdefault"
        assert ask("SET max_threads = 1") == "200"
        assert ask("SELECT getSetting('max_threads')") == default_threads
        assert ask("CREATE TEMPORARY TABLE scratch (id UInt8)") == "200"
        assert "(UNKNOWN_TABLE)" in ask("SELECT * FROM scratch")
        assert ask("SELECT getSetting('readonly')", method="GET", query="SELECT getSetting('readonly')") == "200 2"
        assert ask("SELECT getSetting('readonly')") == "200 0"
        assert "(UNKNOWN_IDENTIFIER)" in ask("SELECT no_such_column")  # a failure gives its handle up
        assert ask("SELECT 1") == "200 1"


def _cells(count: int) -> list[tuple]:
    return [("acme", "home", "click", "desktop", None, x, y, count) for x in range(100) for y in range(200)]


def _bucket(cells: list[tuple], hour: datetime) -> list[tuple]:
    return [(*cell[:4], hour, *cell[5:]) for cell in cells]


def _read_bucket(client, hour: datetime) -> list[tuple]:
    return client.query(
        f"SELECT cell_x, cell_y, count FROM {DATABASE}.heatmap_hourly "
        "WHERE client_id = 'acme' AND screen_id = 'home' AND bucket_start = {hour:DateTime('UTC')} ORDER BY cell_x, cell_y",
        parameters={"hour": hour.replace(tzinfo=None)},
    ).result_rows


def _fill_day(client, cells_per_hour: int) -> None:
    """Every hour of DAY but hour 12 holds ``cells_per_hour`` rows of another screen."""
    client.command(
        f"INSERT INTO {DATABASE}.heatmap_hourly SELECT 'acme', 'other', 'click', 'desktop', "
        "{day:DateTime('UTC')} + toIntervalHour(h), n % 100, intDiv(n, 100) % 200, 1 "
        "FROM numbers(24) AS hours ARRAY JOIN range({cells:UInt32}) AS n "
        "WHERE (hours.number AS h) != 12",
        parameters={"day": DAY.replace(tzinfo=None), "cells": cells_per_hour},
    )


# The acme/home screen's 20,000 cells (as ``_cells``), each with {count}, then acme/bulk rows up to {rows}.
SCREEN_AND_BULK = (
    "SELECT 'acme', if(number < 20000, 'home', 'bulk'), 'click', 'desktop', {start:DateTime('UTC')}, "
    "number % 100, intDiv(number, 100) % 200, {count:UInt64} FROM numbers({rows:UInt64})"
)


def test_twenty_readers_during_materializations_see_old_or_new_bucket(server):
    """Each replacement writes a big bucket (1,000,000 rows: the read screen's 20,000 cells
    and a bulk screen), while 20 readers read the screen's cells."""
    hour = DAY.replace(hour=12)
    old_read, new_read = [cell[5:] for cell in _cells(1)], [cell[5:] for cell in _cells(2)]

    def materialize(client, count: int) -> None:
        parameters = {"start": hour.replace(tzinfo=None), "rows": 1_000_000, "count": count}
        replace_bucket(client, HOURLY, hour, select_sql=SCREEN_AND_BULK, parameters=parameters, database=DATABASE)

    with clickhouse(server.settings) as client:
        apply_schema(client, DATABASE)
        _fill_day(client, 20_000)
        materialize(client, 1)
    writing = threading.Event()
    writing.set()
    answers: list[str] = []
    errors: list[BaseException] = []

    def write() -> None:
        with clickhouse(server.settings) as client:
            for count in (2, 1, 2):
                materialize(client, count)
        writing.clear()

    def read() -> None:
        client = server.client()
        try:
            while writing.is_set():
                cells = _read_bucket(client, hour)
                answers.append("old" if cells == old_read else "new" if cells == new_read else f"MIX of {len(cells)}")
        except BaseException as error:  # noqa: BLE001  (a reader thread's failure is asserted in the test's thread below)
            errors.append(error)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert answers and set(answers) <= {"old", "new"}, sorted(set(answers))
    with clickhouse(server.settings) as client:
        assert _read_bucket(client, hour) == new_read


def test_data_survives_a_restart(tmp_path):
    with running_server(tmp_path) as server:
        client = server.client()
        client.command("CREATE TABLE kept (id UInt32, s String) ENGINE = MergeTree ORDER BY id")
        client.insert("kept", [(1, "one"), (2, "two")], column_names=["id", "s"])
    with running_server(tmp_path) as server:
        assert server.client().query("SELECT id, s FROM kept ORDER BY id").result_rows == [(1, "one"), (2, "two")]


def _kill_when_running(server: ClickHouseServer, statement_like: str, work) -> None:
    """Run ``work`` in a thread and SIGKILL the server while a statement matching the
    LIKE pattern ``statement_like`` is executing inside it."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except (OperationalError, DatabaseError) as error:  # the server died under it, as intended
            failure.append(error)

    watcher = server.client()
    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not watcher.query(
        "SELECT count() FROM system.processes WHERE query LIKE {pattern:String}", parameters={"pattern": statement_like}
    ).result_rows[0][0]:
        assert thread.is_alive() and time.monotonic() < deadline, "the statement finished before it was seen running"
    server.stop(signal.SIGKILL)
    thread.join(timeout=60)
    assert failure, "the statement completed although the server was killed while it ran"


def test_sigkill_mid_insert_leaves_all_or_nothing(tmp_path):
    # Under one insert block (min_insert_block_size_rows is 1,048,449), so the insert is one part.
    rows = 1_000_000
    with running_server(tmp_path) as server:
        client = server.client()
        client.command("CREATE TABLE big (id UInt64, s String) ENGINE = MergeTree ORDER BY s")
        # The body is made before the insert starts, so the client spends no time (and no GIL)
        # building it while the watcher looks for the insert running in the server.
        body = client.raw_query(
            "SELECT number AS id, concat(toString(cityHash64(number)), ' some padding text') AS s FROM numbers({rows:UInt64})",
            parameters={"rows": rows},
            fmt="Native",
        )

        def insert() -> None:
            server.client(compress=False).raw_insert("big", ["id", "s"], insert_block=body, fmt="Native")

        _kill_when_running(server, "INSERT INTO big %", insert)
    with running_server(tmp_path) as server:
        assert server.client().command("SELECT count() FROM big") in (0, rows)


# A big bucket of the acme/home screen: ``rows`` rows over the grid, one event each.
BIG_BUCKET = (
    "SELECT 'acme', 'home', 'click', 'desktop', {start:DateTime('UTC')}, number % 100, intDiv(number, 100) % 200, 1 "
    "FROM numbers({rows:UInt64})"
)


def test_sigkill_mid_replace_bucket_leaves_the_old_bucket(tmp_path):
    hour = DAY.replace(hour=12)
    old = _bucket(_cells(1), hour)
    with running_server(tmp_path) as server:
        with clickhouse(server.settings) as client:
            apply_schema(client, DATABASE)
            _fill_day(client, 20_000)
            replace_bucket(client, HOURLY, hour, rows=old, database=DATABASE)
            day_before = client.query(
                f"SELECT toHour(bucket_start), count(), sum(count) FROM {DATABASE}.heatmap_hourly GROUP BY 1 ORDER BY 1"
            ).result_rows

        def materialize() -> None:
            with clickhouse(server.settings) as client:
                replace_bucket(client, HOURLY, hour, select_sql=BIG_BUCKET, parameters=big, database=DATABASE)

        # Killed while it fills its staging table with a big bucket's new rows.
        big = {"start": hour.replace(tzinfo=None), "rows": 5_000_000}
        _kill_when_running(server, "INSERT INTO %_stage_heatmap_hourly_%", materialize)
    with running_server(tmp_path) as server, clickhouse(server.settings) as client:
        assert _read_bucket(client, hour) == [row[5:] for row in old]
        day = f"SELECT toHour(bucket_start), count(), sum(count) FROM {DATABASE}.heatmap_hourly GROUP BY 1 ORDER BY 1"
        assert client.query(day).result_rows == day_before
        # The killed writer's staging table survives the restart; nothing reads it, and
        # apply_schema sweeps it once it is older than any replacement could run.
        (orphan,) = _stage_tables(client)
        assert sweep_stage_tables(client, DATABASE) == []
        # The next replacement succeeds beside it.
        new = _bucket(_cells(3), hour)
        assert replace_bucket(client, HOURLY, hour, rows=new, database=DATABASE).rows == len(new)
        assert _read_bucket(client, hour) == [row[5:] for row in new]
        assert client.query(day).result_rows == [(h, n, 3 * n if h == 12 else total) for h, n, total in day_before]
        assert sweep_stage_tables(client, DATABASE, datetime.now(UTC) + STAGE_MAX_AGE + timedelta(minutes=1)) == [
            orphan
        ]
        assert _stage_tables(client) == []


def _stage_tables(client) -> list[str]:
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND name LIKE '\\_stage\\_%'",
        parameters={"db": DATABASE},
    ).result_rows
    return [name for (name,) in rows]


def test_the_stack_starts_health_checks_and_stops_the_server(tmp_path):
    from infra import supervisor
    from infra.paths import StackPaths
    from infra.processes import listening_pids, stack_processes
    from infra.programs import PROGRAMS

    port = free_port()
    settings = Settings(data_dir=tmp_path / "stack", clickhouse_port=port)
    paths = StackPaths(settings.data_path)
    try:
        supervisor.start(settings, PROGRAMS, ["clickhouse"], do_fetch=False)
        assert supervisor.status(settings)["clickhouse"].startswith("RUNNING")
        client = clickhouse_connect.get_client(dsn=f"http://127.0.0.1:{port}")
        client.command("CREATE TABLE t (id UInt8) ENGINE = MergeTree ORDER BY id")
        assert client.command("SELECT count() FROM t") == 0
        assert (settings.data_path / "clickhouse" / "metadata").is_dir()
    finally:
        supervisor.stop(settings)
    assert stack_processes(paths) == []
    assert port not in listening_pids()
