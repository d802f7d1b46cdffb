"""Dagster code location of the heatmap lakehouse.

raw_events (observed lake files) -> heatmap_hourly (PySpark) -> heatmap_daily
-> heatmap_weekly (rollups inside ClickHouse). ``heatmap_assets.definitions``
is what ``workspace.yaml`` loads.
"""

import warnings

from dagster import BetaWarning

# backfill_policy and allow_nonexistent_upstream_partitions are marked beta in
# Dagster 1.13; they are the documented way to run a range in one run and to
# map the bucket in progress.
warnings.filterwarnings("ignore", category=BetaWarning)
