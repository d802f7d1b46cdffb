"""Resources: the lake on S3, ClickHouse and Spark, each a thin Dagster wrapper
over ``heatmap_core`` so the batch side reaches the services the same way as
every other part of the project.

Values left unset come from the HEATMAP_* settings of the process running the
code (``heatmap_core.settings``). In the deployed code location secrets (S3
keys, a ClickHouse DSN that may carry a password) are ``dagster.EnvVar``: each
run's process reads them from its environment and the UI shows only the
variable's name.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import ConfigurableResource, EnvVar
from dagster_pyspark import LazyPySparkResource
from pydantic import PrivateAttr

from heatmap_core import lake
from heatmap_core.settings import Settings, env_name, get_settings


def _settings_with(**overrides: Any) -> Settings:
    """The process settings with the resource's explicit values laid over them."""
    return get_settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class LakeObject:
    key: str
    size: int
    last_modified: datetime


class LakeResource(ConfigurableResource):
    """The raw lake bucket (S3 API: S3Proxy locally, MinIO or S3 in production)."""

    endpoint: str | None = None
    bucket: str | None = None
    region: str | None = None
    raw_format: str | None = None
    parquet_prefix: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    _client: Any = PrivateAttr(default=None)

    @property
    def settings(self) -> Settings:
        return _settings_with(
            s3_endpoint=self.endpoint,
            raw_bucket=self.bucket,
            s3_region=self.region,
            raw_format=self.raw_format,
            parquet_prefix=self.parquet_prefix,
            s3_access_key=self.access_key,
            s3_secret_key=self.secret_key,
        )

    @property
    def client(self):
        if self._client is None:
            from heatmap_core.s3 import s3_client

            self._client = s3_client(self.settings)
        return self._client

    # The method named ``list`` shadows the builtin inside this class: annotations below spell it builtins.list.
    def list(self, prefix: str, start_after: str | None = None, limit: int | None = None) -> builtins.list[LakeObject]:
        settings = self.settings
        kwargs: dict[str, Any] = {"Bucket": settings.raw_bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        found: list[LakeObject] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                found.append(LakeObject(item["Key"], int(item["Size"]), item["LastModified"]))
                if limit is not None and len(found) >= limit:
                    return found
        return found

    def hour_prefix(self, hour: datetime) -> str:
        """The folder of one UTC hour in the configured copy of the lake."""
        settings = self.settings
        return lake.hour_prefix(hour, settings.raw_format, settings.parquet_prefix)

    def hour_glob(self, hour: datetime) -> str:
        settings = self.settings
        return lake.hour_glob(hour, settings.raw_format, settings.parquet_prefix)

    def hour_files(self, hour: datetime) -> builtins.list[LakeObject]:
        """Every part file of one UTC hour, all clients, in the configured format."""
        fmt = self.settings.raw_format
        return [
            obj
            for obj in self.list(self.hour_prefix(hour))
            if (part := lake.parse_part_key(obj.key)) and part.fmt == fmt
        ]

    def s3a_path(self, key: str) -> str:
        return f"s3a://{self.settings.raw_bucket}/{key}"

    def http_url(self, key_or_glob: str) -> str:
        settings = self.settings
        return f"{settings.s3_endpoint.rstrip('/')}/{settings.raw_bucket}/{key_or_glob}"

    def delete(self, objects: builtins.list[LakeObject]) -> int:
        """Delete the objects (S3 multi-object delete, 1,000 keys a request); returns how many."""
        for first in range(0, len(objects), 1000):
            keys = [{"Key": obj.key} for obj in objects[first : first + 1000]]
            self.client.delete_objects(Bucket=self.settings.raw_bucket, Delete={"Objects": keys, "Quiet": True})
        return len(objects)

    def sweep_staging(self, now: datetime) -> int:
        """Delete staged files older than ``lake.STAGING_MAX_AGE`` (left by runs that died); returns how many."""
        return self.delete(
            [obj for obj in self.list(lake.STAGING_PREFIX) if now - obj.last_modified > lake.STAGING_MAX_AGE]
        )

    def ledger_entries(self, start_after: str | None, limit: int = 1000) -> builtins.list[LakeObject]:
        return self.list(lake.LEDGER_PREFIX, start_after=start_after, limit=limit)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.settings.raw_bucket, Key=key)["Body"].read()


