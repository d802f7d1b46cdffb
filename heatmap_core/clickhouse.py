"""The one way to reach ClickHouse.

``clickhouse()`` yields a clickhouse-connect client for the configured server
DSN: the local stack's ClickHouse server (``chdb_server``, which alone opens the
embedded engine) or a ClickHouse server in production; the code path is the
same. Each thread keeps one client per DSN for its life, so a unit of work does
not pay the client's connect probes (version, timezone, settings: about 12 ms);
a clickhouse-connect client must not be shared between threads, nor its
connections with a forked child (hence the process id in the key).
``async_clickhouse()`` opens clickhouse-connect's asyncio client (aiohttp) for a
service whose handlers run on an event loop: no worker thread per request, and
about half the client's CPU per query.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import clickhouse_connect
from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.client import Client

from heatmap_core.schema import (
    ALL_TABLES,
    WRITE_LOG,
    WRITE_LOG_COLUMNS,
    WRITE_LOG_TABLE,
    BucketTable,
    WriteLogTable,
    schema_statements,
)
from heatmap_core.settings import Settings, get_settings
from heatmap_core.sql import time_parameter
from heatmap_core.timeutil import naive_utc

_local = threading.local()


@contextmanager
def clickhouse(settings: Settings | None = None) -> Iterator[Client]:
    """This thread's client for the settings' DSN, opened on first use."""
    dsn = (settings or get_settings()).clickhouse_url
    clients: dict[tuple[int, str], Client] = _local.__dict__.setdefault("clients", {})
    key = (os.getpid(), dsn)
    if key not in clients:
        clients[key] = clickhouse_connect.get_client(dsn=dsn)
    yield clients[key]


async def async_clickhouse(settings: Settings | None = None) -> AsyncClient:
    """A new asyncio client for the settings' DSN, bound to the running event loop: its owner keeps
    it for the loop's life and closes it."""
    return await clickhouse_connect.get_async_client(dsn=(settings or get_settings()).clickhouse_url)


# How a database whose tables predate the current schema is upgraded (heatmap_core/migrate.py).
MIGRATE_COMMAND = "python -m heatmap_core.migrate"


class OutdatedSchema(RuntimeError):
    """The database holds tables of an earlier schema, which ``CREATE ... IF NOT EXISTS`` would keep."""


# The tables whose shape ``outdated_tables`` checks against their definitions.
DefinedTable = BucketTable | WriteLogTable
DEFINED_TABLES: tuple[DefinedTable, ...] = (*ALL_TABLES, WRITE_LOG_TABLE)


@dataclass(frozen=True)
class TableDrift:
    """How an existing table differs from its definition in ``heatmap_core.schema``."""

    missing: list[str]  # columns it lacks
    retyped: list[str]  # columns it has with another type
    sorting_key: str | None  # its sort key, when not the definition's
    partition_key: str | None  # its partition key, when not the definition's

    def describe(self, table: DefinedTable) -> str:
        parts = []
        if self.missing:
            parts.append(f"lacks {', '.join(self.missing)}")
        if self.retyped:
            parts.append(f"types of {', '.join(self.retyped)} differ")
        if self.sorting_key is not None:
            parts.append(f"sorted by ({self.sorting_key}), not ({', '.join(table.sort_key)})")
        if self.partition_key is not None:
            parts.append(f"partitioned by {self.partition_key}, not {table.partition_key}")
        return f"{table.name} {'; '.join(parts)}"


def outdated_tables(client: Client, database: str) -> dict[DefinedTable, TableDrift]:
    """The bucket tables and the write log of ``database`` whose columns, sort key or partition key
    differ from ``heatmap_core.schema`` (created by an earlier version), each with how it differs."""
    names = [table.name for table in DEFINED_TABLES]
    columns = client.query(
        "SELECT table, groupArray((name, type)) FROM system.columns "
        "WHERE database = {db:String} AND table IN {tables:Array(String)} GROUP BY table",
        parameters={"db": database, "tables": names},
    ).result_rows
    keys = client.query(
        "SELECT name, sorting_key, partition_key FROM system.tables "
        "WHERE database = {db:String} AND name IN {tables:Array(String)}",
        parameters={"db": database, "tables": names},
    ).result_rows
    found: dict[str, dict[str, str]] = {name: dict(typed) for name, typed in columns}
    found_keys = {name: (sorting, partition) for name, sorting, partition in keys}
    outdated = {}
    for table in DEFINED_TABLES:
        # Judged only when both queries saw it: a table created by another writer
        # between the two reads is new, so of this schema.
        if table.name not in found_keys or table.name not in found:
            continue
        typed = found[table.name]
        sorting, partition = found_keys[table.name]
        drift = TableDrift(
            missing=[c.name for c in table.columns if c.name not in typed],
            retyped=[c.name for c in table.columns if c.name in typed and typed[c.name] != c.type],
            sorting_key=None if sorting == ", ".join(table.sort_key) else sorting,
            partition_key=None if partition == table.partition_key else partition,
        )
        if drift.missing or drift.retyped or drift.sorting_key is not None or drift.partition_key is not None:
            outdated[table] = drift
    return outdated


