"""Sensors: the change ledger -> raw_events, and the late-partition alert.

``raw_events_ledger`` reads the ledger entries landing writes after each
durable flush (``_ledger/<time>-p<P>-o<first>.json``, keys sorting by write
time), strictly after its cursor, and records one ``raw_events``
materialization per hour partition that gained files, with what it learned:
new files, events and bytes, and the hour's totals from a listing of its
folder. Declarative automation takes it from there.

Landing workers write entries concurrently, so an entry can appear with a key
slightly below one already read. The cursor therefore trails the newest key by
a settle window and remembers the keys it has already handled inside that
window: nothing is missed and nothing is reported twice.

``heatmap_freshness`` evaluates the ``partitions_fresh`` check of the three
aggregates every minute and records the result whenever it changes; a failure
is an ERROR check result in the UI and an error line in the sensor's log.
"""


import json
import os
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetMaterialization,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from heatmap_assets import checks
from heatmap_assets.partitions import hour_key, hourly_partitions, window_of
from heatmap_assets.resources import LakeResource
from heatmap_core import lake

LEDGER_INTERVAL_ENV = "HEATMAP_LEDGER_SENSOR_INTERVAL_SECONDS"
FRESHNESS_INTERVAL_ENV = "HEATMAP_FRESHNESS_SENSOR_INTERVAL_SECONDS"
SETTLE = timedelta(seconds=60)
MAX_ENTRIES_PER_TICK = 2000


def _cursor(raw: str | None) -> dict:
    if not raw:
        return {"after": None, "seen": []}
    return json.loads(raw)


def _settle_key(now: datetime) -> str:
    """A ledger key prefix below every entry written after now - SETTLE."""
    return lake.ledger_time_prefix(now - SETTLE)


def scan_ledger(lake_store: LakeResource, cursor_raw: str | None, now: datetime | None = None):
    """(materializations, new cursor, log lines) for the ledger entries after the cursor."""
    now = now or datetime.now(UTC)
    cursor = _cursor(cursor_raw)
    seen = set(cursor["seen"])
    entries = lake_store.ledger_entries(cursor["after"], limit=MAX_ENTRIES_PER_TICK)
    raw_format = lake_store.settings.raw_format
    last_valid = hourly_partitions.get_last_partition_key()
    first_valid = hourly_partitions.get_first_partition_key()

    gained: dict[str, dict] = defaultdict(lambda: {"files": set(), "events": 0, "bytes": 0, "entries": 0})
    handled: list[str] = []
    notes: list[str] = []
    blocked_at: str | None = None
    for obj in entries:
        if obj.key in seen:
            continue
        try:
            entry = lake.decode_ledger(lake_store.read(obj.key))
        except Exception as exc:  # a malformed entry must not stall the lake forever
            notes.append(f"skipping unreadable ledger entry {obj.key}: {exc}")
            handled.append(obj.key)
            continue
        keys = []
        for item in entry.files:
            if item.format != raw_format:
                continue  # the other copy of the lake: the hourly job does not read it
            keys.append((hour_key(item.utc_hour), item))
        if any(last_valid is None or key > last_valid for key, _ in keys):
            # An hour that is not a partition yet (clock skew): retry this entry on a later tick.
            blocked_at = obj.key
            notes.append(f"ledger entry {obj.key} names an hour after {last_valid}; waiting for it")
            break
        for key, item in keys:
            if first_valid is None or key < first_valid:
                notes.append(f"{item.key}: hour {key} is before the first partition {first_valid}; not tracked")
                continue
            info = gained[key]
            info["files"].add(item.key)
            info["events"] += item.events
            info["bytes"] += item.bytes
            info["entries"] += 1
        handled.append(obj.key)

    materializations = []
    for key in sorted(gained):
        info = gained[key]
        hour = window_of(hourly_partitions, key)[0]
        folder = lake_store.hour_files(hour)
        materializations.append(
            AssetMaterialization(
                asset_key=checks.RAW_EVENTS,
                partition=key,
                description="Files landed for this hour (from the change ledger).",
                metadata={
                    "new_files": len(info["files"]),
                    "new_events": info["events"],
                    "new_bytes": info["bytes"],
                    "files": len(folder),
                    "bytes": sum(o.size for o in folder),
                    "ledger_entries": info["entries"],
                    "path": MetadataValue.path(f"s3://{lake_store.settings.raw_bucket}/{lake_store.hour_prefix(hour)}"),
                    "new_paths": MetadataValue.json(sorted(info["files"])[:50]),
                },
            )
        )

    # Advance to the newest handled key that is older than the settle window
    # (and below a blocked entry); remember the handled keys above it.
    limit = _settle_key(now)
    if blocked_at is not None:
        limit = min(limit, blocked_at)
    done = seen | set(handled)
    below = [k for k in done if k < limit]
    after = max([k for k in (cursor["after"], *below) if k], default=None)
    keep = sorted(k for k in done if after is None or k > after)
    return materializations, json.dumps({"after": after, "seen": keep}), notes


