"""The one way to reach ClickHouse.

``clickhouse()`` yields a clickhouse-connect client for the configured server
DSN: the local stack's ClickHouse server (``chdb_server``, which alone opens the
embedded engine) or a ClickHouse server in production; the code path is the
same. Each thread keeps one client per DSN for its life, so a unit of work does
not pay the client's connect probes (version, timezone, settings: about 12 ms);
a clickhouse-connect client must not be shared between threads, nor its
connections with a forked child (hence the process id in the key).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from heatmap_core.schema import ALL_TABLES, PARTITION_KEY, BucketTable, schema_statements
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


# How a database created before heatmap v2 is upgraded (heatmap_core/migrate.py).
MIGRATE_COMMAND = "python -m heatmap_core.migrate"


class OutdatedSchema(RuntimeError):
    """The database holds bucket tables of an earlier schema, which ``CREATE ... IF NOT EXISTS`` would keep."""


def outdated_tables(client: Client, database: str) -> dict[BucketTable, list[str]]:
    """The bucket tables of ``database`` that exist without every column of their kind (created
    before v2), each with the columns it lacks."""
    rows = client.query(
        "SELECT table, groupArray(name) FROM system.columns "
        "WHERE database = {db:String} AND table IN {tables:Array(String)} GROUP BY table",
        parameters={"db": database, "tables": [table.name for table in ALL_TABLES]},
    ).result_rows
    found: dict[str, list[str]] = {name: columns for name, columns in rows}
    return {
        table: missing
        for table in ALL_TABLES
        if table.name in found and (missing := [c for c in table.column_names if c not in found[table.name]])
    }


def apply_schema(client: Client, database: str | None = None) -> None:
    """Create the database and tables if missing; running it again changes nothing.

    Refuses (``OutdatedSchema``, naming the migration command) a database whose
    tables predate v2, rather than leave them for a later insert or read to fail
    on a missing column.
    """
    database = database or get_settings().clickhouse_database
    if outdated := outdated_tables(client, database):
        lacking = "; ".join(f"{table.name} lacks {', '.join(missing)}" for table, missing in outdated.items())
        raise OutdatedSchema(
            f"ClickHouse database {database!r} was created before heatmap v2 ({lacking}). "
            f"Upgrade it, keeping every row, with `{MIGRATE_COMMAND}` after stopping the Dagster daemon "
            "(docs/ARCHITECTURE.md, Migration from before v2)."
        )
    for statement in schema_statements(database):
        client.command(statement)


def partition_id(bucket_start: datetime) -> str:
    return bucket_start.astimezone(UTC).strftime("%Y%m%d")


def replace_bucket(
    client: Client,
    table: BucketTable,
    bucket_start: datetime,
    *,
    rows: Sequence[Sequence] | None = None,
    select_sql: str | None = None,
    parameters: dict | None = None,
    database: str | None = None,
) -> int:
    """Replace every row of one bucket atomically; returns the bucket's new row count.

    The new rows (``rows`` as ``table.column_names`` tuples, or a parameterized
    ``select_sql`` producing those columns) go into a staging table together
    with the untouched buckets of the same day partition; ``REPLACE PARTITION``
    then swaps the whole partition in one step, so readers see the old bucket
    or the new one, never a mix, duplicates or stale cells.
    """
    database = database or get_settings().clickhouse_database
    target = f"`{database}`.`{table.name}`"
    staging = f"`{database}`.`_stage_{table.name}_{uuid.uuid4().hex}`"
    start = naive_utc(bucket_start)
    this_bucket = f"bucket_start = {time_parameter('start')}"
    part = partition_id(bucket_start)
    client.command(f"CREATE TABLE {staging} AS {target}")
    try:
        client.command(
            f"INSERT INTO {staging} SELECT * FROM {target} "
            f"WHERE {PARTITION_KEY} = {{part:UInt32}} AND NOT ({this_bucket})",
            parameters={"part": int(part), "start": start},
        )
        if rows:
            client.insert(staging.replace("`", ""), list(rows), column_names=table.column_names)
        if select_sql:
            client.command(
                f"INSERT INTO {staging} ({', '.join(table.column_names)}) {select_sql}", parameters=parameters or {}
            )
        new_rows, staged_rows = client.query(
            f"SELECT countIf({this_bucket}), count() FROM {staging}",
            parameters={"start": start},
        ).result_rows[0]
        if staged_rows:
            client.command(f"ALTER TABLE {target} REPLACE PARTITION ID '{part}' FROM {staging}")
        else:
            # Nothing left in the whole day partition: ClickHouse refuses REPLACE from an
            # empty source, and dropping the partition is the same atomic outcome.
            client.command(f"ALTER TABLE {target} DROP PARTITION ID '{part}'")
        return int(new_rows)
    finally:
        client.command(f"DROP TABLE IF EXISTS {staging} SYNC")
