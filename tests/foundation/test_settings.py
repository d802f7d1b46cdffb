"""The one settings object: every variable documented, and as_env rebuilds exactly the same settings."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

from pydantic_settings import BaseSettings

from heatmap_core.settings import DagsterSettings, LandingSettings, Settings, env_name

README = Path(__file__).resolve().parents[2] / "README.md"


def every_variable() -> set[str]:
    names = set()
    for group in (Settings, LandingSettings, DagsterSettings):
        for name, field in group.model_fields.items():
            if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)):
                names.add(env_name(group, name))
    return names


def test_readme_settings_table_lists_exactly_the_settings():
    table = [line for line in README.read_text().splitlines() if line.startswith("| `HEATMAP_")]
    documented = {name for line in table for name in re.findall(r"`(HEATMAP_[A-Z0-9_]+)`", line.split("|")[1])}
    assert documented == every_variable()


def test_group_variables_keep_their_names(monkeypatch):
    monkeypatch.setenv("HEATMAP_LANDING_FLUSH_INTERVAL", "0.5")
    monkeypatch.setenv("HEATMAP_LANDING_INSTANCE_ID", "a")
    monkeypatch.setenv("HEATMAP_FRESHNESS_WEEKLY_WARN_MINUTES", "7")
    monkeypatch.setenv("HEATMAP_PARTITIONS_START", "2026-01-07")
    monkeypatch.setenv("HEATMAP_AUTOMATION_LOOKBACK_DAYS", "")  # empty means the default, as before
    settings = Settings()
    assert (settings.landing.flush_interval, settings.landing.instance_id) == (0.5, "a")
    assert settings.dagster.freshness_weekly_warn_minutes == 7
    assert settings.dagster.partitions_start == date(2026, 1, 7)
    assert settings.dagster.automation_lookback_days == 14


def test_as_env_rebuilds_the_same_settings_groups_included(monkeypatch):
    original = Settings(
        topic="t.x",
        auth_enabled=False,
        landing=LandingSettings.model_validate({"max_events": 3, "parquet": False}),
        dagster=DagsterSettings.model_validate({"partitions_start": "2026-02-01", "freshness_lag_minutes": 1.5}),
    )
    env = original.as_env()
    assert env["HEATMAP_LANDING_PARQUET"] == "false"
    assert "HEATMAP_LANDING_INSTANCE_ID" not in env, "unset stays unset"
    assert set(env) <= every_variable()
    for name in every_variable():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == original
