"""The code location under a real `dagster dev`: GraphQL backfills, the ledger sensor,
declarative automation and the freshness alert, all executed by the daemon.

One `dagster dev` serves the whole module (its own DAGSTER_HOME, bucket and
ClickHouse database). Tests observe it through GraphQL and the instance's
storage, and the results through ClickHouse.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetKey,
    DagsterInstance,
    JsonMetadataValue,
    PartitionKeyRange,
)
from dagster._core.instance.ref import InstanceRef

from heatmap_assets import checks
from heatmap_assets.definitions import defs
from heatmap_assets.partitions import day_key, hour_key
from heatmap_core.s3 import ensure_bucket, s3_client
from heatmap_core.schema import CELLS
from heatmap_core.settings import Settings
from infra.programs import dagster_dev_command, dagster_instance
from tests.assets import lakedata
from tests.assets.runs import CHECKS_OF
from tests.conftest import day_of, free_port, week_of

ROOT = Path(__file__).resolve().parents[2]
AUTOMATION_LOOKBACK_DAYS = 12
DAILY_FAIL_MINUTES = 1


@dataclass
class Dev:
    url: str
    settings: Settings
    home: Path
    log: Path
    proc: subprocess.Popen
    late_hour: datetime

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]

    def instance(self) -> DagsterInstance:
        return DagsterInstance.from_ref(InstanceRef.from_dir(str(self.home)))

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def wait_for(predicate, timeout: float, what: str, dev: Dev | None = None, every: float = 3.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}" + (f"\n--- dagster dev log ---\n{dev.log_tail()}" if dev else "")
            )
        time.sleep(every)


@pytest.fixture(scope="module")
def dev(stack: Settings, tmp_path_factory):
    tag = uuid.uuid4().hex[:10]
    settings = stack.model_copy(update={"raw_bucket": f"test-raw-{tag}", "clickhouse_database": f"heatmap_test_{tag}"})
    ensure_bucket(s3_client(settings), settings.raw_bucket)
    base = tmp_path_factory.mktemp("dagster")
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(dagster_instance(settings.dagster))
    log = base / "dagster-dev.log"

    # A partition kept late on purpose: raw data for an hour older than the
    # automation lookback, so nothing rebuilds it and the freshness alert must fire.
    late_hour = (datetime.now(UTC) - timedelta(days=AUTOMATION_LOOKBACK_DAYS + 2)).replace(
        minute=0, second=0, microsecond=0
    )
    part = lakedata.write_part(
        settings, late_hour, lakedata.make_events(late_hour, "acme", "home_v1", 5, partition=5, offset=1, seed=7)
    )
    lakedata.write_ledger(settings, [part], written_at=datetime.now(UTC) - timedelta(minutes=2))

    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "HEATMAP_S3_ENDPOINT": settings.s3_endpoint,
        "HEATMAP_S3_ACCESS_KEY": settings.s3_access_key,
        "HEATMAP_S3_SECRET_KEY": settings.s3_secret_key,
        "HEATMAP_RAW_BUCKET": settings.raw_bucket,
        "HEATMAP_CLICKHOUSE_DSN": settings.clickhouse_url,
        "HEATMAP_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "HEATMAP_LEDGER_SENSOR_INTERVAL_SECONDS": "5",
        "HEATMAP_AUTOMATION_INTERVAL_SECONDS": "5",
        "HEATMAP_FRESHNESS_SENSOR_INTERVAL_SECONDS": "10",
        "HEATMAP_FRESHNESS_LAG_MINUTES": "1",
        # The daily freshness policy fails a minute after the last daily materialization,
        # and Dagster's freshness daemon evaluates it every 5 s.
        "HEATMAP_FRESHNESS_DAILY_FAIL_MINUTES": str(DAILY_FAIL_MINUTES),
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
        "HEATMAP_AUTOMATION_LOOKBACK_DAYS": str(AUTOMATION_LOOKBACK_DAYS),
        "PYTHONPATH": str(ROOT),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            dagster_dev_command(port),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Dev(f"http://127.0.0.1:{port}", settings, home, log, proc, late_hour)
    try:

        def loaded():
            if proc.poll() is not None:
                raise AssertionError(f"dagster dev exited\n{server.log_tail()}")
            try:
                data = server.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                    "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
                )
            except (httpx.HTTPError, AssertionError):
                return False
            entries = data["workspaceOrError"].get("locationEntries") or []
            for entry in entries:
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise AssertionError(f"code location failed to load: {error['message']}")
            return any(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries)

        wait_for(loaded, 240, "dagster dev to load the code location", server)
        yield server
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def materialization_count(instance: DagsterInstance, key: str, partition: str) -> int:
    from dagster import AssetRecordsFilter

    return len(
        instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(key), asset_partitions=[partition]), limit=100
        ).records
    )


def latest_check_status(instance: DagsterInstance, asset: str, name: str) -> str:
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(asset), name), limit=1
    )
    return history[0].status.value if history else "NONE"


def assert_checks_succeeded(instance: DagsterInstance):
    """The code location declares exactly the expected checks, and each in-asset check's latest execution succeeded."""
    in_asset = {(asset, name) for asset, names in CHECKS_OF.items() for name in names}
    declared = {(key.asset_key.to_user_string(), key.name) for key in defs.resolve_asset_graph().asset_check_keys}
    assert declared == in_asset | {(asset, "partitions_fresh") for asset in CHECKS_OF}
    statuses = {(asset, name): latest_check_status(instance, asset, name) for asset, name in in_asset}
    assert statuses == dict.fromkeys(in_asset, "SUCCEEDED"), statuses


