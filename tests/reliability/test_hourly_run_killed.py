"""The hourly run killed mid-write, then rerun: identical rows, and no reader ever sees a partial hour.

Guarantee: a heatmap_hourly run SIGKILLed at any point (while its Spark job runs, or while it
writes ClickHouse: staging insert or REPLACE PARTITION) leaves the hour as it was before the run or
as the run meant it, never a mix; the rerun then writes exactly the rows a clean run writes.

How it is measured: an hour of known traffic is written to the lake and materialized (the "old"
hour); a second lake file adds events, and `dagster asset materialize` of the project's code
location, in a process group of its own, rewrites the hour. The group is SIGKILLed (a) as soon as
Spark's executors begin writing the run's staged rows to the object store (mid-job), or (b) as soon
as the run's staging table appears in ClickHouse (the bucket write has begun). The same partition is
then materialized again (a rerun of the same materialization in the test's process: a
command-line run has no code server watching it, so it stays STARTED holding its pool slot, which
the notes record; the daemon's own rerun of a killed run under `dagster dev` is measured by
test_hourly_run_killed_daemon.py; docs/ARCHITECTURE.md, Idempotency). Throughout, a reader polls
GET /heatmap/hourly for the hour's total every 50 ms; every total it sees must be the old hour's or
the new one's. After the rerun the hour's cells (per type and device) and scroll rows equal a
clean run's over all the events, and the query API serves every event exactly once per type.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef

from heatmap_assets.assets import BUCKET_WRITES_POOL
from heatmap_assets.partitions import hour_key
from infra.programs import dagster_instance
from tests.conftest import ROOT, serve_app

from .figures import Figures, Tally, record
from .hour_writes import (
    HourReader,
    assert_hour_is,
    bucket_write_begun,
    materialize_hour,
    old_hour_then_more,
    recent_hour,
    served_truth,
    spark_writing,
)
from .served import served_cells

pytestmark = pytest.mark.reliability

# The asset logs this once its Spark job has written every staged row.
STAGED = "staged "
# Only against a hang: a loaded 2-core machine takes minutes to start Spark in the run process.
KILL_TIMEOUT_S = 400


def _start_run(settings, hour, home: Path, log: Path) -> subprocess.Popen:
    """``dagster asset materialize`` of the hour, as an operator (or the daemon's run worker) runs it."""
    (home / "dagster.yaml").write_text(dagster_instance(settings.dagster))
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "heatmap_assets.definitions",
        "--select",
        "heatmap_hourly",
        "--partition",
        hour_key(hour),
    ]
    env = {**os.environ, **settings.as_env(), "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        # A process group of its own, so the kill takes the Spark JVM with it.
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _left_in_dagster(home: Path) -> str:
    """What the killed run left in its Dagster instance: the run's status and the pool slots it holds."""
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        (killed,) = instance.get_runs()
        held = instance.event_log_storage.get_concurrency_info(BUCKET_WRITES_POOL).active_slot_count
    return f"the killed run stays {killed.status.value} holding {held} {BUCKET_WRITES_POOL} slot(s)"


def _kill_when(run: subprocess.Popen, log: Path, moment, what: str) -> None:
    """SIGKILL the run's process group as soon as ``moment()`` holds."""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not moment():
        assert run.poll() is None, f"the run ended (exit {run.returncode}) before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"never saw {what}:\n{log.read_text()[-4000:]}"
        time.sleep(0.01)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait(timeout=60)


@pytest.mark.parametrize("moment", ["spark job", "clickhouse write"])
def test_hourly_run_killed_mid_write_then_rerun_writes_identical_rows(settings, spark, tmp_path, moment):
    settings = settings.model_copy(update={"auth_enabled": False})
    hour = recent_hour()
    old, new = old_hour_then_more(settings, hour)

    log = tmp_path / "run.log"
    with (
        serve_app("query_api.app:app", settings, log_path=tmp_path / "query.log") as url,
        HourReader(url, hour) as reader,
    ):
        reader.wait_for_total(len(old))
        run = _start_run(settings, hour, tmp_path, log)
        if moment == "spark job":
            _kill_when(run, log, lambda: spark_writing(settings), "Spark writing staged rows")
        else:
            _kill_when(run, log, lambda: bucket_write_begun(settings), "the staging table")
        run_log = log.read_text()
        left = _left_in_dagster(tmp_path)
        reader.wait_for_answers("200", 20)  # a second of reads of what the killed run left
        rerun_ok = materialize_hour(settings, hour)
        reader.wait_for_total(len(new))

    expected = served_truth(new, hour)
    tally = Tally.of(expected, served_cells(settings, expected))
    partial = sorted(total for total in reader.totals if total not in (len(old), len(new)))
    record(
        Figures.from_tally(
            tally,
            scenario=f"Hourly run killed mid-write, rerun ({moment})",
            load=f"one hour: {len(old)} events built, then {len(new) - len(old)} more landed and the hour rebuilt",
            faults=f"SIGKILL of the `dagster asset materialize` process group during the {moment}; same partition rerun",
            http_5xx=reader.server_errors,
            test=f"tests/reliability/test_hourly_run_killed.py::"
            f"test_hourly_run_killed_mid_write_then_rerun_writes_identical_rows[{moment}]",
            notes=f"reader: {reader.describe()}; partial totals seen: {partial or 'none'}; {left}",
        )
    )
    assert STAGED not in run_log if moment == "spark job" else STAGED in run_log, run_log[-4000:]
    assert run.returncode == -signal.SIGKILL
    assert rerun_ok
    # No reader ever saw anything but the old hour or the new one, and only 200s.
    assert set(reader.totals) <= {len(old), len(new)}, reader.describe()
    assert set(reader.statuses) == {"200"}, reader.describe()
    assert_hour_is(settings, hour, new)
    assert tally == Tally(len(new), len(new), 0, 0)
