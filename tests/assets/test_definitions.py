"""The code location loads, and its secrets reach the resources as EnvVar: never in what the UI is sent."""

from __future__ import annotations

from dagster import Definitions, EnvVar
from dagster import build_resources as open_resources
from dagster._core.remote_representation.external_data import RepositorySnap, ResourceConfigEnvVarSnap
from dagster_shared.serdes import serialize_value

from heatmap_assets import definitions
from heatmap_assets.keys import AGGREGATES, DAILY_KEY, HOURLY_KEY, RAW_EVENTS, TOPIC_KEY, WEEKLY_KEY
from heatmap_assets.resources import build_resources
from heatmap_core.settings import Settings

SECRET = "s3-secret-f00d"
DSN = "http://heatmap:ch-password-beef@127.0.0.1:1/"


def test_definitions_load_with_every_asset_check_and_sensor():
    Definitions.validate_loadable(definitions.defs)
    repository = definitions.defs.get_repository_def()
    assert set(repository.asset_graph.get_all_asset_keys()) == {
        TOPIC_KEY,
        RAW_EVENTS,
        HOURLY_KEY,
        DAILY_KEY,
        WEEKLY_KEY,
    }
    assert {s.name for s in repository.sensor_defs} == {"raw_events_ledger", "heatmap_freshness", "heatmap_automation"}
    automated = {
        key
        for key in repository.asset_graph.get_all_asset_keys()
        if repository.asset_graph.get(key).automation_condition
    }
    assert automated == set(AGGREGATES)


def test_secrets_are_env_vars_resolved_at_run_time_and_absent_from_the_ui_snapshot(monkeypatch):
    monkeypatch.setenv("HEATMAP_S3_SECRET_KEY", SECRET)
    monkeypatch.setenv("HEATMAP_CLICKHOUSE_DSN", DSN)
    resources = build_resources(Settings(), from_env=True)
    assert resources["lake_store"].secret_key == EnvVar("HEATMAP_S3_SECRET_KEY")
    assert resources["spark"].secret_key == EnvVar("HEATMAP_S3_SECRET_KEY")
    assert resources["clickhouse"].dsn == EnvVar("HEATMAP_CLICKHOUSE_DSN")
    assert resources["lake_store"].access_key is None, "not set in the environment: the local default applies"

    # What the webserver is sent of the code location (resource config included).
    snap = RepositorySnap.from_def(definitions.build_definitions(resources).get_repository_def())
    assert snap.resources is not None
    shown = {resource.name: resource.configured_values for resource in snap.resources}
    assert shown["lake_store"]["secret_key"] == ResourceConfigEnvVarSnap(name="HEATMAP_S3_SECRET_KEY")
    assert shown["clickhouse"]["dsn"] == ResourceConfigEnvVarSnap(name="HEATMAP_CLICKHOUSE_DSN")
    serialized = serialize_value(snap)
    assert SECRET not in serialized and "ch-password-beef" not in serialized

    # A run's process reads the value from its environment.
    with open_resources({"lake_store": resources["lake_store"], "clickhouse": resources["clickhouse"]}) as opened:
        assert opened.lake_store.settings.s3_secret_key == SECRET
        assert opened.clickhouse.settings.clickhouse_dsn == DSN