def bucket_tables(settings: Settings, start: datetime, end: datetime) -> tuple[dict, dict, dict]:
    """(hourly, daily, weekly) cells over the weeks covering [start, end)."""
    week0 = week_of(start.replace(tzinfo=None)).replace(tzinfo=UTC)
    week1 = week_of(end.replace(tzinfo=None)).replace(tzinfo=UTC) + timedelta(days=7)
    hourly, daily, weekly = (
        lakedata.table_cells(settings, table, week0, week1)
        for table in ("heatmap_hourly", "heatmap_daily", "heatmap_weekly")
    )
    return hourly, daily, weekly


def assert_rollups_exact(hourly: dict, daily: dict, weekly: dict) -> None:
    """daily = sum of hourly, weekly = sum of daily."""
    assert daily == lakedata.rollup(hourly, day_of)
    assert weekly == lakedata.rollup(daily, week_of)


LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on PartitionSetNotFoundError { message }
  }
}
"""
BACKFILL_STATUS = """
query($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } ... on PythonError { message } } }
"""


@dataclass
class Backfill:
    """A 48-hour backfill of hour, day and week, and what it left behind when it finished."""

    backfill_id: str
    status: str
    hours: list[datetime]
    days: list[str]
    weeks: list[str]
    events_by_hour: dict[datetime, list]
    expected: dict[tuple, int]
    runs: list
    hourly: dict[tuple, int]
    daily: dict[tuple, int]
    weekly: dict[tuple, int]


@pytest.fixture(scope="module")
def backfill(dev: Dev) -> Backfill:
    """Launches the backfill through GraphQL and records its outcome; tests needing built hours share it."""
    settings = dev.settings
    # Saturday 12:00 .. Monday 12:00 of last week-end: two days' boundaries and a week boundary.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    saturday = today - timedelta(days=(today.weekday() - 5) % 7 or 7)
    if today - saturday < timedelta(days=3):
        saturday -= timedelta(days=7)
    first = saturday + timedelta(hours=12)
    hours = [first + timedelta(hours=i) for i in range(48)]
    expected = {}
    events_by_hour = {}
    for i, hour in enumerate(hours):
        if i % 3 == 1:
            continue  # a third of the hours have no files at all
        events = lakedata.make_events(hour, "acme", "home_v1", 15 + i % 4, partition=i % 3, offset=100 * i, seed=i)
        if i % 6 == 0:  # a second client in a second file
            other = lakedata.make_events(hour, "globex", "app", 5, partition=3, offset=100 * i, seed=1000 + i)
            lakedata.write_part(settings, hour, other)
            events += other
        lakedata.write_part(settings, hour, events[: 15 + i % 4], duplicate_every=9)
        events_by_hour[hour] = events
        expected.update(lakedata.expected_cells(events, hour))
    days = sorted({day_key(h) for h in hours})
    weeks = sorted({day_key(week_of(h.replace(tzinfo=None))) for h in hours})

    params = {
        "partitionsByAssets": [
            {
                "assetKey": {"path": ["heatmap_hourly"]},
                "partitions": {"range": {"start": hour_key(hours[0]), "end": hour_key(hours[-1])}},
            },
            {"assetKey": {"path": ["heatmap_daily"]}, "partitions": {"range": {"start": days[0], "end": days[-1]}}},
            {"assetKey": {"path": ["heatmap_weekly"]}, "partitions": {"range": {"start": weeks[0], "end": weeks[-1]}}},
        ],
        "title": "48-hour test backfill",
    }
    launched = dev.graphql(LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def finished():
        status = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"].get("status")
        return (
            status if status in {"COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED", "COMPLETED"} else None
        )

    status = wait_for(finished, 600, "the 48-hour backfill", dev, every=5)
    from dagster import RunsFilter

    runs = list(dev.instance().get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id})))
    hourly, daily, weekly = bucket_tables(settings, hours[0], hours[-1])
    return Backfill(backfill_id, status, hours, days, weeks, events_by_hour, expected, runs, hourly, daily, weekly)


def partitions_of_run(run, partitions) -> list[str]:
    """The partition keys a backfill run materializes: its range, or its one partition."""
    if "dagster/partition" in run.tags:
        return [run.tags["dagster/partition"]]
    start, end = run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]
    return partitions.get_partition_keys_in_range(PartitionKeyRange(start, end))


def test_backfill_48_hours_through_graphql(dev: Dev, backfill: Backfill):
    assert backfill.status in {"COMPLETED_SUCCESS", "COMPLETED"}, f"{backfill.status}\n{dev.log_tail()}"
    # The hourly asset in one run over its whole range (single-run backfill policy: one Spark session for
    # the 48 hours). Its children are requested as the daemon sees their parents' materializations, and
    # Dagster stores that run's 48 materializations one by one after it returns: a daemon tick between
    # them requests the days (and weeks) whose hours are stored, and the rest on a later tick. So days
    # and weeks may come in more than one run, but every partition in exactly one of them.
    graph = defs.resolve_asset_graph()
    covered: dict[str, list[str]] = {}
    for run in backfill.runs:
        (key,) = run.asset_selection or set()
        covered.setdefault(key.to_user_string(), []).extend(partitions_of_run(run, graph.get(key).partitions_def))
    hourly_runs = [run for run in backfill.runs if run.asset_selection == {AssetKey("heatmap_hourly")}]
    assert len(hourly_runs) == 1, [run.asset_selection for run in backfill.runs]
    assert {asset: sorted(keys) for asset, keys in covered.items()} == {
        "heatmap_hourly": [hour_key(hour) for hour in backfill.hours],
        "heatmap_daily": backfill.days,
        "heatmap_weekly": backfill.weeks,
    }, covered
    assert len(backfill.days) == 3 and len(backfill.weeks) == 2
    assert all(r.is_success for r in backfill.runs)
    assert backfill.hourly == backfill.expected
    assert_rollups_exact(backfill.hourly, backfill.daily, backfill.weekly)
    assert sum(backfill.weekly.values()) == sum(backfill.expected.values())
    assert_checks_succeeded(dev.instance())


def test_late_files_rematerialize_hour_day_week(dev: Dev, backfill: Backfill):
    """Late files land for an hour the backfill finished: automation rebuilds hour, day and week."""
    settings = dev.settings
    hour = max(backfill.events_by_hour)
    first = backfill.events_by_hour[hour]
    keys = {
        "heatmap_hourly": hour_key(hour),
        "heatmap_daily": day_key(hour),
        "heatmap_weekly": day_key(week_of(hour.replace(tzinfo=None))),
    }
    instance = dev.instance()
    before = {k: materialization_count(instance, k, p) for k, p in keys.items()}
    assert all(before.values()), before

    late = lakedata.make_events(hour, "acme", "home_v1", 25, partition=4, offset=7000, seed=22)
    late_part = lakedata.write_part(settings, hour, late)
    lakedata.write_ledger(settings, [late_part])

    def all_ran():
        return all(materialization_count(instance, k, p) > before[k] for k, p in keys.items())

    wait_for(all_ran, 480, "automation to rebuild hour, day and week after late files", dev, every=5)
    assert lakedata.table_cells(settings, "heatmap_hourly", hour, hour + timedelta(hours=1)) == (
        lakedata.expected_cells(first + late, hour)
    )
    hourly, daily, weekly = bucket_tables(settings, hour, hour)
    assert_rollups_exact(hourly, daily, weekly)
    day = day_of(hour.replace(tzinfo=None))
    day_events = sum(
        sum(lakedata.expected_cells(e, h).values())
        for h, e in backfill.events_by_hour.items()
        if day_of(h.replace(tzinfo=None)) == day
    )
    bucket = CELLS.key.index("bucket_start")
    assert sum(v for k, v in daily.items() if k[bucket] == day) == day_events + len(late)
    assert_checks_succeeded(instance)
    # The raw_events observation that triggered it carries what the ledger said.
    from dagster import AssetRecordsFilter

    raw = (
        instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey("raw_events"), asset_partitions=[hour_key(hour)]), limit=1
        )
        .records[0]
        .asset_materialization
    )
    assert raw is not None
    assert raw.metadata["new_events"].value == len(late)


def test_freshness_policy_fails_once_the_daily_window_passes(dev: Dev, backfill: Backfill):
    """Dagster's freshness daemon records FAIL for heatmap_daily once its fail window
    (HEATMAP_FRESHNESS_DAILY_FAIL_MINUTES) has passed since the last daily materialization."""
    instance = dev.instance()
    key = AssetKey("heatmap_daily")
    assert materialization_count(instance, "heatmap_daily", backfill.days[0]) >= 1

    def failing_past_the_window():
        record = instance.get_freshness_state_records([key]).get(key)
        latest = instance.get_latest_materialization_event(key)
        return (
            record is not None
            and latest is not None
            and record.freshness_state.value == "FAIL"
            and record.updated_at.timestamp() - latest.timestamp >= DAILY_FAIL_MINUTES * 60
        )

    wait_for(failing_past_the_window, 240, "the freshness daemon to record heatmap_daily as FAIL", dev, every=5)


def test_partition_kept_late_fires_freshness_alert(dev: Dev):
    instance = dev.instance()
    late_key = hour_key(dev.late_hour)
    assert materialization_count(instance, "raw_events", late_key) >= 1 or wait_for(
        lambda: materialization_count(instance, "raw_events", late_key),
        120,
        "the ledger sensor to observe the old hour",
        dev,
    )

    def alert():
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(checks.HOURLY_KEY, checks.FRESH_CHECK), limit=20
        )
        for record in history:
            evaluation = (
                record.event.dagster_event.event_specific_data if record.event and record.event.dagster_event else None
            )
            if record.status.value == "FAILED" and isinstance(evaluation, AssetCheckEvaluation):
                late = evaluation.metadata.get("late_partitions")
                if isinstance(late, JsonMetadataValue) and late_key in (late.value or ()):
                    return evaluation
        return None

    evaluation = wait_for(alert, 240, "the freshness alert for the late hour", dev, every=5)
    assert not evaluation.passed
    assert materialization_count(instance, "heatmap_hourly", late_key) == 0
