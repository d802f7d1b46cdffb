"""The code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

from dagster import Definitions, in_process_executor

from heatmap_assets.assets import ALL_ASSETS
from heatmap_assets.automation import heatmap_automation
from heatmap_assets.checks import fresh_checks
from heatmap_assets.resources import build_resources
from heatmap_assets.sensors import heatmap_freshness, raw_events_ledger


def build_definitions(resources: dict | None = None) -> Definitions:
    return Definitions(
        assets=ALL_ASSETS,
        asset_checks=fresh_checks,
        sensors=[raw_events_ledger, heatmap_freshness, heatmap_automation],
        resources=resources if resources is not None else build_resources(from_env=True),
        # One process per run: the steps share the run's Spark session and the box stays calm.
        executor=in_process_executor,
    )


defs = build_definitions()
