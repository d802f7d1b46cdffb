"""Dagster code location of the heatmap lakehouse.

raw_events (observed lake files) -> heatmap_hourly (PySpark) -> heatmap_daily
-> heatmap_weekly (rollups inside ClickHouse). ``heatmap_assets.definitions``
is what ``workspace.yaml`` loads.
"""
