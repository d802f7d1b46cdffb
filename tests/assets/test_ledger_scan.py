"""The ledger scan step driven by an in-memory lake: cursor, settle window, format filter, skew, bad entries.

``scan_ledger`` only lists and reads ledger keys, so a dict of keys stands in
for the bucket here; tests/assets/test_sensors.py runs the sensor around it
against the real S3 server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dagster import HourlyPartitionsDefinition

from heatmap_assets.resources import LakeObject
from heatmap_assets.sensors import SETTLE, LedgerCursor, scan_ledger
from heatmap_core import lake

# A week of hours with a fixed end, so the first and last partitions never move.
PARTITIONS = HourlyPartitionsDefinition(start_date="2026-01-04-00:00", end_date="2026-01-11-00:00", timezone="UTC")
NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
H1 = datetime(2026, 1, 9, 7, tzinfo=UTC)
H2 = datetime(2026, 1, 9, 8, tzinfo=UTC)


class MemoryLake:
    """The listing interface of LakeResource over a dict of ledger keys."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    def ledger_entries(self, start_after: str | None, limit: int) -> list[LakeObject]:
        keys = sorted(
            k for k in self.objects if k.startswith(lake.LEDGER_PREFIX) and (start_after is None or k > start_after)
        )
        return [LakeObject(k, len(self.objects[k]), NOW) for k in keys[:limit]]

    def read(self, key: str) -> bytes:
        self.reads.append(key)
        return self.objects[key]

    def add(
        self, written_at: datetime, partition: int, first_offset: int, files: list[tuple[datetime, int, str]]
    ) -> str:
        """A ledger entry naming one part file per (hour, events, format); returns its key."""
        items = [
            lake.LedgerFile(
                key=f"dt={hour:%Y-%m-%d}/hour={hour:%H}/client_id=acme/part-p{partition}-o{first_offset}-{i}.{fmt}",
                dt=f"{hour:%Y-%m-%d}",
                hour=hour.hour,
                client_id="acme",
                events=events,
                bytes=events * 100,
                format=fmt,
            )
            for i, (hour, events, fmt) in enumerate(files)
        ]
        key = lake.ledger_key(written_at, partition, first_offset)
        entry = lake.LedgerEntry(
            written_at=written_at,
            kafka_partition=partition,
            first_offset=first_offset,
            last_offset=first_offset + len(items),
            files=items,
        )
        self.objects[key] = lake.encode_ledger(entry)
        return key


def scan(source: MemoryLake, cursor: LedgerCursor, now: datetime = NOW, raw_format: str = "json"):
    return scan_ledger(source, cursor, raw_format=raw_format, now=now, partitions=PARTITIONS)


def gains(result) -> dict[str, tuple[int, int, int, int]]:
    return {key: (len(g.files), g.events, g.bytes, g.entries) for key, g in result.gained.items()}


def test_hours_gain_files_events_and_bytes_of_their_format_only():
    source = MemoryLake()
    k1 = source.add(NOW - timedelta(minutes=5), 0, 10, [(H1, 30, "json"), (H1, 30, "parquet"), (H2, 4, "json")])
    k2 = source.add(NOW - timedelta(minutes=4), 1, 3, [(H2, 8, "json")])

    result = scan(source, LedgerCursor())

    assert gains(result) == {"2026-01-09-07:00": (1, 30, 3000, 1), "2026-01-09-08:00": (2, 12, 1200, 2)}
    assert result.notes == []
    # Both entries are older than the settle window: the cursor moves past them and remembers nothing.
    assert result.cursor == LedgerCursor(after=k2, seen=frozenset())
    assert k1 < k2
    parquet = scan(source, LedgerCursor(), raw_format="parquet")
    assert gains(parquet) == {"2026-01-09-07:00": (1, 30, 3000, 1)}


def test_entries_inside_the_settle_window_are_reported_once_and_a_late_lower_key_still_counts():
    source = MemoryLake()
    old = source.add(NOW - timedelta(minutes=10), 0, 1, [(H1, 5, "json")])
    fresh = source.add(NOW - timedelta(seconds=20), 0, 6, [(H1, 7, "json")])

    first = scan(source, LedgerCursor())
    assert gains(first) == {"2026-01-09-07:00": (2, 12, 1200, 2)}
    assert first.cursor == LedgerCursor(after=old, seen=frozenset({fresh}))

    # Another landing worker publishes an entry keyed just below the fresh one, after it was read.
    late = source.add(NOW - timedelta(seconds=30), 1, 50, [(H2, 3, "json")])
    assert old < late < fresh
    source.reads.clear()
    second = scan(source, first.cursor, now=NOW + timedelta(seconds=5))
    assert gains(second) == {"2026-01-09-08:00": (1, 3, 300, 1)}
    assert source.reads == [late], "a key in seen is listed but not read again"
    assert second.cursor == LedgerCursor(after=old, seen=frozenset({late, fresh}))

    # Once the settle window has passed them, the cursor moves past both and forgets them.
    settled = scan(source, second.cursor, now=NOW + SETTLE + timedelta(seconds=1))
    assert settled.gained == {}
    assert settled.cursor == LedgerCursor(after=fresh, seen=frozenset())


def test_an_hour_that_is_not_a_partition_yet_holds_the_cursor_below_its_entry():
    source = MemoryLake()
    before = source.add(NOW - timedelta(minutes=9), 0, 1, [(H1, 2, "json")])
    skewed = source.add(NOW - timedelta(minutes=8), 0, 3, [(datetime(2026, 1, 11, 2, tzinfo=UTC), 6, "json")])
    source.add(NOW - timedelta(minutes=7), 1, 1, [(H2, 9, "json")])

    result = scan(source, LedgerCursor())

    assert gains(result) == {"2026-01-09-07:00": (1, 2, 200, 1)}, "the scan stops at the skewed entry"
    assert result.notes == [f"ledger entry {skewed} names an hour after 2026-01-10-23:00; waiting for it"]
    assert result.cursor == LedgerCursor(after=before, seen=frozenset())


def test_unreadable_entries_and_hours_before_the_first_partition_do_not_stall_the_lake():
    source = MemoryLake()
    broken = lake.ledger_key(NOW - timedelta(minutes=9), 0, 1)
    source.objects[broken] = b"{not json"
    early_hour = datetime(2026, 1, 3, 23, tzinfo=UTC)
    early = source.add(NOW - timedelta(minutes=8), 0, 2, [(early_hour, 4, "json"), (H2, 1, "json")])

    result = scan(source, LedgerCursor())

    assert gains(result) == {"2026-01-09-08:00": (1, 1, 100, 1)}
    assert len(result.notes) == 2
    assert result.notes[0].startswith(f"skipping unreadable ledger entry {broken}: ")
    assert result.notes[1] == (
        "dt=2026-01-03/hour=23/client_id=acme/part-p0-o2-0.json: hour 2026-01-03-23:00 "
        "is before the first partition 2026-01-04-00:00; not tracked"
    )
    assert result.cursor == LedgerCursor(after=early, seen=frozenset())


def test_cursor_round_trips_through_the_stored_json():
    cursor = LedgerCursor(after="_ledger/a", seen=frozenset({"_ledger/c", "_ledger/b"}))
    assert cursor.encode() == '{"after": "_ledger/a", "seen": ["_ledger/b", "_ledger/c"]}'
    assert LedgerCursor.decode(cursor.encode()) == cursor
    assert LedgerCursor.decode(None) == LedgerCursor() == LedgerCursor.decode("")
