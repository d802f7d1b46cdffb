"""Shared contracts of the heatmap lakehouse: settings, event model, grid, lake
layout, ClickHouse access and schema. Imports no web framework and no Dagster."""
