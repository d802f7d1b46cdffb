"""The ClickHouse server killed mid-insert and restarted: no partial bucket, the next run repairs
it, and the query API answers 503 with Retry-After while the server is down, never 500.

Guarantee: SIGKILL of the ClickHouse server while heatmap_hourly writes a bucket leaves that bucket
whole, as before the write (or as after it, had the swap been done), never a mix; while the server
is down every read of the query API is a 503 problem with a Retry-After header; once it is back
the query API answers again without a restart of its own, and rerunning the hour writes exactly
a clean run's rows.

How it is measured: a private ClickHouse server (chdb_server on a free port, its own data
directory) holds the test's database; the query API runs under uvicorn against it. An hour of
known traffic is materialized (the "old" hour), a second lake file adds events, and the hour is
materialized again in a thread; the server is SIGKILLed as soon as the run's staging table
appears (the bucket write has begun: staging insert or REPLACE PARTITION under way). A reader
polls GET /heatmap/hourly every 50 ms throughout; the server stays down a few seconds, then
restarts over the same data. The hour is compared with the old and the new truth, rebuilt, and
compared with a clean run's rows per type and device, and through the query API per type.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from heatmap_core.clickhouse import STAGE_PREFIX
from heatmap_core.schema import HOURLY
from tests.conftest import running_clickhouse, serve_app

from .figures import Figures, Tally, record
from .hour_writes import (
    HourReader,
    hour_rows,
    materialize_hour,
    old_hour_then_more,
    recent_hour,
    served_truth,
    truth,
)
from .served import served_cells

pytestmark = pytest.mark.reliability

DOWN_S = 4.0
# Only against a hang: on a loaded 2-core machine the run's Spark job alone can take a minute or more.
WRITE_TIMEOUT_S = 400


def test_clickhouse_killed_mid_insert_leaves_no_partial_bucket_and_reads_get_503(settings, spark, tmp_path):
    data_dir = tmp_path / "clickhouse-server"
    data_dir.mkdir()
    with running_clickhouse(data_dir) as server:
        settings = settings.model_copy(
            update={
                "clickhouse_dsn": server.dsn,
                "clickhouse_port": server.settings.clickhouse_port,
                "auth_enabled": False,
            }
        )
        hour = recent_hour()
        old, new = old_hour_then_more(settings, hour)

        query_log = tmp_path / "query.log"
        with serve_app("query_api.app:app", settings, log_path=query_log) as url, HourReader(url, hour) as reader:
            reader.wait_for_total(len(old))
            outcome: dict[str, bool] = {}
            writer = threading.Thread(target=lambda: outcome.update(succeeded=materialize_hour(settings, hour)))
            writer.start()
            watcher = server.client()
            deadline = time.monotonic() + WRITE_TIMEOUT_S
            while not watcher.query(
                "SELECT count() FROM system.tables WHERE database = {db:String} AND startsWith(name, {prefix:String})",
                parameters={"db": settings.clickhouse_database, "prefix": f"{STAGE_PREFIX}{HOURLY.name}_"},
            ).result_rows[0][0]:
                assert writer.is_alive() and time.monotonic() < deadline, "the bucket write was never seen under way"
                time.sleep(0.005)
            server.stop(signal.SIGKILL)
            writer.join(timeout=WRITE_TIMEOUT_S)
            before_down = reader.statuses.copy()
            time.sleep(DOWN_S)
            while_down = reader.statuses - before_down
            server.start()
            reader.wait_for_answers("200", 20)  # the query API reads again, without a restart of its own
            after_restart = hour_rows(settings, hour)
            repaired = materialize_hour(settings, hour)
            reader.wait_for_total(len(new))
        expected = served_truth(new, hour)
        tally = Tally.of(expected, served_cells(settings, expected))
        final_rows = hour_rows(settings, hour)

    left = "old" if after_restart == truth(old, hour) else "new" if after_restart == truth(new, hour) else "neither"
    record(
        Figures.from_tally(
            tally,
            scenario="ClickHouse server killed mid-insert",
            load=f"one hour: {len(old)} events built, then {len(new) - len(old)} more landed and the hour rebuilt",
            faults=f"SIGKILL of the ClickHouse server once the hour's staging table existed; down {DOWN_S:.0f} s, "
            "restarted over the same data; the hour rerun",
            http_5xx=reader.server_errors,
            test="tests/reliability/test_clickhouse_killed.py::"
            "test_clickhouse_killed_mid_insert_leaves_no_partial_bucket_and_reads_get_503",
            notes=f"while down: {dict(while_down)}; bucket after the restart: {left}; reader: {reader.describe()}",
        )
    )
    assert outcome == {"succeeded": False}
    # While the server was down every read was a 503 with Retry-After; never a 500.
    assert while_down["503"] > 0 and set(while_down) == {"503"}, dict(while_down)
    assert set(reader.statuses) <= {"200", "503"}, reader.describe()
    assert "500" not in reader.statuses
    # No partial bucket: the restart found the old hour or the new one, and no reader saw anything else.
    assert left in ("old", "new"), after_restart
    assert set(reader.totals) <= {len(old), len(new)}, reader.describe()
    # The next run repairs it exactly.
    assert repaired
    assert final_rows == truth(new, hour)
    assert tally == Tally(len(new), len(new), 0, 0)
