"""A private stack on free ports: starts healthy, survives an unclean stop, stops without orphans."""

import os
import signal
import sys
import time

import psutil
import pytest

from infra import supervisor
from infra.console import StackError
from infra.paths import StackPaths
from infra.processes import listening_pids, stack_processes
from infra.programs import INFRA_SERVICES, PROGRAMS, Program
from tests.conftest import private_stack_settings


@pytest.fixture
def private_settings(tmp_path, stack):
    return private_stack_settings(tmp_path)


def test_start_recover_and_stop_leave_nothing_running(private_settings):
    settings = private_settings
    paths = StackPaths(settings.data_path)
    ports = [settings.kafka_port, settings.s3_port, settings.redis_port]
    try:
        supervisor.start(settings, PROGRAMS, INFRA_SERVICES)
        assert set(supervisor.status(settings)) == {"kafka", "s3", "redis"}
        assert set(ports) <= set(listening_pids())

        # Unclean stop: supervisord dies hard, its children are orphaned.
        supervisord = psutil.Process(int(paths.pidfile.read_text()))
        os.kill(supervisord.pid, signal.SIGKILL)
        supervisord.wait(timeout=10)
        assert stack_processes(paths), "children should outlive a killed supervisord"

        supervisor.start(settings, PROGRAMS, INFRA_SERVICES)
        assert all(state.startswith("RUNNING") for state in supervisor.status(settings).values())
    finally:
        supervisor.stop(settings)

    assert stack_processes(paths) == []
    assert not set(ports) & set(listening_pids())
    assert supervisor.status(settings) == {}


def test_a_taken_port_is_refused_with_its_owner_named(private_settings):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", private_settings.redis_port))
        squatter.listen()
        try:
            with pytest.raises(
                StackError, match=f"port {private_settings.redis_port} needed by redis is taken by pid {os.getpid()}"
            ):
                supervisor.start(private_settings, PROGRAMS, ["redis"])
        finally:
            supervisor.stop(private_settings)
    assert stack_processes(StackPaths(private_settings.data_path)) == []


def test_a_program_that_cannot_start_fails_the_start_at_once_with_its_log(private_settings):
    """Once supervisord gives up on a start (FATAL), the stack says so with the log's tail, without
    waiting out the program's start timeout."""
    broken = Program(
        "broken",
        lambda settings, paths: [sys.executable, "-c", "import sys; print('no such config'); sys.exit(3)"],
        lambda settings: None,
        start_timeout_s=600.0,
    )
    started = time.monotonic()
    try:
        with pytest.raises(StackError, match=r"broken failed to start(.|\n)*no such config"):
            supervisor.start(private_settings, {"broken": broken}, ["broken"], do_fetch=False)
    finally:
        supervisor.stop(private_settings)
    # supervisord's three retries take seconds; the start timeout is ten minutes.
    assert time.monotonic() - started < 120
    assert stack_processes(StackPaths(private_settings.data_path)) == []
