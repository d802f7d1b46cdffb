"""The README's stack commands, run as a user types them, against a private stack.

The commands are read from the README's "The local stack" code block, so the
README and this test cannot drift apart. They run from the repository root
in a fresh process each (``python -m infra.stack`` runs the module as
``__main__``: issue 10 found the application programs missing that way),
with every port and the data directory moved aside through HEATMAP_*
variables; the shared stack is never touched.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import httpx
import pytest
import redis
from kafka import KafkaAdminClient

from heatmap_core.s3 import s3_client
from heatmap_core.settings import Settings
from infra import supervisor
from infra.paths import StackPaths
from infra.processes import listening_pids, stack_processes
from infra.programs import INFRA_SERVICES
from tests.conftest import ROOT, private_stack_settings

# Starts a private stack of its own (not the stack fixture), so the fast tier must leave it out.
pytestmark = pytest.mark.service

README = ROOT / "README.md"
# GET these once a start has returned: the HTTP programs' own health answers.
HEALTH_PATHS = {"ingestion": "/health", "query": "/health", "dagster": "/server_info"}


def readme_stack_commands() -> list[list[str]]:
    """The command lines of the README's first code block under "## The local stack", comments dropped."""
    section = README.read_text().split("## The local stack", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block, "README.md: no ```bash block under '## The local stack'"
    return [shlex.split(line, comments=True) for line in block.group(1).splitlines() if line.strip()]


def as_typed(argv: list[str]) -> list[str]:
    """The command as typed; a worktree without its own .venv runs it with this test's interpreter instead."""
    return argv if (ROOT / argv[0]).exists() else [sys.executable, *argv[1:]]


def http_port(settings: Settings, program: str) -> int:
    return {"ingestion": settings.ingestion_port, "query": settings.query_port, "dagster": settings.dagster_port}[
        program
    ]


def assert_serving(settings: Settings, programs: list[str]) -> None:
    """Each program answers on its own port as a client would see it."""
    states = supervisor.status(settings)
    for program in programs:
        # supervisorctl's names: the program's own, or `landing:landing-<n>` for each of several processes
        processes = [state for name, state in states.items() if name.split(":")[0] == program]
        assert processes and all(state.startswith("RUNNING") for state in processes), f"{program}: {states}"
        if program in HEALTH_PATHS:
            response = httpx.get(f"http://127.0.0.1:{http_port(settings, program)}{HEALTH_PATHS[program]}", timeout=10)
            assert response.status_code == 200, f"{program}: {response.status_code} {response.text[:300]}"
    if "kafka" in programs:
        admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        try:
            (topic,) = admin.describe_topics([settings.topic])
        finally:
            admin.close()
        assert len(topic["partitions"]) == settings.topic_partitions
    if "s3" in programs:
        buckets = {bucket["Name"] for bucket in s3_client(settings).list_buckets()["Buckets"]}
        assert {settings.raw_bucket, settings.assets_bucket} <= buckets
    if "redis" in programs:
        assert redis.Redis.from_url(settings.redis_url).ping() is True


def test_readme_stack_commands_work_as_written(tmp_path):
    commands = readme_stack_commands()
    subcommands = [argv[3] for argv in commands]
    assert all(argv[1:3] == ["-m", "infra.stack"] for argv in commands), commands
    assert subcommands[0] == "start" and subcommands[-1] == "stop" and "status" in subcommands, subcommands
    assert any({"ingestion", "landing", "query"} <= set(argv[4:]) for argv in commands), (
        "README starts no application program"
    )

    settings = private_stack_settings(tmp_path)
    ports = [
        settings.kafka_port,
        settings.kafka_controller_port,
        settings.s3_port,
        settings.redis_port,
        settings.ingestion_port,
        settings.query_port,
        settings.dagster_port,
    ]
    # COLUMNS: `status` prints a table; without a terminal rich would wrap it at 80 columns.
    env = {**os.environ, **settings.as_env(), "COLUMNS": "200"}
    started: list[str] = []
    try:
        for argv in commands:
            result = subprocess.run(as_typed(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
            output = result.stdout + result.stderr
            assert result.returncode == 0, f"{shlex.join(argv)} exited {result.returncode}:\n{output}"
            subcommand, names = argv[3], argv[4:]
            if subcommand == "start":
                started += [name for name in (names or INFRA_SERVICES) if name not in started]
                assert_serving(settings, started)
            elif subcommand == "status":
                for name in started:
                    assert re.search(rf"^\W*{name}\W.*\bRUNNING\b", output, re.MULTILINE), (
                        f"{name} not RUNNING in `status`:\n{output}"
                    )
            elif subcommand == "stop":
                assert stack_processes(StackPaths(settings.data_path)) == []
                assert not set(ports) & set(listening_pids())
                assert supervisor.status(settings) == {}
                started = []
    finally:
        # Only a failure above leaves anything to stop.
        supervisor.stop(settings)
