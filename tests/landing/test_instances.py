"""``landing run-instances``: HEATMAP_LANDING_INSTANCES consumers of one group, started and ended together."""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import httpx
import psutil
from kafka import KafkaAdminClient

from tests.conftest import free_port
from tests.landing.conftest import (
    LandingProcess,
    event_row,
    expected_rows,
    make_records,
    produce,
    read_lake,
    wait_landed,
)

CLIENTS = ("acme", "globex", "initech", "umbrella", "hooli")
ENV = {"HEATMAP_LANDING_FLUSH_INTERVAL": "0.5", "HEATMAP_LANDING_MAX_EVENTS": "1000", "HEATMAP_LANDING_INSTANCES": "2"}


def _members(settings, group: str, count: int, timeout_s: float = 60.0) -> list[tuple[str | None, list[int]]]:
    """[(static member id, assigned partitions)] once the group is stable with ``count`` members."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            described = admin.describe_groups([group])[group]
            members = sorted(
                (
                    member["group_instance_id"],
                    sorted(
                        p for topic in member["member_assignment"]["assigned_partitions"] for p in topic["partitions"]
                    ),
                )
                for member in described["members"]
                if member["member_assignment"]
            )
            if described["group_state"] == "Stable" and len(members) == count:
                return members
            assert time.monotonic() < deadline, f"group {group}: {described}"
            time.sleep(0.5)
    finally:
        admin.close()


def _children(landing: LandingProcess) -> list[psutil.Process]:
    return psutil.Process(landing.process.pid).children()


def _wait_gone(processes: list[psutil.Process], timeout_s: float = 30.0) -> None:
    """Until none runs (an orphan's exit code is not ours to read; a zombie has exited)."""
    deadline = time.monotonic() + timeout_s

    def running(process: psutil.Process) -> bool:
        try:
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    while any(running(process) for process in processes):
        assert time.monotonic() < deadline, f"still running: {processes}"
        time.sleep(0.2)


def test_two_instances_share_the_partitions_serve_health_and_stop_together(settings, start_landing):
    records = make_records(events=6_000, per_record=100, clients=CLIENTS, span=timedelta(hours=2))
    origins = produce(settings, records)
    port = free_port()
    landing = start_landing(
        command="run-instances", HEATMAP_LANDING_INSTANCE_ID="pair", HEATMAP_LANDING_HEALTH_PORT=str(port), **ENV
    )

    members = _members(settings, landing.group, 2)
    assert [instance_id for instance_id, _ in members] == ["pair", "pair-1"]
    assert sorted(p for _, partitions in members for p in partitions) == list(range(settings.topic_partitions))
    assert all(partitions for _, partitions in members)
    wait_landed(settings, landing)
    for health_port in (port, port + 1):  # instance n serves on the health port + n
        assert httpx.get(f"http://127.0.0.1:{health_port}/health", timeout=5).json()["status"] == "ok"

    children = _children(landing)
    assert len(children) == 2
    landing.stop_cleanly()
    _wait_gone(children)
    assert landing.log().count('"landing stopped"') == 2  # each flushed, committed and left the group
    rows = sorted(event_row(e) for f in read_lake(settings, "json") for e in f.events)
    assert rows == expected_rows(records, origins)  # every event once, whichever instance landed it


def test_one_instance_ending_ends_the_set_with_a_failure(settings, start_landing):
    landing = start_landing(command="run-instances", **ENV)
    _members(settings, landing.group, 2)
    first, second = _children(landing)

    first.send_signal(signal.SIGKILL)
    assert landing.process.wait(timeout=60) == 1  # non-zero: the supervisor restarts the set
    _wait_gone([second])
    assert landing.log().count('"landing stopped"') == 1  # the other one, stopped by SIGTERM


def test_the_instances_die_with_their_parent(settings, start_landing):
    landing = start_landing(command="run-instances", **ENV)
    _members(settings, landing.group, 2)
    children = _children(landing)

    assert landing.stop(signal.SIGKILL) == -signal.SIGKILL
    _wait_gone(children)  # the parent-death signal is SIGTERM: each stops cleanly
    assert landing.log().count('"landing stopped"') == 2
