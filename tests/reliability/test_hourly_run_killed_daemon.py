"""The hourly run killed mid-write under the Dagster daemon: failed, its pool slot freed and rerun
by the daemon alone, with identical rows; a killed run blocks no later run.

Guarantee: a heatmap_hourly run whose run worker (and the Spark driver under it) is SIGKILLed
mid-write is marked failed, the `heatmap_bucket_writes` slot it held is freed, and the daemon
re-executes the partition, which then holds exactly a clean run's rows; a run of another partition
launched right after the kill runs to success (the pool's limit is 1, so a slot kept by the dead run would
block both). Nobody acts after the kill: this is the deployment's dagster.yaml
(`infra.programs.dagster_instance`: run monitoring with `free_slots_after_run_end_seconds`, run
retries) doing its job.

How it is measured: a real `dagster dev` (the stack's dagster program, a private DAGSTER_HOME, the
test's bucket and ClickHouse database, run monitoring ticking every 2 s) and an hour of known v2
lake data. The run is launched through GraphQL; as soon as Spark's executors write its staged rows
to the object store, the run worker's process tree (pid from the run's "Started process" event) is
SIGKILLed and a run of another hour is launched. The test then only watches: the killed run turns
FAILURE, its slot is freed, the daemon's retry (a run tagged `dagster/retry_number`) succeeds, the
hour's cells and scroll rows in ClickHouse equal a clean run's and GET /heatmap/hourly serves every
event once; the other hour's run succeeds with its exact rows. The notes give the seconds from the
kill to the run failed, to its slot freed and to the retry's success.
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
from tests.conftest import ROOT, free_port

from .figures import Figures, Tally, record
from .hour_writes import hour_rows, land_part, served_truth, spark_writing, truth
from .served import served_cells

pytestmark = pytest.mark.reliability

MONITORING_INTERVAL_S = 2
# Older than the automation lookback, so only this test's launches (and the daemon's retry) build them.
HOURS_AGO = 72
AUTOMATION_LOOKBACK_DAYS = 1
KILLED_EVENTS, LATER_EVENTS = 12_000, 2_000

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

    def wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            assert self.proc.poll() is None, f"dagster dev exited\n{self.tail()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{self.tail()}"
            time.sleep(0.2)
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

    def engine_messages(self, run_id: str) -> str:
        return "\n".join(
            entry.message for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
        )

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


def test_hourly_run_killed_is_failed_freed_and_rerun_by_the_daemon(settings, tmp_path):
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
    events = land_part(settings, hour, KILLED_EVENTS, offset=0, seed=1)
    later_events = land_part(settings, later_hour, LATER_EVENTS, offset=200_000, seed=3)

    dev = DagsterDev(settings, tmp_path / "dagster_home", tmp_path / "dagster-dev.log")
    try:
        dev.wait(dev.loaded, 240, "dagster dev to load the code location")
        killed_id = dev.launch_hour(hour)
        worker = dev.wait(lambda: dev.run_worker(killed_id), 120, "the run worker to start")
        dev.wait(lambda: spark_writing(settings), 200, "Spark writing the run's staged rows")
        held_at_kill = dev.slot_holders()
        killed_at = time.time()
        killed_pids = _kill_tree(worker)
        # Another hour's run right after the kill: it must not wait for anyone to clear the dead run.
        later_id = dev.launch_hour(later_hour)

        # From here on the test only watches.
        killed = dev.wait(lambda: dev.ended(killed_id), 60, "the killed run to be marked ended")
        crash = dev.engine_messages(killed_id)
        freed_at = dev.wait(
            lambda: killed_id not in dev.slot_holders() and time.time(), 60, "the killed run's slot to be freed"
        )
        (retry,) = dev.wait(lambda: dev.retries_of(killed_id), 60, "the daemon's retry")
        retry = dev.wait(lambda: dev.ended(retry.dagster_run.run_id), 200, "the retry to end")
        rerun_rows = hour_rows(settings, hour)
        expected = served_truth(events, hour)
        tally = Tally.of(expected, served_cells(settings, expected))

        later = dev.wait(lambda: dev.ended(later_id), 200, "the later hour's run to end")
    finally:
        dev.stop()

    record(
        Figures.from_tally(
            tally,
            scenario="Hourly run killed, rerun by the daemon",
            load=f"one hour of {len(events)} events built by a run launched through GraphQL under `dagster dev`; "
            f"then another hour of {len(later_events)}",
            faults="SIGKILL of the run worker's process tree (worker and Spark JVM) while Spark wrote staged rows",
            http_5xx=0,
            test="tests/reliability/test_hourly_run_killed_daemon.py::"
            "test_hourly_run_killed_is_failed_freed_and_rerun_by_the_daemon",
            notes=f"from the kill: run {killed.dagster_run.status.value} after {killed.end_time - killed_at:.1f} s, "
            f"its {BUCKET_WRITES_POOL} slot freed after {freed_at - killed_at:.1f} s, the daemon's retry "
            f"{retry.dagster_run.status.value} after {retry.end_time - killed_at:.1f} s; "
            f"monitoring tick {MONITORING_INTERVAL_S} s; the later hour's run {later.dagster_run.status.value}",
        )
    )
    assert held_at_kill == {killed_id}
    assert len(killed_pids) > 1  # the Spark JVM went with the worker
    assert killed.dagster_run.status == DagsterRunStatus.FAILURE
    # Failed by the code server that launched it, which saw its run process gone (not a timeout).
    assert f"Run execution process for {killed_id} was terminated by signal 9" in crash, crash
    assert retry.dagster_run.status == DagsterRunStatus.SUCCESS, dev.tail()
    assert retry.dagster_run.tags[RETRY_NUMBER_TAG] == "1"
    assert retry.dagster_run.tags["dagster/partition"] == hour_key(hour)
    assert rerun_rows == truth(events, hour)
    assert tally == Tally(len(events), len(events), 0, 0)
    assert later.dagster_run.status == DagsterRunStatus.SUCCESS, dev.tail()
    assert hour_rows(settings, later_hour) == truth(later_events, later_hour)
