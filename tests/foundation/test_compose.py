"""The production-like compose file is valid for docker's own parser."""

import shutil
import subprocess
from pathlib import Path

import pytest

from infra.fetch import compose_command

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "docker-compose.yml"


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client on this machine")
def test_compose_config_accepts_the_file():
    command = compose_command()
    if command is None:
        pytest.fail("a docker client exists but no compose: `python -m infra.stack fetch` installs Debian's docker-compose")
    result = subprocess.run([*command, "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    services = subprocess.run([*command, "-f", str(COMPOSE), "config", "--services"], capture_output=True, text=True, check=True)
    assert {"kafka", "minio", "clickhouse", "redis", "ingestion", "landing", "query", "dagster-webserver", "dagster-daemon"} <= set(
        services.stdout.split()
    )