# Staging tables of replace_bucket: named by table and creation time, so an orphan (its
# writer died with the server or the process) is recognised by age and swept.
STAGE_PREFIX = "_stage_"
_STAGE_TIME = "%Y%m%dT%H%M%S"
STAGE_MAX_AGE = timedelta(hours=1)  # far beyond any bucket's replacement


def _stage_name(table: BucketTable, now: datetime) -> str:
    return f"{STAGE_PREFIX}{table.name}_{now:{_STAGE_TIME}}_{uuid.uuid4().hex}"


def sweep_stage_tables(client: Client, database: str, now: datetime | None = None) -> list[str]:
    """Drop the staging tables older than ``STAGE_MAX_AGE`` (left by a writer that died); returns their names.

    Younger ones may belong to a replacement still running and are left alone.
    """
    now = now or datetime.now(UTC)
    pattern = re.compile(rf"^{STAGE_PREFIX}[a-z_]+_(\d{{8}}T\d{{6}})_[0-9a-f]{{32}}$")
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {db:String} AND startsWith(name, {prefix:String})",
        parameters={"db": database, "prefix": STAGE_PREFIX},
    ).result_rows
    swept = []
    for (name,) in rows:
        match = pattern.match(name)
        if match and now - datetime.strptime(match[1], _STAGE_TIME).replace(tzinfo=UTC) > STAGE_MAX_AGE:
            client.command(f"DROP TABLE IF EXISTS `{database}`.`{name}` SYNC")
            swept.append(name)
    return swept


_LOG_COLUMNS = ", ".join(f"`{column}`" for column in WRITE_LOG_COLUMNS)  # `table` is a keyword


def _seed_write_log(client: Client, database: str) -> None:
    """One row of the write log per client and bucket already in the bucket tables (a database written
    before the log existed), written when the bucket's newest part holding the client's rows was
    (``system.parts``; the moment of seeding if that part was merged away meanwhile)."""
    log = f"`{database}`.`{WRITE_LOG}`"
    for table in ALL_TABLES:
        client.command(
            f"INSERT INTO {log} ({_LOG_COLUMNS}) "
            "SELECT held.client_id, {table:String}, held.bucket_start, held.bucket_start + {seconds:UInt32}, "
            "ifNull(max(parts.modification_time), now64(3)) "
            f"FROM (SELECT DISTINCT client_id, bucket_start, _part FROM `{database}`.`{table.name}`) AS held "
            # Outdated parts too: a part merged away since the read above is still listed for a while.
            "LEFT JOIN (SELECT name, modification_time FROM system.parts "
            "WHERE database = {db:String} AND table = {table:String}) AS parts ON held._part = parts.name "
            "GROUP BY held.client_id, held.bucket_start",
            parameters={"db": database, "table": table.name, "seconds": int(table.length.total_seconds())},
            settings={"join_use_nulls": 1, "max_partitions_per_insert_block": 0},
        )


def _write_log_needs_seeding(client: Client, database: str) -> bool:
    """The write log is empty while bucket tables hold rows: just created on a database from before
    it, or created by a process that died before seeding it (``system.tables``' row counts)."""
    log_rows, bucket_rows = client.query(
        "SELECT sumIf(total_rows, name = {log:String}), sumIf(total_rows, name != {log:String}) "
        "FROM system.tables WHERE database = {db:String} AND has({names:Array(String)}, name)",
        parameters={"db": database, "log": WRITE_LOG, "names": [table.name for table in DEFINED_TABLES]},
    ).result_rows[0]
    return not log_rows and bool(bucket_rows)


def apply_schema(client: Client, database: str | None = None) -> None:
    """Create the database and tables if missing, and sweep orphaned staging tables; running it
    again changes nothing.

    Refuses (``OutdatedSchema``, naming the migration command) a database whose
    tables differ from ``heatmap_core.schema`` in columns, sort key or partition
    key, rather than leave them for a later insert or read to fail on a missing
    column or a replacement to swap the wrong partition. An empty write log
    beside stored buckets (just created on an older database, or left unseeded
    by a process that died) is seeded from them (``_seed_write_log``), so their
    freshness survives the upgrade.
    """
    database = database or get_settings().clickhouse_database
    if outdated := outdated_tables(client, database):
        differences = "; ".join(drift.describe(table) for table, drift in outdated.items())
        raise OutdatedSchema(
            f"ClickHouse database {database!r} holds tables of an earlier schema ({differences}). "
            f"Upgrade it, keeping every row, with `{MIGRATE_COMMAND}` after stopping the Dagster daemon "
            "(docs/ARCHITECTURE.md, Migration)."
        )
    for statement in schema_statements(database):
        client.command(statement)
    if _write_log_needs_seeding(client, database):
        # Two processes starting at once may both seed: the duplicates change no max(written_at).
        _seed_write_log(client, database)
    sweep_stage_tables(client, database)