def raw_events_ledger_sensor():
    @sensor(
        name="raw_events_ledger",
        minimum_interval_seconds=int(os.environ.get(LEDGER_INTERVAL_ENV, "30")),
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "Reads the lake's change ledger after its cursor and records a raw_events materialization "
            "for each hour that gained files (files, events, bytes)."
        ),
    )
    def raw_events_ledger(context: SensorEvaluationContext, lake_store: LakeResource):
        materializations, cursor, notes = scan_ledger(lake_store, context.cursor)
        for note in notes:
            context.log.warning(note)
        if not materializations:
            context.update_cursor(cursor)
            return SkipReason("no new lake files in the ledger")
        context.log.info("raw_events updated for %s", ", ".join(m.partition for m in materializations))
        return SensorResult(asset_events=materializations, cursor=cursor)

    return raw_events_ledger


def evaluate_freshness(instance, previous_raw: str | None, now: datetime | None = None):
    """(check evaluations to record, new cursor, lateness by asset) for the three aggregates."""
    previous = json.loads(previous_raw) if previous_raw else {}
    lag = checks.allowed_lag()
    evaluations = []
    state = {}
    lateness_by_asset = {}
    for key in (checks.HOURLY_KEY, checks.DAILY_KEY, checks.WEEKLY_KEY):
        lateness = checks.late_partitions(instance, key, now=now, lag=lag)
        lateness_by_asset[key] = lateness
        name = key.to_user_string()
        state[name] = sorted(lateness.late)
        if previous.get(name) != state[name]:
            evaluations.append(
                AssetCheckEvaluation(
                    asset_key=key,
                    check_name=checks.FRESH_CHECK,
                    passed=lateness.passed,
                    severity=AssetCheckSeverity.ERROR,
                    metadata=lateness.metadata(lag),
                    description=(
                        "All partitions with new upstream data were rebuilt in time."
                        if lateness.passed
                        else f"{len(lateness.late)} partition(s) late: " + ", ".join(sorted(lateness.late)[:10])
                    ),
                )
            )
    return evaluations, json.dumps(state), lateness_by_asset


@sensor(
    name="heatmap_freshness",
    minimum_interval_seconds=int(os.environ.get(FRESHNESS_INTERVAL_ENV, "60")),
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Alerts when a heatmap partition is late: its upstream gained data more than "
        "HEATMAP_FRESHNESS_LAG_MINUTES ago and it has not been rebuilt since."
    ),
)
def heatmap_freshness(context: SensorEvaluationContext):
    evaluations, cursor, lateness_by_asset = evaluate_freshness(context.instance, context.cursor)
    for key, lateness in lateness_by_asset.items():
        if not lateness.passed:
            context.log.error(
                "LATE: %s partitions %s have upstream updates not rebuilt within %s",
                key.to_user_string(), ", ".join(sorted(lateness.late)[:20]), checks.allowed_lag(),
            )
    if not evaluations:
        context.update_cursor(cursor)
        return SkipReason("freshness unchanged")
    return SensorResult(asset_events=evaluations, cursor=cursor)
