"""Two tenants' known rows in a ClickHouse database of their own, for the hostile-input and tenant scenarios.

globex's screen names appear in no row of acme's, so any answer given to acme's key that
holds one of them is a leak.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from heatmap_core.s3 import ensure_bucket, s3_client
from heatmap_core.settings import Settings
from tests.query.conftest import Dataset, write_dataset

ACME, GLOBEX = "acme", "globex"
SCREENS = {ACME: ("home_v1", "pricing"), GLOBEX: ("globex_checkout", "globex_admin_v2")}
READ_KEYS = {ACME: "acme-read-key", GLOBEX: "globex-read-key"}
# Ten days back: inside the hourly table's 90-day retention, past the window in which buckets change.
HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=10)


def rfc3339(moment: datetime) -> str:
    """A UTC time as the APIs write it (``Z``, not ``+00:00``)."""
    return moment.isoformat().replace("+00:00", "Z")


def write_tenants(stack: Settings) -> Settings:
    """Write both tenants' rows (one hour, a few cells per screen) and return the query API's
    settings over them: read keys on, a fresh database and screenshot bucket."""
    tag = uuid.uuid4().hex[:10]
    settings = stack.model_copy(
        update={
            "assets_bucket": f"test-assets-{tag}",
            "clickhouse_database": f"heatmap_test_{tag}",
            "auth_enabled": True,
            "read_keys": ",".join(f"{client}:{key}" for client, key in READ_KEYS.items()),
        }
    )
    ensure_bucket(s3_client(settings), settings.assets_bucket)
    data = Dataset()
    for client, screens in SCREENS.items():
        for index, screen in enumerate(screens):
            data.hourly[(client, screen, HOUR)] = Counter(
                {("click", "desktop", 10 + index, 20): 3, ("mousemove", "mobile", 50, 100 + index): 7}
            )
    write_dataset(settings, data)
    return settings
