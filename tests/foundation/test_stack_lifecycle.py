"""A private stack on free ports: starts healthy, survives an unclean stop, stops without orphans."""

import os
import signal

import psutil
import pytest

from heatmap_core.settings import Settings
from infra import stack as stack_module
from tests.conftest import free_port


@pytest.fixture
def private_settings(tmp_path, stack):
    return Settings(
        data_dir=tmp_path / "stack",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        s3_endpoint=f"http://127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )


def test_start_recover_and_stop_leave_nothing_running(private_settings):
    settings = private_settings
    paths = stack_module.StackPaths(settings.data_path)
    ports = [settings.kafka_port, settings.s3_port, settings.redis_port]
    try:
        stack_module.start(settings, stack_module.INFRA_SERVICES)
        assert set(stack_module.status(settings)) == {"kafka", "s3", "redis"}
        assert set(ports) <= set(stack_module.listening_pids())

        # Unclean stop: supervisord dies hard, its children are orphaned.
        supervisord = psutil.Process(int(paths.pidfile.read_text()))
        os.kill(supervisord.pid, signal.SIGKILL)
        supervisord.wait(timeout=10)
        assert stack_module.stack_processes(paths), "children should outlive a killed supervisord"

        stack_module.start(settings, stack_module.INFRA_SERVICES)
        assert all(state.startswith("RUNNING") for state in stack_module.status(settings).values())
    finally:
        stack_module.stop(settings)

    assert stack_module.stack_processes(paths) == []
    assert not set(ports) & set(stack_module.listening_pids())
    assert stack_module.status(settings) == {}


def test_a_taken_port_is_refused_with_its_owner_named(private_settings):
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", private_settings.redis_port))
        squatter.listen()
        try:
            with pytest.raises(stack_module.StackError, match=f"port {private_settings.redis_port} needed by redis is taken by pid {os.getpid()}"):
                stack_module.start(private_settings, ["redis"])
        finally:
            stack_module.stop(private_settings)
    assert stack_module.stack_processes(stack_module.StackPaths(private_settings.data_path)) == []
