"""Upgrade a ClickHouse database created by an earlier version to the current schema, keeping every row.

    python -m heatmap_core.migrate [--dry-run]

The database is the one every component uses (``HEATMAP_CLICKHOUSE_DSN``,
``HEATMAP_CLICKHOUSE_DATABASE``). Stop the writers first (the Dagster daemon
and its runs): a row written to an old table while it is being copied would
not be copied.

A bucket table is outdated when its columns, sort key or partition key differ
from ``heatmap_core.schema`` (``clickhouse.outdated_tables``). Two earlier
schemas exist: before heatmap v2 the cell tables had no ``event_type`` and
``device`` and were sorted by (client_id, screen_id, bucket_start, cell_x,
cell_y); before issue 13 the hourly tables were partitioned by day, not by
hour. Neither key can be altered in place, so each outdated table is rebuilt
beside itself:

1. a ``<table>_migrating`` left by an interrupted run is dropped (nothing reads it);
2. ``<table>_migrating`` is created with the current DDL (``heatmap_core.schema``);
3. every row is copied into it inside ClickHouse (INSERT ... SELECT), a column
   the old table lacks filled as ``FILLED_FOR_OLD_ROWS`` says (event_type and
   device ``unknown``);
4. the copy is verified: row count and the sum of each measure (count; reached
   and folds) of both tables are equal (over the rows whose TTL has not passed:
   ClickHouse may drop expired rows on either side at any moment). On a
   difference the command stops, drops the copy and leaves the old table as it was;
5. ``EXCHANGE TABLES`` swaps the two names atomically: a reader sees the old
   table or the new one, never neither;
6. ``<table>_migrating``, now the old table, is dropped.

A write log of another shape (columns, sort key or partition key) is not
copied: it is bookkeeping the buckets can rebuild, so it is dropped and seeded
again like a missing one (each client's buckets then carry the time of their
newest part, at worst later than the write: a live view refreshes once more).

Then ``apply_schema`` creates what is missing (the scroll tables of a pre-v2
database; the write log of a database from before it existed, or just dropped,
seeded with one row per client and bucket already stored). A table that already matches its definition is left as it is, so a
second run changes nothing. Each step is printed per table; ``--dry-run``
prints what would be done and changes nothing.

Rows migrated from before v2 say ``unknown`` because the old tables never
stored the type or device. Re-materializing the hourly partitions from the
lake (a backfill of ``heatmap_hourly``, then of the daily and weekly rollups)
rebuilds them with their real types and devices, since replacing a bucket
replaces all its rows.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from heatmap_core.clickhouse import DEFINED_TABLES, TableDrift, apply_schema, clickhouse, outdated_tables
from heatmap_core.events import UNKNOWN_DEVICE
from heatmap_core.schema import ALL_TABLES, BUCKET_TIME, WRITE_LOG, WRITE_LOG_TABLE, BucketTable, create_table_sql
from heatmap_core.settings import get_settings
from heatmap_core.timeutil import naive_utc

# What rows from before v2 say in the columns v2 added: the type and device were never stored.
FILLED_FOR_OLD_ROWS = {"event_type": UNKNOWN_DEVICE, "device": UNKNOWN_DEVICE}
STAGING_SUFFIX = "_migrating"
# An old table holds up to 2 years (daily) or 5 (weekly) of day partitions; ClickHouse's
# default refuses an insert block spanning more than 100.
_COPY_SETTINGS = {"max_partitions_per_insert_block": 0}


def _say(message: str) -> None:
    print(message, flush=True)


def _existing(client: Client, database: str) -> set[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = {db:String}", parameters={"db": database})
    return {name for (name,) in rows.result_rows}


# How the printed totals name each measure.
_MEASURE_LABELS = {"count": "events"}


def _totals(client: Client, ref: str, table: BucketTable, cutoff: datetime | None = None) -> str:
    """ "<rows> rows, <sum> <measure>..." of a bucket table; with ``cutoff``, of the rows whose TTL
    has not passed by then."""
    live = f" WHERE bucket_start + {table.ttl} > {{cutoff:{BUCKET_TIME}}}" if cutoff else ""
    sums = ", ".join(f"toUInt64(sum({measure}))" for measure in table.kind.measures)
    rows, *measures = client.query(
        f"SELECT count(), {sums} FROM {ref}{live}", parameters={"cutoff": naive_utc(cutoff)} if cutoff else {}
    ).result_rows[0]
    labels = [_MEASURE_LABELS.get(measure, measure) for measure in table.kind.measures]
    return ", ".join([f"{rows} rows", *(f"{value} {label}" for value, label in zip(measures, labels, strict=True))])


def migrate_table(client: Client, database: str, table: BucketTable, drift: TableDrift, *, dry_run: bool) -> None:
    """Rebuild one outdated table with the current DDL (steps 1-6 of the module docstring)."""
    missing = drift.missing
    if set(missing) - set(FILLED_FOR_OLD_ROWS):
        raise SystemExit(f"{table.name}: no rule to fill {', '.join(missing)} for old rows; not migrated")
    old = f"`{database}`.`{table.name}`"
    staging = replace(table, name=table.name + STAGING_SUFFIX)
    new = f"`{database}`.`{staging.name}`"
    _say(f"{drift.describe(table)}: {_totals(client, old, table)}")
    filled = f" with {', '.join(missing)} 'unknown'" if missing else ""
    if dry_run:
        _say(f"{table.name}: would copy them into {staging.name}{filled}, verify, EXCHANGE TABLES, drop the old table")
        return
    client.command(f"DROP TABLE IF EXISTS {new} SYNC")
    client.command(create_table_sql(database, staging))
    columns = ", ".join(f"{{{name}:String}}" if name in missing else name for name in table.column_names)
    client.command(
        f"INSERT INTO {new} ({', '.join(table.column_names)}) SELECT {columns} FROM {old}",
        parameters={name: FILLED_FOR_OLD_ROWS[name] for name in missing},
        settings=_COPY_SETTINGS,
    )
    # Taken after the copy: a row expired by now may be gone from either side; every row alive now was copied.
    cutoff = datetime.now(UTC)
    before, after = _totals(client, old, table, cutoff), _totals(client, new, table, cutoff)
    if before != after:
        client.command(f"DROP TABLE IF EXISTS {new} SYNC")
        raise SystemExit(
            f"{table.name}: the copy holds {after} against {before}: copy dropped, old table left as it was"
        )
    _say(f"{table.name}: copied into {staging.name}{filled}, verified: {after}")
    client.command(f"EXCHANGE TABLES {old} AND {new}")
    client.command(f"DROP TABLE {new} SYNC")
    _say(f"{table.name}: swapped in (EXCHANGE TABLES), old table dropped")


def migrate(client: Client, database: str, *, dry_run: bool = False) -> int:
    """Bring ``database`` to the current schema; returns the number of tables changed or created (0: nothing to do)."""
    existing = _existing(client, database)
    changed = 0
    for leftover in sorted(name for name in existing if name.endswith(STAGING_SUFFIX)):
        if leftover.removesuffix(STAGING_SUFFIX) in {table.name for table in ALL_TABLES}:
            _say(f"{leftover}: left by an interrupted run, {'would drop' if dry_run else 'dropped'}")
            if not dry_run:
                client.command(f"DROP TABLE `{database}`.`{leftover}` SYNC")
            changed += 1
    outdated = outdated_tables(client, database)
    for table in ALL_TABLES:
        if table in outdated:
            migrate_table(client, database, table, outdated[table], dry_run=dry_run)
            changed += 1
        elif table.name in existing:
            _say(f"{table.name}: up to date")
    if WRITE_LOG_TABLE in outdated:
        # Bookkeeping the buckets can rebuild: no copy, just seeded again by apply_schema below.
        described = outdated[WRITE_LOG_TABLE].describe(WRITE_LOG_TABLE)
        _say(f"{described}: {'would drop it' if dry_run else 'dropped'}, to be seeded again from the stored buckets")
        if not dry_run:
            client.command(f"DROP TABLE `{database}`.`{WRITE_LOG}` SYNC")
        changed += 1
    elif WRITE_LOG in existing:
        _say(f"{WRITE_LOG}: up to date")
    missing = [table.name for table in DEFINED_TABLES if table.name not in existing]
    for name in missing:
        _say(f"{name}: {'would create' if dry_run else 'created'}")
    if not dry_run:
        apply_schema(client, database)
        if WRITE_LOG_TABLE in outdated:
            _say(f"{WRITE_LOG}: created again, seeded from the stored buckets")
    return changed + len(missing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m heatmap_core.migrate",
        description="Upgrade the ClickHouse database (HEATMAP_CLICKHOUSE_DSN, HEATMAP_CLICKHOUSE_DATABASE) "
        "created by an earlier version to the current schema, keeping every row. Stop the Dagster daemon first.",
    )
    parser.add_argument("--dry-run", action="store_true", help="print what would be done, change nothing")
    args = parser.parse_args(argv)
    settings = get_settings()
    database = settings.clickhouse_database
    _say(f"database {database}{' (dry run)' if args.dry_run else ''}")
    with clickhouse(settings) as client:
        changed = migrate(client, database, dry_run=args.dry_run)
    _say(
        f"{'would change' if args.dry_run else 'changed'} {changed} table(s)"
        if changed
        else "nothing to do: up to date"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
