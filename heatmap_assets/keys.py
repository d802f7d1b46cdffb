"""The asset keys of the code location, each named once.

Assets, checks, sensors, the automation target and tests all refer to these,
so renaming an asset is a one-line change here.
"""

from dagster import AssetKey

TOPIC_KEY = AssetKey("heatmap_events_topic")
RAW_EVENTS = AssetKey("raw_events")
HOURLY_KEY = AssetKey("heatmap_hourly")
DAILY_KEY = AssetKey("heatmap_daily")
WEEKLY_KEY = AssetKey("heatmap_weekly")

# The aggregates Dagster computes (the first two are observed, not computed).
AGGREGATES = (HOURLY_KEY, DAILY_KEY, WEEKLY_KEY)