class ClickHouseResource(ConfigurableResource):
    """ClickHouse through ``heatmap_core.clickhouse``: a server DSN or embedded chDB.

    In embedded mode each ``connect()`` holds the cross-process chDB lock for
    its unit of work, so keep units short and never open one around Spark work.
    """

    dsn: str | None = None
    database: str | None = None

    _schema_applied: bool = PrivateAttr(default=False)

    @property
    def settings(self) -> Settings:
        return _settings_with(clickhouse_dsn=self.dsn, clickhouse_database=self.database)

    @property
    def db(self) -> str:
        return self.settings.clickhouse_database

    @contextmanager
    def connect(self) -> Iterator[Any]:
        from heatmap_core.clickhouse import apply_schema, clickhouse

        settings = self.settings
        with clickhouse(settings) as client:
            if not self._schema_applied:  # once per run: a run's units of work share the tables
                apply_schema(client, settings.clickhouse_database)
                self._schema_applied = True
            yield client


class SparkResource(LazyPySparkResource):
    """dagster-pyspark's lazy session, built from ``heatmap_core.spark.spark_conf``.

    ``spark_config`` holds extra Spark settings laid over the project's (which
    point s3a at the object store); the session starts on first use, so runs
    that read no files never pay for it. ``master`` selects local[*] or a
    cluster.
    """

    spark_config: dict[str, Any] = {}  # noqa: RUF012  (a pydantic field: each instance gets a copy)
    master: str | None = None
    driver_memory: str | None = None
    s3_endpoint: str | None = None
    access_key: str | None = None
    secret_key: str | None = None

    def _init_session(self) -> None:
        if self._spark_session is None:
            from heatmap_core.spark import spark_session

            settings = _settings_with(
                spark_master=self.master,
                spark_driver_memory=self.driver_memory,
                s3_endpoint=self.s3_endpoint,
                s3_access_key=self.access_key,
                s3_secret_key=self.secret_key,
            )
            extra = {key: str(value) for key, value in self.spark_config.items()}
            self._spark_session = spark_session("heatmap-assets", settings, extra)


def _secret(settings: Settings, field: str) -> EnvVar | None:
    """A secret of the deployed location: an EnvVar when the environment sets it.

    Unset, it stays None and the resource falls back to the settings' local
    default (``heatmap-secret`` for the local S3 server, embedded chDB), which
    hides nothing.
    """
    return EnvVar(env_name(settings, field)) if field in settings.model_fields_set else None


def build_resources(settings: Settings | None = None, *, from_env: bool = False) -> dict[str, Any]:
    """The resources for one set of settings.

    ``from_env`` (the deployed code location) passes the secrets as EnvVar, read
    by each run's process from its own environment; otherwise (tests, one process)
    they are plain values.
    """
    settings = settings or get_settings()
    secret: dict[str, Any]
    dsn: EnvVar | str | None
    if from_env:
        secret = {"access_key": _secret(settings, "s3_access_key"), "secret_key": _secret(settings, "s3_secret_key")}
        dsn = _secret(settings, "clickhouse_dsn")
    else:
        secret = {"access_key": settings.s3_access_key, "secret_key": settings.s3_secret_key}
        dsn = settings.clickhouse_url
    return {
        "lake_store": LakeResource(
            endpoint=settings.s3_endpoint,
            bucket=settings.raw_bucket,
            region=settings.s3_region,
            raw_format=settings.raw_format,
            parquet_prefix=settings.parquet_prefix,
            **secret,
        ),
        "clickhouse": ClickHouseResource(dsn=dsn, database=settings.clickhouse_database),
        "spark": SparkResource(
            master=settings.spark_master,
            driver_memory=settings.spark_driver_memory,
            s3_endpoint=settings.s3_endpoint,
            **secret,
        ),
    }
