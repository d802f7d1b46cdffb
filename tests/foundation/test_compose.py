"""The production-like compose file, as docker compose itself resolves it, wires the stack we document.

`python -m infra.stack fetch` installs Debian's docker-compose wherever a
docker client exists; `config` only parses and resolves (no engine needed).
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from heatmap_core.settings import Settings
from infra.fetch import compose_command

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "docker-compose.yml"
APPS = {"ingestion", "landing", "query", "dagster-webserver", "dagster-daemon"}
INFRA = {"kafka", "minio", "clickhouse", "redis"}
# As README.md documents the topic: 6 partitions, 7 days retention.
TOPIC_PARTITIONS = 6
TOPIC_RETENTION_HOURS = 7 * 24


@pytest.fixture(scope="module")
def resolved() -> dict:
    command = compose_command()
    if command is None:
        pytest.fail(
            "no docker compose here: `python -m infra.stack fetch` installs Debian's docker-compose", pytrace=False
        )
    result = subprocess.run([*command, "-f", str(COMPOSE), "config"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_services_and_pinned_infra_images(resolved):
    services = resolved["services"]
    assert set(services) == APPS | INFRA | {"provision"}
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["clickhouse"]["image"] == "clickhouse/clickhouse-server:25.8"
    assert {services[app]["image"] for app in APPS | {"provision"}} == {"heatmap-lakehouse:latest"}


def test_apps_read_settings_that_point_at_the_compose_services(resolved, monkeypatch):
    services = resolved["services"]
    environments = [services[app]["environment"] for app in sorted(APPS | {"provision"})]
    assert all(env == environments[0] for env in environments)
    for name in [n for n in os.environ if n.startswith("HEATMAP_")]:
        monkeypatch.delenv(name)
    for name, value in environments[0].items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.kafka_bootstrap == "kafka:9092"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.clickhouse_url == "http://heatmap:heatmap@clickhouse:8123"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.auth_enabled is True
    # The credentials the apps use are the ones MinIO and ClickHouse are started with.
    minio = services["minio"]["environment"]
    assert (settings.s3_access_key, settings.s3_secret_key) == (minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    clickhouse = services["clickhouse"]["environment"]
    assert clickhouse["CLICKHOUSE_DB"] == settings.clickhouse_database
    # The topic and buckets the apps use are the ones provision creates from the same settings.
    assert services["provision"]["command"] == ["python", "-m", "heatmap_core.provision"]
    assert (settings.topic_partitions, settings.topic_retention_hours) == (TOPIC_PARTITIONS, TOPIC_RETENTION_HOURS)


def test_apps_start_after_topic_bucket_and_healthy_stores(resolved):
    services = resolved["services"]
    expected = {
        "provision": "service_completed_successfully",
        "clickhouse": "service_healthy",
        "redis": "service_healthy",
    }
    for app in APPS:
        assert {name: dep["condition"] for name, dep in services[app]["depends_on"].items()} == expected, app
    assert {name: dep["condition"] for name, dep in services["provision"]["depends_on"].items()} == {
        "kafka": "service_healthy",
        "minio": "service_healthy",
    }
    for store in ("kafka", "minio", "clickhouse", "redis"):
        assert services[store]["healthcheck"]["test"], store


def test_apps_run_the_documented_commands_and_ports(resolved):
    services = resolved["services"]
    defaults = Settings()
    assert services["ingestion"]["command"][:2] == ["uvicorn", "ingestion_api.app:app"]
    assert services["query"]["command"][:2] == ["uvicorn", "query_api.app:app"]
    assert services["landing"]["command"] == ["python", "-m", "landing", "run"]
    published = {
        name: {int(port["published"]) for port in service.get("ports", [])} for name, service in services.items()
    }
    assert published["ingestion"] == {defaults.ingestion_port}
    assert published["query"] == {defaults.query_port}
    assert published["dagster-webserver"] == {defaults.dagster_port}
