"""The hourly run killed mid-write under the Dagster daemon (in the Spark job, or in the ClickHouse
write): failed, its pool slot freed and rerun by the daemon alone, with identical rows; no reader
ever sees a partial hour; a killed run blocks no later run.

Guarantee: a heatmap_hourly run whose run worker (and the Spark driver under it) is SIGKILLed
mid-write, while Spark's executors stage its rows or while it writes ClickHouse, is marked failed,
the `heatmap_bucket_writes` slot it held is freed, and the daemon re-executes the partition, which
then holds exactly a clean run's rows; throughout, the hour is served as it was before the run or
as the rerun wrote it, never a mix; a run of another partition launched right after the kill runs
to success (the pool's limit is 1, so a slot kept by the dead run would block both). Nobody acts
after the kill: this is the deployment's dagster.yaml (`infra.programs.dagster_instance`: run
monitoring with `free_slots_after_run_end_seconds`, run retries) doing its job.

How it is measured: a real `dagster dev` (the stack's dagster program, a private DAGSTER_HOME, the
test's bucket and ClickHouse database, run monitoring ticking every 2 s) and an hour of known v2
lake data, built once ("old") and then given a second lake file (hour_writes.old_hour_then_more).
A reader polls GET /heatmap/hourly for the hour's total every 50 ms from before the run until the
daemon's rerun is served. The run is launched through GraphQL; (a) as soon as Spark's executors
write its staged rows to the object store, or (b) as soon as its staging table appears in
ClickHouse (the bucket write has begun; the run's log then already says its rows were staged), the
run worker's process tree (pid from the run's "Started process" event) is SIGKILLed and a run of
another hour is launched. The test then only watches: the killed run turns FAILURE, its slot is
freed, the daemon's retry (a run tagged `dagster/retry_number`) succeeds, every total the reader saw
is the old hour's or the new one's, the hour's cells and scroll rows in ClickHouse equal a clean
run's over all its events and GET /heatmap/hourly serves every event once; the other hour's run
succeeds with its exact rows. The notes give the seconds from the kill to the run failed, to its
slot freed and to the retry's success, and what the reader saw.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunRecord, RunsFilter
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.tags import RETRY_NUMBER_TAG

from heatmap_assets.assets import BUCKET_WRITES_POOL
from heatmap_assets.partitions import hour_key
from infra.programs import dagster_dev_command, dagster_instance
from query_api.caching import is_final
from tests.conftest import ROOT, free_port, serve_app

from .figures import Figures, Tally, record
from .hour_writes import (
    HourReader,
    bucket_write_begun,
    hour_rows,
    land_part,
    old_hour_then_more,
    served_truth,
    spark_writing,
    truth,
)
from .served import served_cells

pytestmark = pytest.mark.reliability

MONITORING_INTERVAL_S = 2
# Older than the automation lookback, so only this test's launches (and the daemon's retry) build them.
HOURS_AGO = 72
AUTOMATION_LOOKBACK_DAYS = 1
LATER_EVENTS = 2_000
# The asset logs this once its Spark job has written every staged row (before the ClickHouse write).
STAGED = "staged "
# How often the kill moment is looked for: the ClickHouse write of a small hour lasts well under a second.
KILL_POLL_S = 0.01

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
LOCATION = """
{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""


class DagsterDev:
    """The stack's `dagster dev` on a free port with its own DAGSTER_HOME, in a process group of its own."""

    def __init__(self, settings, home: Path, log: Path) -> None:
        self.settings, self.home, self.log = settings, home, log
        self.url = f"http://127.0.0.1:{free_port()}"
        home.mkdir()
        (home / "dagster.yaml").write_text(dagster_instance(settings.dagster))
        env = {**os.environ, **settings.as_env(), "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT)}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                dagster_dev_command(int(self.url.rsplit(":", 1)[1])),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        answer = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        answer.raise_for_status()
        body = answer.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def wait(self, predicate, timeout: float, what: str, every: float = 0.2):
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            assert self.proc.poll() is None, f"dagster dev exited\n{self.tail()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.tail()}"
            time.sleep(every)
        return value

    def loaded(self) -> bool:
        try:
            entries = self.graphql(LOCATION)["workspaceOrError"].get("locationEntries") or []
        except (httpx.HTTPError, AssertionError):
            return False
        for entry in entries:
            error = entry["locationOrLoadError"]
            assert not error or error["__typename"] != "PythonError", error
        return any(entry["loadStatus"] == "LOADED" and entry["locationOrLoadError"] for entry in entries)

    def launch_hour(self, hour: datetime) -> str:
        params = {
            "selector": {
                "repositoryLocationName": "heatmap_assets",
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["heatmap_hourly"]}],
            },
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": hour_key(hour)}]},
        }
        launched = self.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        return launched["run"]["runId"]

    def run(self, run_id: str):
        return self.instance.get_run_record_by_id(run_id)

    def ended(self, run_id: str):
        """The run's record once it has ended."""
        record = self.run(run_id)
        return record if record.dagster_run.is_finished else None

    def run_worker(self, run_id: str) -> int | None:
        """The pid of the run's worker process, from its "Started process for run" event."""
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            pid = entry.dagster_event.engine_event_data.metadata.get("pid") if entry.dagster_event else None
            if pid is not None:
                return int(str(pid.value))
        return None

    def messages(self, run_id: str, of_type: DagsterEventType | None = None) -> str:
        """The run's event log as text (its own log lines included), or only its events of ``of_type``."""
        return "\n".join(entry.message for entry in self.instance.all_logs(run_id, of_type=of_type))

    def slot_holders(self) -> set[str]:
        """The runs holding a slot of the bucket writes pool."""
        return self.instance.event_log_storage.get_concurrency_info(BUCKET_WRITES_POOL).active_run_ids

    def retries_of(self, run_id: str) -> Sequence[RunRecord]:
        return self.instance.get_run_records(RunsFilter(tags={"dagster/parent_run_id": run_id}))

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        self.instance.dispose()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def _kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and everything under it (the run worker and its Spark JVM), as an OOM kill would."""
    root = psutil.Process(pid)
    tree = [*root.children(recursive=True), root]
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    return [process.pid for process in tree]


# The two moments of a run's write, and what shows that the kill came then.
KILL_MOMENTS = {"spark job": spark_writing, "clickhouse write": bucket_write_begun}


@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_hourly_run_killed_is_failed_freed_and_rerun_by_the_daemon(settings, spark, tmp_path, moment):
    settings = settings.model_copy(
        update={
            "auth_enabled": False,
            "dagster": settings.dagster.model_copy(
                update={
                    "run_monitoring_interval_seconds": MONITORING_INTERVAL_S,
                    "automation_lookback_days": AUTOMATION_LOOKBACK_DAYS,
                }
            ),
        }
    )
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS_AGO)
    later_hour = hour + timedelta(hours=1)
    # The reader must see every write: an hour the query API holds final would be answered from memory.
    assert not is_final(hour + timedelta(hours=1), settings)
    old, new = old_hour_then_more(settings, hour)
    later_events = land_part(settings, later_hour, LATER_EVENTS, offset=200_000, seed=3)

    dev = DagsterDev(settings, tmp_path / "dagster_home", tmp_path / "dagster-dev.log")
    try:
        with (
            serve_app("query_api.app:app", settings, log_path=tmp_path / "query.log") as url,
            HourReader(url, hour) as reader,
        ):
            reader.wait_for_total(len(old))
            dev.wait(dev.loaded, 240, "dagster dev to load the code location")
            killed_id = dev.launch_hour(hour)
            worker = dev.wait(lambda: dev.run_worker(killed_id), 120, "the run worker to start")
            dev.wait(lambda: KILL_MOMENTS[moment](settings), 200, f"the run's {moment}", every=KILL_POLL_S)
            held_at_kill = dev.slot_holders()
            killed_at = time.time()
            killed_pids = _kill_tree(worker)
            # Another hour's run right after the kill: it must not wait for anyone to clear the dead run.
            later_id = dev.launch_hour(later_hour)

            # From here on the test only watches (and the reader reads).
            killed = dev.wait(lambda: dev.ended(killed_id), 60, "the killed run to be marked ended")
            killed_log = dev.messages(killed_id)
            crash = dev.messages(killed_id, DagsterEventType.ENGINE_EVENT)
            freed_at = dev.wait(
                lambda: killed_id not in dev.slot_holders() and time.time(), 60, "the killed run's slot to be freed"
            )
            (retry,) = dev.wait(lambda: dev.retries_of(killed_id), 60, "the daemon's retry")
            retry = dev.wait(lambda: dev.ended(retry.dagster_run.run_id), 200, "the retry to end")
            reader.wait_for_total(len(new))
        rerun_rows = hour_rows(settings, hour)
        expected = served_truth(new, hour)
        tally = Tally.of(expected, served_cells(settings, expected))

        later = dev.wait(lambda: dev.ended(later_id), 200, "the later hour's run to end")
    finally:
        dev.stop()

    partial = sorted(total for total in reader.totals if total not in (len(old), len(new)))
    record(
        Figures.from_tally(
            tally,
            scenario=f"Hourly run killed, rerun by the daemon ({moment})",
            load=f"one hour: {len(old)} events built, then {len(new) - len(old)} more landed and the hour rebuilt "
            f"by a run launched through GraphQL under `dagster dev`; then another hour of {len(later_events)}",
            faults=f"SIGKILL of the run worker's process tree (worker and Spark JVM) during the {moment}; "
            f"from the kill: run {killed.dagster_run.status.value} after {killed.end_time - killed_at:.1f} s, "
            f"its {BUCKET_WRITES_POOL} slot freed after {freed_at - killed_at:.1f} s, the daemon's retry "
            f"{retry.dagster_run.status.value} after {retry.end_time - killed_at:.1f} s; "
            f"monitoring tick {MONITORING_INTERVAL_S} s; the later hour's run {later.dagster_run.status.value}",
            http_5xx=reader.server_errors,
            test="tests/reliability/test_hourly_run_killed_daemon.py::"
            f"test_hourly_run_killed_is_failed_freed_and_rerun_by_the_daemon[{moment}]",
            notes=f"reader: {reader.describe()}; partial totals seen: {partial or 'none'}",
        )
    )
    # The kill came at the moment named: before Spark finished staging, or after (in the ClickHouse write).
    assert (STAGED in killed_log) == (moment == "clickhouse write"), killed_log[-4000:]
    assert held_at_kill == {killed_id}
    assert len(killed_pids) > 1  # the Spark JVM went with the worker
    assert killed.dagster_run.status == DagsterRunStatus.FAILURE
    # Failed by the code server that launched it, which saw its run process gone (not a timeout).
    assert f"Run execution process for {killed_id} was terminated by signal 9" in crash, crash
    assert retry.dagster_run.status == DagsterRunStatus.SUCCESS, dev.tail()
    assert retry.dagster_run.tags[RETRY_NUMBER_TAG] == "1"
    assert retry.dagster_run.tags["dagster/partition"] == hour_key(hour)
    # No reader ever saw anything but the old hour or the new one, and only 200s.
    assert set(reader.totals) <= {len(old), len(new)}, reader.describe()
    assert set(reader.statuses) == {"200"}, reader.describe()
    assert rerun_rows == truth(new, hour)
    assert tally == Tally(len(new), len(new), 0, 0)
    assert later.dagster_run.status == DagsterRunStatus.SUCCESS, dev.tail()
    assert hour_rows(settings, later_hour) == truth(later_events, later_hour)
