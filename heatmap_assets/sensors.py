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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from dagster import (
    AssetCheckEvaluation,
    AssetCheckSeverity,
    AssetMaterialization,
    DefaultSensorStatus,
    MetadataValue,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TimeWindowPartitionsDefinition,
    sensor,
)

from heatmap_assets import checks
from heatmap_assets.keys import AGGREGATES, RAW_EVENTS
from heatmap_assets.partitions import hour_key, hourly_partitions, window_of
from heatmap_assets.resources import LakeObject, LakeResource
from heatmap_core import lake
from heatmap_core.settings import get_settings

SETTLE = timedelta(seconds=60)
MAX_ENTRIES_PER_TICK = 2000
_DAGSTER = get_settings().dagster


# --------------------------------------------------------------------------- the ledger scan: no sensor context, no S3 client


@dataclass(frozen=True)
class LedgerCursor:
    """How far the ledger has been read: every key up to ``after`` and each key in ``seen`` is handled.

    ``seen`` only holds keys above ``after`` (the settle window), and listing
    starts after ``after``, so a handled entry is never reported again. Stored
    as ``{"after": key | null, "seen": [keys]}``.
    """

    after: str | None = None
    seen: frozenset[str] = frozenset()

    @classmethod
    def decode(cls, raw: str | None) -> "LedgerCursor":
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(data["after"], frozenset(data["seen"]))

    def encode(self) -> str:
        return json.dumps({"after": self.after, "seen": sorted(self.seen)})

    def advance(self, handled: Iterable[str], limit: str) -> "LedgerCursor":
        """Move ``after`` to the newest handled key below ``limit``; keep the handled keys above it in ``seen``."""
        done = self.seen | set(handled)
        after = max([k for k in (self.after, *(k for k in done if k < limit)) if k], default=None)
        return LedgerCursor(after, frozenset(k for k in done if after is None or k > after))


class LedgerSource(Protocol):
    """What the scan needs of the lake (``LakeResource`` on S3, or an in-memory lake in a test)."""

    def ledger_entries(self, start_after: str | None, limit: int) -> list[LakeObject]: ...

    def read(self, key: str) -> bytes: ...


@dataclass
class HourGain:
    """What the ledger entries of one tick say an hour partition gained."""

    files: set[str] = field(default_factory=set)
    events: int = 0
    bytes: int = 0
    entries: int = 0


@dataclass(frozen=True)
class LedgerScan:
    gained: dict[str, HourGain]  # hour partition key -> its gain, for the hours that gained files
    cursor: LedgerCursor
    notes: list[str]  # what a person should know: unreadable entries, hours outside the partitions


def settle_limit(now: datetime) -> str:
    """A ledger key below every entry written after ``now - SETTLE``."""
    return lake.ledger_time_prefix(now - SETTLE)


def scan_ledger(
    source: LedgerSource,
    cursor: LedgerCursor,
    *,
    raw_format: str,
    now: datetime,
    partitions: TimeWindowPartitionsDefinition = hourly_partitions,
) -> LedgerScan:
    """The hours that gained files in the ledger entries after ``cursor``, and the cursor to store next.

    An entry naming an hour that is not a partition yet (clock skew) stops the
    scan there and is read again on a later tick; hours before the first
    partition and malformed entries are noted and passed over, so neither stalls the lake.
    """
    last_valid = partitions.get_last_partition_key()
    first_valid = partitions.get_first_partition_key()
    gained: dict[str, HourGain] = {}
    handled: list[str] = []
    notes: list[str] = []
    limit = settle_limit(now)
    for obj in source.ledger_entries(cursor.after, limit=MAX_ENTRIES_PER_TICK):
        if obj.key in cursor.seen:
            continue
        try:
            entry = lake.decode_ledger(source.read(obj.key))
        except Exception as exc:  # noqa: BLE001  (a malformed entry must not stall the lake forever)
            notes.append(f"skipping unreadable ledger entry {obj.key}: {exc}")
            handled.append(obj.key)
            continue
        keys = []
        for item in entry.files:
            if item.format != raw_format:
                continue  # the other copy of the lake: the hourly job does not read it
            keys.append((hour_key(item.utc_hour), item))
        if any(last_valid is None or key > last_valid for key, _ in keys):
            notes.append(f"ledger entry {obj.key} names an hour after {last_valid}; waiting for it")
            limit = min(limit, obj.key)  # the cursor stays below it
            break
        for key, item in keys:
            if first_valid is None or key < first_valid:
                notes.append(f"{item.key}: hour {key} is before the first partition {first_valid}; not tracked")
                continue
            gain = gained.setdefault(key, HourGain())
            gain.files.add(item.key)
            gain.events += item.events
            gain.bytes += item.bytes
            gain.entries += 1
        handled.append(obj.key)
    return LedgerScan(gained, cursor.advance(handled, limit), notes)


# --------------------------------------------------------------------------- sensors


def _materialization(lake_store: LakeResource, key: str, gain: HourGain) -> AssetMaterialization:
    """raw_events of one hour: what the ledger added, and the hour's totals from a listing of its folder."""
    hour = window_of(hourly_partitions, key)[0]
    folder = lake_store.hour_files(hour)
    return AssetMaterialization(
        asset_key=RAW_EVENTS,
        partition=key,
        description="Files landed for this hour (from the change ledger).",
        metadata={
            "new_files": len(gain.files),
            "new_events": gain.events,
            "new_bytes": gain.bytes,
            "files": len(folder),
            "bytes": sum(o.size for o in folder),
            "ledger_entries": gain.entries,
            "path": MetadataValue.path(f"s3://{lake_store.settings.raw_bucket}/{lake_store.hour_prefix(hour)}"),
            "new_paths": MetadataValue.json(sorted(gain.files)[:50]),
        },
    )


@sensor(
    name="raw_events_ledger",
    minimum_interval_seconds=_DAGSTER.ledger_sensor_interval_seconds,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Reads the lake's change ledger after its cursor and records a raw_events materialization "
        "for each hour that gained files (files, events, bytes)."
    ),
)
def raw_events_ledger(context: SensorEvaluationContext, lake_store: LakeResource):
    scan = scan_ledger(
        lake_store,
        LedgerCursor.decode(context.cursor),
        raw_format=lake_store.settings.raw_format,
        now=datetime.now(UTC),
    )
    for note in scan.notes:
        context.log.warning(note)
    if not scan.gained:
        context.update_cursor(scan.cursor.encode())
        return SkipReason("no new lake files in the ledger")
    materializations = [_materialization(lake_store, key, gain) for key, gain in sorted(scan.gained.items())]
    context.log.info("raw_events updated for %s", ", ".join(sorted(scan.gained)))
    return SensorResult(asset_events=materializations, cursor=scan.cursor.encode())


def evaluate_freshness(instance, previous_raw: str | None, now: datetime | None = None):
    """(check evaluations to record, new cursor, lateness by asset) for the three aggregates."""
    previous = json.loads(previous_raw) if previous_raw else {}
    lag = checks.allowed_lag()
    evaluations = []
    state = {}
    lateness_by_asset = {}
    for key in AGGREGATES:
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
    minimum_interval_seconds=_DAGSTER.freshness_sensor_interval_seconds,
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
                key.to_user_string(),
                ", ".join(sorted(lateness.late)[:20]),
                checks.allowed_lag(),
            )
    if not evaluations:
        context.update_cursor(cursor)
        return SkipReason("freshness unchanged")
    return SensorResult(asset_events=evaluations, cursor=cursor)
