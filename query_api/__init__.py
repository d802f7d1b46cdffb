"""Query API: heatmap buckets and ranges from ClickHouse as JSON, screenshots, and the dashboard."""
