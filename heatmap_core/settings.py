"""The one settings object, read from HEATMAP_* environment variables.

Every default works for the local stack started by ``infra.stack``.
"""

from __future__ import annotations

import hmac
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HEATMAP_", extra="ignore")

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
        """The HEATMAP_* variables that make a child process build exactly these settings."""
        return {
            f"HEATMAP_{name.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in self.model_dump().items()
        }

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


@lru_cache
def get_settings() -> Settings:
    return Settings()
