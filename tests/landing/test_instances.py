"""HEATMAP_LANDING_INSTANCES landing processes of one group, run by the stack's supervisord (``numprocs``).

The stack's program ``landing`` is supervisord's group of ``landing run`` processes
``landing-0`` .. ``landing-<n-1>``, each told its number (HEATMAP_LANDING_INSTANCE_NUMBER)
and so taking the member id ``<id>-n`` and the health port + n. The stack runs here in a
private data directory against the session's Kafka and S3 server (``with_requirements=False``,
as the end-to-end tests run the application programs), on the test's own topic and bucket.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import psutil
import pytest
from kafka import KafkaAdminClient
from supervisor.options import ServerOptions

from heatmap_core.settings import LandingSettings, Settings
from infra import supervisor
from infra.paths import StackPaths
from infra.processes import stack_processes
from infra.programs import PROGRAMS
from tests.conftest import free_port
from tests.landing.conftest import event_row, expected_rows, make_records, produce, read_lake, wait_committed

CLIENTS = ("acme", "globex", "initech", "umbrella", "hooli")


def test_the_stack_config_names_each_landing_process_and_tells_it_its_number(tmp_path):
    """supervisord itself reads the generated config: one ``landing run`` per instance, numbered from 0."""
    settings = Settings(data_dir=tmp_path, landing=LandingSettings(instances=3))
    paths = StackPaths(tmp_path)
    paths.logs.mkdir()
    paths.conf.parent.mkdir()
    paths.conf.write_text(supervisor.config(settings, paths, [PROGRAMS["landing"], PROGRAMS["redis"]]))
    options = ServerOptions()
    options.configfile = str(paths.conf)
    options.process_config(do_usage=False)

    groups = {group.name: group.process_configs for group in options.process_group_configs}
    assert [
        (process.name, process.command.split()[1:], process.environment["HEATMAP_LANDING_INSTANCE_NUMBER"])
        for process in groups["landing"]
    ] == [(f"landing-{n}", ["-m", "landing", "run"], str(n)) for n in range(3)]
    assert [process.stdout_logfile for process in groups["landing"]] == [
        str(paths.log(f"landing-{n}")) for n in range(3)
    ]
    # A program of one process keeps its own name and log.
    assert [(process.name, process.stdout_logfile) for process in groups["redis"]] == [
        ("redis", str(paths.log("redis")))
    ]


def _health_port_pair() -> int:
    """A free port whose next one is free too: instance n serves GET /health on the port + n."""
    while True:
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


@pytest.fixture
def pair(settings: Settings, tmp_path) -> Iterator[Settings]:
    """Settings of a private stack whose landing runs two processes under the static id ``pair``."""
    landing = settings.landing.model_copy(
        update={
            "instances": 2,
            "instance_id": "pair",
            "health_port": _health_port_pair(),
            "group": f"pair-{settings.topic}",
            "flush_interval": 0.5,
            "max_events": 1000,
            "log_interval": 0.5,
        }
    )
    private = settings.model_copy(update={"data_dir": tmp_path / "stack", "landing": landing})
    yield private
    supervisor.stop(private)


def _members(settings: Settings, count: int, timeout_s: float = 60.0) -> list[tuple[str | None, list[int]]]:
    """[(static member id, assigned partitions)] once the group is stable with ``count`` members."""
    group = settings.landing.group
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


def _logs(settings: Settings) -> dict[str, str]:
    paths = StackPaths(settings.data_path)
    return {name: paths.log(name).read_text(errors="replace") for name in ("landing-0", "landing-1")}


def _landed(settings: Settings) -> None:
    wait_committed(settings, settings.landing.group, lambda: "\n".join(t[-4000:] for t in _logs(settings).values()))


def test_two_landing_processes_under_supervisord_share_the_group_serve_health_and_land_each_event_once(pair):
    records = make_records(events=6_000, per_record=100, clients=CLIENTS, span=timedelta(hours=2))
    origins = produce(pair, records)
    supervisor.start(pair, PROGRAMS, ["landing"], do_fetch=False, with_requirements=False)
    paths = StackPaths(pair.data_path)

    assert set(supervisor.status(pair)) == {"landing:landing-0", "landing:landing-1"}
    pids = supervisor.pids(pair, "landing")
    assert list(pids) == ["landing-0", "landing-1"]
    supervisord = int(paths.pidfile.read_text())
    processes = [psutil.Process(pid) for pid in pids.values()]
    assert [(p.cmdline()[1:], p.ppid()) for p in processes] == [(["-m", "landing", "run"], supervisord)] * 2
    assert {name: int(paths.program_pid(name).read_text().split()[0]) for name in pids} == pids  # recorded

    members = _members(pair, 2)
    assert [instance_id for instance_id, _ in members] == ["pair", "pair-1"]
    assert sorted(p for _, partitions in members for p in partitions) == list(range(pair.topic_partitions))
    assert all(partitions for _, partitions in members)
    _landed(pair)
    port = pair.landing.health_port
    for health_port in (port, port + 1):  # instance n serves on the health port + n
        assert httpx.get(f"http://127.0.0.1:{health_port}/health", timeout=5).json()["status"] == "ok"

    supervisor.stop(pair)
    assert stack_processes(paths) == []
    assert not [process for process in processes if process.is_running()]
    # Each flushed, committed and left the group on supervisord's SIGTERM.
    assert [log.count('"landing stopped"') for log in _logs(pair).values()] == [1, 1]
    rows = sorted(event_row(e) for f in read_lake(pair, "json") for e in f.events)
    assert rows == expected_rows(records, origins)  # every event once, whichever instance landed it


def test_a_landing_process_killed_is_restarted_alone_and_the_group_lands_everything_once(pair):
    records = make_records(events=8_000, per_record=100, clients=CLIENTS, span=timedelta(hours=2))
    first, second = records[:40], records[40:]
    origins = produce(pair, first)
    supervisor.start(pair, PROGRAMS, ["landing"], do_fetch=False, with_requirements=False)
    _members(pair, 2)
    _landed(pair)
    before = supervisor.pids(pair, "landing")
    killed_at = len(_logs(pair)["landing-1"])  # the restart appends to the same log

    psutil.Process(before["landing-1"]).send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while (after := supervisor.pids(pair, "landing")).get("landing-1") in (None, before["landing-1"]):
        assert time.monotonic() < deadline, f"landing-1 not restarted: {supervisor.status(pair)}"
        time.sleep(0.5)
    assert after["landing-0"] == before["landing-0"]  # the other one runs on, untouched
    # The restart rejoins under its own id (pair-1) and is given partitions again.
    deadline = time.monotonic() + 90
    while not re.search(r"assigned partitions \[\d", _logs(pair)["landing-1"][killed_at:]):
        assert time.monotonic() < deadline, f"landing-1 not assigned after its restart:\n{_logs(pair)['landing-1']}"
        time.sleep(0.5)

    origins += produce(pair, second)
    _landed(pair)
    rows = sorted(event_row(e) for f in read_lake(pair, "json") for e in f.events)
    assert rows == expected_rows(records, origins)