class BucketWrite(NamedTuple):
    rows: int  # the bucket's rows after the replacement
    # Rows ClickHouse wrote into the bucket table doing it (its X-ClickHouse-Summary of each statement);
    # the write log's rows are bookkeeping and not counted.
    written_rows: int


def _written(summary: object) -> int:
    """ClickHouse's written_rows of a command (a QuerySummary; a plain value for a statement without one)."""
    return int(getattr(summary, "written_rows", 0) or 0)


def _log_write(client: Client, database: str, table: BucketTable, start: datetime, clients: Sequence[str]) -> None:
    """The write log's rows of one replaced bucket: one per client, stamped with the server's clock."""
    client.command(
        f"INSERT INTO `{database}`.`{WRITE_LOG}` ({_LOG_COLUMNS}) "
        f"SELECT arrayJoin({{clients:Array(String)}}), {{table:String}}, {time_parameter('start')}, "
        f"{time_parameter('end')}, now64(3)",
        parameters={"clients": list(clients), "table": table.name, "start": start, "end": start + table.length},
    )


def replace_bucket(
    client: Client,
    table: BucketTable,
    bucket_start: datetime,
    *,
    rows: Sequence[Sequence] | None = None,
    select_sql: str | None = None,
    parameters: dict | None = None,
    database: str | None = None,
    expected_rows: int | None = None,
) -> BucketWrite:
    """Replace every row of one bucket atomically, at the cost of that bucket alone.

    A bucket is exactly one partition (``BucketTable.partition_key``). Only the
    new rows (``rows`` as ``table.column_names`` tuples, or a parameterized
    ``select_sql`` producing those columns) go into a staging table;
    ``REPLACE PARTITION`` then swaps the bucket's partition in one step (or
    ``DROP PARTITION`` when the bucket is now empty), so readers see the old
    bucket or the new one, never a mix, duplicates or stale cells. Nothing of
    the rest of the table is read or copied. Staged rows outside the bucket, or
    other than ``expected_rows`` of them when given (what a writer outside
    ClickHouse counted), are refused (``ValueError``) before anything is swapped.

    After the swap, one row per client whose view of the bucket changed (the
    clients of the new rows and of the old ones, read before the swap) goes
    into the write log (``schema.WRITE_LOG``), which freshness reads. Written
    after the swap, the log never announces a bucket readers cannot see yet;
    a failure between the swap and the log insert leaves those clients'
    freshness stale until the bucket's next replacement.
    """
    database = database or get_settings().clickhouse_database
    target = f"`{database}`.`{table.name}`"
    staging = f"`{database}`.`{_stage_name(table, datetime.now(UTC))}`"
    start = naive_utc(bucket_start)
    part = table.partition_id(bucket_start)
    written = 0
    client.command(f"CREATE TABLE {staging} AS {target}")
    try:
        if rows:
            written += client.insert(staging.replace("`", ""), list(rows), column_names=table.column_names).written_rows
        if select_sql:
            written += _written(
                client.command(
                    f"INSERT INTO {staging} ({', '.join(table.column_names)}) {select_sql}",
                    parameters=parameters or {},
                )
            )
        # One pass over the staged rows; the clients of the old rows come from the bucket's partition alone.
        new_rows, elsewhere, changed_for = client.query(
            f"SELECT count(), countIf(bucket_start != {time_parameter('start')}), "
            "arrayDistinct(arrayConcat(groupUniqArray(client_id), "
            f"(SELECT groupUniqArray(client_id) FROM {target} WHERE _partition_id = {{part:String}}))) "
            f"FROM {staging}",
            parameters={"start": start, "part": part},
        ).result_rows[0]
        if elsewhere:
            raise ValueError(f"{elsewhere} staged row(s) for {table.name} lie outside the bucket {start}")
        if expected_rows is not None and new_rows != expected_rows:
            raise ValueError(f"{new_rows} row(s) staged for {table.name} at {start}, {expected_rows} expected")
        if new_rows:
            client.command(f"ALTER TABLE {target} REPLACE PARTITION ID '{part}' FROM {staging}")
        else:
            # ClickHouse refuses REPLACE from an empty source; dropping is the same atomic outcome.
            client.command(f"ALTER TABLE {target} DROP PARTITION ID '{part}'")
        if changed_for:
            _log_write(client, database, table, start, changed_for)
        return BucketWrite(int(new_rows), written)
    finally:
        client.command(f"DROP TABLE IF EXISTS {staging} SYNC")
