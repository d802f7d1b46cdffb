"""The one settings object, read from HEATMAP_* environment variables.

Every default works for the local stack started by ``infra.stack``. Two groups
keep the settings of one program together: ``landing`` (``HEATMAP_LANDING_*``)
and ``dagster``, the code location's own (``HEATMAP_PARTITIONS_*``,
``HEATMAP_AUTOMATION_*``, ``HEATMAP_FRESHNESS_*``, ...). Each group reads its
variables under its own prefix, so every variable keeps the name it had when
the group's fields lived elsewhere. README.md's settings table lists them all
(a test keeps it complete).

Nothing outside this module reads ``os.environ`` for a HEATMAP_* variable.
"""

from __future__ import annotations

import hmac
import os
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class LandingSettings(BaseSettings):
    """The landing consumer's options (``python -m landing run`` flags override them)."""

    model_config = SettingsConfigDict(env_prefix="HEATMAP_LANDING_", extra="ignore")

    group: str = Field("heatmap-landing", description="Kafka consumer group.")
    instance_id: str | None = Field(
        None,
        description="Static group membership id (KIP-345): a restart under the same id takes its partitions back "
        "without a rebalance.",
    )
    max_events: int = Field(50_000, ge=1, description="Flush a partition at this many events.")
    max_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Flush a partition at this many JSON bytes.")
    flush_interval: float = Field(
        10.0, ge=0, description="Flush a partition whose oldest buffered record is this many seconds old."
    )
    log_interval: float = Field(10.0, ge=0, description="Seconds between progress and lag lines.")
    parquet: bool = Field(True, description="Also write the Phase 2 Parquet copy under the parquet prefix.")
    log_level: str = Field("INFO", description="Level of the landing logger.")
    session_timeout_ms: int = Field(10_000, ge=1000, description="Kafka consumer group session timeout.")
    stall_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Seconds of polling after which an assigned partition that saw no fetch response, or that "
        "delivered none of its waiting records, means a wedged Kafka client: it is replaced, and the process exits "
        "(for its supervisor) if a partition it was replaced for stalls again.",
    )

    health_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve GET /health on 127.0.0.1:<port> (200 ok, 503 while the object store refuses writes, "
        "JSON saying why); unset: no endpoint.",
    )

    instances: int = Field(
        # One per two cores: a process keeps about one busy, and its writes and fetches keep the S3 server and
        # Kafka busy on about half another (BENCHMARKS.md, issue 14: two on 2 cores were no faster than one).
        default_factory=lambda: max(1, (os.cpu_count() or 1) // 2),
        ge=1,
        description="Landing processes the stack runs in the group (supervisord's `numprocs` of its `landing` "
        "program), each `landing run` on its share of the topic's partitions; one per two cores by default. "
        "Beyond the topic's partition count they idle.",
    )
    instance_number: int = Field(
        0,
        ge=0,
        description="Which of the `instances` this process is (the stack sets it per process): `landing run` "
        "applies `of_instance` of it, so instance n > 0 takes the member id `<id>-n` and the health port + n.",
    )

    @property
    def formats(self) -> tuple[str, ...]:
        return ("json", "parquet") if self.parquet else ("json",)

    def of_instance(self, number: int) -> LandingSettings:
        """The options of instance ``number`` of ``instances``: instance 0 keeps the static member id and the
        health port, instance n takes ``<id>-n`` and port + n (two members under one id fence each other)."""
        if not number:
            return self
        return self.model_copy(
            update={
                "instance_id": None if self.instance_id is None else f"{self.instance_id}-{number}",
                "health_port": None if self.health_port is None else self.health_port + number,
            }
        )

    @property
    def health_ports(self) -> tuple[int, ...]:
        """Where the ``instances`` serve GET /health (none without ``health_port``)."""
        ports = (self.of_instance(number).health_port for number in range(self.instances))
        return tuple(port for port in ports if port is not None)


class DagsterSettings(BaseSettings):
    """The Dagster code location's own settings (heatmap_assets), read when the location loads, and the
    instance's run monitoring and retries (``run_*``), which the stack writes into dagster.yaml."""

    # The variables had these names before they were gathered here; the prefix keeps them.
    # An empty variable means the default, as it did before (HEATMAP_PARTITIONS_START="").
    model_config = SettingsConfigDict(env_prefix="HEATMAP_", extra="ignore", env_ignore_empty=True)

    partitions_start: date | None = Field(
        None, description="First day of every partition set (moved back to its Sunday); unset: see the lookback."
    )
    partitions_lookback_days: int = Field(
        35, ge=1, description="Without a start: partitions begin on the Sunday on or before today minus this."
    )
    automation_lookback_days: float = Field(
        14, gt=0, description="Automation considers partitions this recent; older ones are backfilled by hand."
    )
    automation_interval_seconds: int = Field(30, ge=1, description="Tick of the automation condition sensor.")
    ledger_sensor_interval_seconds: int = Field(30, ge=1, description="Tick of the raw_events_ledger sensor.")
    freshness_sensor_interval_seconds: int = Field(60, ge=1, description="Tick of the heatmap_freshness sensor.")
    freshness_lag_minutes: float = Field(
        30, ge=0, description="A partition is late when its upstream changed longer ago than this, unrebuilt."
    )
    freshness_lookback_hours: float = Field(
        72, gt=0, description="Upstream updates this recent are checked for late partitions."
    )
    # Asset-level freshness policies (Dagster's freshness daemon): fail and warn windows.
    freshness_hourly_fail_minutes: float = Field(3 * 60, gt=0, description="heatmap_hourly fails freshness after this.")
    freshness_hourly_warn_minutes: float = Field(90, gt=0, description="heatmap_hourly warns after this.")
    freshness_daily_fail_minutes: float = Field(26 * 60, gt=0, description="heatmap_daily fails freshness after this.")
    freshness_daily_warn_minutes: float = Field(6 * 60, gt=0, description="heatmap_daily warns after this.")
    freshness_weekly_fail_minutes: float = Field(
        8 * 24 * 60, gt=0, description="heatmap_weekly fails freshness after this."
    )
    freshness_weekly_warn_minutes: float = Field(30 * 60, gt=0, description="heatmap_weekly warns after this.")
    # Dagster's instance (dagster.yaml, written by the stack): how a dead run is failed, freed and retried.
    run_monitoring_interval_seconds: int = Field(
        30,
        ge=1,
        description="Tick of Dagster's run monitoring daemon; it frees the pool slots a run still held when it "
        "ended (a killed run's) one tick after its end.",
    )
    run_max_runtime_seconds: int = Field(
        6 * 3600,
        ge=0,
        description="Run monitoring fails a run started longer ago than this (the backstop for a run whose code "
        "server died with it); 0: no limit.",
    )
    run_max_retries: int = Field(
        2, ge=0, description="The daemon re-executes a failed run (a killed one included) up to this many times."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEATMAP_", extra="ignore")

    # Program groups, each reading its own variables (see the module docstring).
    landing: LandingSettings = Field(default_factory=LandingSettings)
    dagster: DagsterSettings = Field(default_factory=DagsterSettings)

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic: str = "heatmap.events.raw"
    topic_partitions: int = 6
    topic_retention_hours: int = 168
    kafka_controller_port: int = 9093

    # Object store (S3 API; S3Proxy locally, MinIO or S3 in production)
    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_access_key: str = "heatmap"
    s3_secret_key: str = "heatmap-secret"
    s3_region: str = "us-east-1"
    raw_bucket: str = "heatmap-raw"
    # Phase 2: the Parquet copy of the lake lives under this prefix of the raw bucket.
    parquet_prefix: str = "parquet"
    # Which copy of the lake the hourly job reads: "json" or "parquet".
    raw_format: str = Field(default="json", pattern="^(json|parquet)$")
    assets_bucket: str = "heatmap-assets"

    # ClickHouse: http(s)://user:pass@host:port. Empty means the local stack's
    # ClickHouse server (chdb_server) on 127.0.0.1:clickhouse_port.
    clickhouse_dsn: str = ""
    clickhouse_database: str = "heatmap"
    # The local stack's ClickHouse HTTP server (chdb_server) listens on 127.0.0.1 here.
    clickhouse_port: int = 8123

    # Spark
    spark_master: str = "local[*]"
    spark_driver_memory: str = "2g"
    # The optional standalone cluster of the local stack (spark-master, spark-worker programs):
    # point spark_master at spark://127.0.0.1:<spark_master_port> to run the job on it.
    spark_master_port: int = 7077
    spark_master_webui_port: int = 8088

    # Redis (ingestion batch idempotency)
    redis_url: str = "redis://127.0.0.1:6379/0"

    # Local processes
    data_dir: Path = Path(".heatmap")
    cache_dir: Path = Path.home() / ".cache" / "heatmap"
    ingestion_port: int = 8001
    query_port: int = 8002
    dagster_port: int = 3000

    # Ingestion limits
    max_events_per_batch: int = 1000
    max_body_bytes: int = 512 * 1024
    event_time_past_hours: int = 72
    event_time_future_minutes: int = 10
    kafka_delivery_timeout_s: float = 5.0
    # What ingestion does while Redis, its batch_id ledger, is unreachable. "refuse" (fail closed): 503 with
    # Retry-After, so no batch is published twice; ingestion stops while Redis is down. "accept": publish
    # without the ledger and answer 202, so a batch re-sent meanwhile (a client whose 202 was lost) is
    # published again; the served maps still count it once, because the hourly job deduplicates by event
    # key. Either way the outage is logged once (redis_unreachable, redis_back) and /health says degraded,
    # and only the outage's first requests wait for Redis: then calls fail at once while a probe pings it.
    ingestion_without_redis: Literal["refuse", "accept"] = "refuse"
    # uvicorn worker processes of the ingestion API (the stack's command line). One fits a machine whose
    # cores it shares with Kafka and landing (BENCHMARKS.md); raise it to the cores the API has to itself.
    # Each worker has its own Kafka producer and Redis pool, and /metrics counts the answering worker's requests.
    ingestion_workers: int = Field(1, ge=1)
    # Accepted batches are logged as one `batches_accepted` line per interval (per-client counts); at DEBUG
    # every batch also gets its own `batch_accepted` line (batch_id, Kafka partition and offset).
    ingestion_log_interval_s: float = Field(10.0, gt=0)
    ingestion_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Query API: map answers of final buckets kept in process, per kind (cells, scroll, ranges of each,
    # and which final rollups a recent range finds).
    query_cache_entries: int = Field(64, ge=0)

    # Auth: "client_id:key,client_id:key"; empty with auth on means every request is refused.
    auth_enabled: bool = True
    write_keys: str = ""
    read_keys: str = ""
    cors_origins: str = "http://127.0.0.1:8001,http://localhost:8001,http://127.0.0.1:8002,http://localhost:8002"

    @property
    def data_path(self) -> Path:
        return self.data_dir.resolve()

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.rsplit(":", 1)[1])

    @property
    def s3_port(self) -> int:
        return urlparse(self.s3_endpoint).port or 80

    @property
    def redis_port(self) -> int:
        return urlparse(self.redis_url).port or 6379

    @property
    def clickhouse_url(self) -> str:
        return self.clickhouse_dsn or f"http://127.0.0.1:{self.clickhouse_port}"

    def keys(self, which: str) -> dict[str, str]:
        """Parse ``write_keys``/``read_keys`` into {client_id: key}."""
        raw = getattr(self, which)
        pairs = (item.split(":", 1) for item in raw.split(",") if ":" in item)
        return {client.strip(): key.strip() for client, key in pairs}

    def as_env(self) -> dict[str, str]:
        """The HEATMAP_* variables that make a child process build exactly these settings, groups included.

        Unset optional values (None) are left out: absent is how they are spelled.
        """
        env = {}
        for group in (self, self.landing, self.dagster):
            for name, value in group:
                if value is None or isinstance(value, BaseSettings):
                    continue
                env[env_name(group, name)] = str(value).lower() if isinstance(value, bool) else str(value)
        return env

    def key_owners(self, which: str, presented: str) -> list[str]:
        """Clients whose ``write_keys``/``read_keys`` entry is ``presented``, in configured order.

        Every key is compared in constant time (no lookup keyed by the secret), as
        bytes, so any header text, however encoded, is simply a key that matches none.
        """
        given = presented.encode()
        return [client for client, key in self.keys(which).items() if hmac.compare_digest(key.encode(), given)]

    @property
    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]


def env_name(group: BaseSettings | type[BaseSettings], field: str) -> str:
    """The environment variable a field of ``group`` (Settings or one of its groups) is read from."""
    return f"{group.model_config['env_prefix']}{field}".upper()


@lru_cache
def get_settings() -> Settings:
    return Settings()
