"""Statements run on the one embedded engine this process owns.

Invariants: the process opens the engine of its data directory once (chDB admits one
process per directory; a second fails with "Cannot lock file .../status") and keeps
an anchor handle open for its whole life, so no request pays the ~80 ms open. Every
request runs on a handle no other request is using, so requests run concurrently and a
dashboard read does not queue behind an insert. A handle is prepared for one state
(the request's settings, database and read-only mode: a ``SET`` and a ``USE``) and,
after a ``SELECT``/``WITH``/``INSERT`` that succeeded, kept idle for the next request
wanting exactly that state (``HandlePool``): such a statement cannot change its
session, so nothing of one request reaches another, and the next one skips the open,
the ``SET`` and the ``USE`` (about 0.7 ms of the server's CPU). Any other statement
(``SET``, ``USE``, DDL, temporary tables) or a failure closes its handle, so its
session dies with it as before. An insert's data has fully arrived
before the engine sees any of it, so a client that disconnects mid-body inserts
nothing; what the engine writes is as atomic as ClickHouse makes it (one part per
block, a block up to max_insert_block_size rows).
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import chdb
from chdb.state.sqlitelike import Connection

from chdb_server.protocol import ClickHouseError, Statement, quote_setting

TAB_SEPARATED = ("TabSeparated", "TSV")
# Statements after which a handle's session is as it was prepared (their SETTINGS clause is their own).
SESSION_KEEPING = re.compile(r"\A\s*(SELECT|WITH|INSERT)\b", re.IGNORECASE)
IDLE_HANDLES = 8  # the oldest idle handle is closed beyond this


@dataclass(frozen=True)
class Answer:
    body: bytes
    # The format of the result set, None when the statement produced none (DDL, INSERT).
    output_format: str | None
    summary: dict[str, str]


HandleState = tuple[tuple[tuple[str, str], ...], str | None, bool]  # settings, database, read-only


class HandlePool:
    """Idle handles by the state they were prepared for, at most ``IDLE_HANDLES``, oldest closed first."""

    def __init__(self) -> None:
        self._idle: OrderedDict[int, tuple[HandleState, Connection]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, state: HandleState) -> Connection | None:
        """An idle handle prepared for ``state``, now the caller's; None when there is none."""
        with self._lock:
            for key, (prepared, handle) in reversed(self._idle.items()):
                if prepared == state:
                    del self._idle[key]
                    return handle
        return None

    def give(self, state: HandleState, handle: Connection) -> None:
        with self._lock:
            self._idle[id(handle)] = (state, handle)
            evicted = self._idle.popitem(last=False)[1][1] if len(self._idle) > IDLE_HANDLES else None
        if evicted is not None:
            evicted.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = list(self._idle.values()), OrderedDict()
        for _state, handle in idle:
            handle.close()


class Engine:
    def __init__(self, data_dir: Path):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = str(data_dir.resolve())
        # Insert data waits here for its statement; the name is ours (no quote can reach the SQL).
        self._spool = data_dir.resolve() / "insert_spool"
        self._spool.mkdir(exist_ok=True)
        for orphan in self._spool.iterdir():  # data of inserts a killed server never ran
            orphan.unlink()
        self._anchor = chdb.connect(self.path)
        self._pool = HandlePool()
        probe = self._anchor.query("SELECT version(), timezone()", "TabSeparated").bytes().decode()
        self.version, self.timezone = probe.strip().split("\t")

    def close(self) -> None:
        self._pool.close()
        self._anchor.close()

    def run(self, statement: Statement) -> Answer:
        state: HandleState = (tuple(sorted(statement.settings.items())), statement.database, statement.read_only)
        handle = self._pool.take(state)
        fresh = handle is None
        if handle is None:
            handle = chdb.connect(self.path)
        keep = False
        try:
            if fresh:
                self._prepare(handle, statement)
            answer = (
                self._insert(handle, statement) if statement.insert_data is not None else self._query(handle, statement)
            )
            keep = SESSION_KEEPING.match(statement.sql) is not None
            return answer
        except RuntimeError as error:  # chDB's ChdbError is a RuntimeError carrying ClickHouse's text
            raise ClickHouseError.from_engine(str(error)) from error
        finally:
            if keep:
                self._pool.give(state, handle)
            else:
                handle.close()

    @staticmethod
    def _prepare(handle, statement: Statement) -> None:
        settings = dict(statement.settings)
        if statement.read_only:
            settings["readonly"] = "2"
        if settings:
            handle.query("SET " + ", ".join(f"{name} = {quote_setting(value)}" for name, value in settings.items()))
        if statement.database:
            handle.query("USE `" + statement.database.replace("\\", "\\\\").replace("`", "\\`") + "`")

    @staticmethod
    def _query(handle, statement: Statement) -> Answer:
        if statement.explicit_format or statement.output_format not in TAB_SEPARATED:
            result = handle.query(statement.sql, statement.output_format, params=statement.parameters)
            body = bytes(result.bytes() or b"")
            produced = statement.explicit_format or bool(body)
            return Answer(body, statement.output_format if produced else None, _summary(result, len(body)))
        # HTTP tells a result set (even an empty one) from a statement without one by the
        # X-ClickHouse-Format header; with names, any result set has at least one line.
        result = handle.query(statement.sql, "TabSeparatedWithNames", params=statement.parameters)
        named = bytes(result.bytes() or b"")
        body = named[named.find(b"\n") + 1 :] if named else b""
        return Answer(body, "TabSeparated" if named else None, _summary(result, len(body)))

    def _insert(self, handle, statement: Statement) -> Answer:
        # Not chDB's streaming send_insert: its finish() reports the rows as written when the
        # table refuses them (too many partitions for one insert, a CHECK constraint), so a
        # client was told "inserted" about rows that were not. FROM INFILE runs the insert as
        # one statement, whose failure raises like any other.
        with tempfile.NamedTemporaryFile(dir=self._spool, suffix=".data") as spooled:
            spooled.write(statement.insert_data or b"")
            spooled.flush()
            sql = (
                f"{statement.sql} FROM INFILE '{spooled.name}' COMPRESSION 'none' "
                f"{statement.insert_settings} FORMAT {statement.insert_format}"
            )
            result = handle.query(sql)
        return Answer(b"", None, _summary(result, 0))


def _summary(result, result_bytes: int) -> dict[str, str]:
    return {
        "read_rows": str(result.rows_read()),
        "read_bytes": str(result.bytes_read()),
        "written_rows": str(result.rows_written()),
        "written_bytes": str(result.bytes_written()),
        "result_bytes": str(result_bytes),
        "elapsed_ns": str(int(result.elapsed() * 1e9)),
    }
