"""Landing's edges: undecodable records kept under _rejected/, flushes by size, the stall watchdog."""

from __future__ import annotations

import contextlib
import itertools
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest
from kafka import TopicPartition

from heatmap_core.events import encode_record
from heatmap_core.lake import LEDGER_PREFIX, decode_ledger, rejected_key
from landing.service import ConsumerStalled, Landing
from tests.landing.conftest import (
    committed_offsets,
    end_offsets,
    event_row,
    expected_rows,
    list_keys,
    make_records,
    produce,
    read_lake,
    read_object,
    send_raw,
    wait_committed,
    wait_landed,
)


def test_undecodable_records_are_kept_under_rejected_and_the_rest_lands(settings, start_landing):
    records = make_records(events=40, per_record=10, clients=("acme",), screens=("home_v1",))
    good_before = produce(settings, records[:2])
    unknown_version = encode_record(msgspec.structs.replace(records[0], version=99))
    # A valid time that lands before year 1 in UTC: once a crash that replayed it forever.
    before_year_one = encode_record(
        msgspec.structs.replace(records[0], received_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))))
    )
    bad_values = [b"not json at all", unknown_version, before_year_one]
    bad = send_raw(settings, bad_values, key=records[0].key)
    good_after = produce(settings, records[2:])

    landing = start_landing("--flush-interval", "0.5")
    wait_landed(settings, landing)
    landing.stop_cleanly()

    kept = {key: read_object(settings, key) for key in list_keys(settings, "_rejected/")}
    assert kept == {
        rejected_key(settings.topic, partition, offset): value
        for (partition, offset), value in zip(bad, bad_values, strict=True)
    }
    landed = sorted(event_row(e) for f in read_lake(settings) for e in f.events)
    assert landed == expected_rows(records, good_before + good_after)
    # The log names where a rejection was kept; further ones of that kind within a minute are held back
    # by the flood throttle (heatmap_core.logs) and show in the progress line's count instead.
    log = landing.log()
    assert any(f"rejected record kept at {key}" in log for key in kept)
    assert max(int(n) for n in re.findall(r"rejected=(\d+)", log)) >= len(kept)


def test_a_partition_flushes_when_its_buffer_reaches_max_bytes(settings, start_landing):
    # Every 10-event record (about 3 KB of JSON lines) fills the buffer past max_bytes on its own,
    # so whatever records a poll brings, they flush at once; the closing 1-event record does not.
    max_bytes = 2000
    records = make_records(events=141, per_record=10, clients=("acme",), screens=("home_v1",))
    landing = start_landing("--flush-interval", "600", "--max-bytes", str(max_bytes), "--no-parquet")
    landing.wait_for_log(r"assigned partitions \[\d")
    origins = produce(settings, records[:14])
    partition, last = origins[-1]
    # The time trigger is far away: all of this lands because of its size.
    deadline = time.monotonic() + 120
    while committed_offsets(settings, landing.group).get(partition) != last + 1:
        assert time.monotonic() < deadline, f"not flushed by size:\n{landing.log()[-3000:]}"
        time.sleep(0.3)
    origins += produce(settings, records[14:])
    stopping_at = datetime.now(UTC)
    landing.stop_cleanly()

    entries = sorted(
        (decode_ledger(read_object(settings, key)) for key in list_keys(settings, LEDGER_PREFIX)),
        key=lambda entry: entry.first_offset,
    )
    offsets = [o for _, o in origins]
    assert entries[0].first_offset == offsets[0]
    for before, after in itertools.pairwise(entries):
        assert after.first_offset == before.last_offset + 1
    *by_size, at_shutdown = entries
    assert by_size and all(sum(f.bytes for f in e.files) >= max_bytes and e.written_at < stopping_at for e in by_size)
    # The small record waited for the shutdown flush.
    assert (at_shutdown.first_offset, at_shutdown.last_offset) == (offsets[14], offsets[14])
    assert sum(f.bytes for f in at_shutdown.files) < max_bytes and at_shutdown.written_at >= stopping_at
    landed = sorted(event_row(e) for f in read_lake(settings) for e in f.events)
    assert landed == expected_rows(records, origins)


@contextlib.contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Landing.run() installs SIGTERM and SIGINT handlers; put pytest's back afterwards."""
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])


def test_watchdog_stops_the_loop_when_assigned_partitions_fetch_nothing(settings, monkeypatch, caplog):
    """A wedged client (here: partitions paused the moment they are assigned, so no fetch
    ever answers) is replaced once; when the replacement fetches nothing either, run()
    raises ConsumerStalled, which exits the process for its supervisor."""
    produce(settings, make_records(events=10, per_record=5))
    options = settings.landing.model_copy(update={"group": f"stall-{uuid.uuid4().hex[:8]}", "stall_timeout_s": 3.0})
    landing = Landing(settings.model_copy(update={"landing": options}))
    assign = landing.rebalance.on_partitions_assigned

    def assign_and_wedge(assigned):
        assign(assigned)
        landing.consumer.pause(*assigned)

    monkeypatch.setattr(landing.rebalance, "on_partitions_assigned", assign_and_wedge)
    with (
        signal_handlers_kept(),
        pytest.raises(
            ConsumerStalled,
            match=r"partitions \[\d.*\] fetched nothing 3 s after assignment, after a restart of the Kafka client",
        ),
    ):
        landing.run()
    assert [r.message for r in caplog.records if "restarting the Kafka client" in r.message] == [
        f"partitions {sorted(end_offsets(settings))} fetched nothing 3 s"
        " after assignment: restarting the Kafka client, reading resumes at the committed offsets"
    ]
    assert committed_offsets(settings, landing.options.group) == {}
    assert list_keys(settings, LEDGER_PREFIX) == []


def test_watchdog_replaces_a_client_that_stops_delivering_waiting_records(settings, monkeypatch, caplog):
    """The first client delivers one record of each partition and then nothing more (paused,
    the rest of its poll lost, as the client of the CI run of 2026-11-29 lost two partitions'
    records): its lag shows records waiting, so the watchdog replaces it, and the new client
    reads the rest from the committed offsets. Every event lands exactly once."""
    records = make_records(events=1200, per_record=20)
    origins = produce(settings, records)
    options = settings.landing.model_copy(
        update={"group": f"stall-{uuid.uuid4().hex[:8]}", "stall_timeout_s": 3.0, "flush_interval": 0.5}
    )
    landing = Landing(settings.model_copy(update={"landing": options}))
    first_client, add, wedged = landing.consumer, landing._add, set()

    def add_one_then_wedge(partition: int, offset: int, value: bytes) -> None:
        if landing.consumer is first_client:
            if partition in wedged:
                return
            wedged.add(partition)
            first_client.pause(TopicPartition(settings.topic, partition))
        add(partition, offset, value)

    monkeypatch.setattr(landing, "_add", add_one_then_wedge)
    ends = end_offsets(settings)

    def stop_once_landed() -> None:
        try:
            wait_committed(settings, options.group, lambda: "", timeout_s=120)
        finally:
            landing.stopping = True

    stopper = threading.Thread(target=stop_once_landed)
    with signal_handlers_kept():
        stopper.start()
        landing.run()
    stopper.join()

    restarts = [r.message for r in caplog.records if "restarting the Kafka client" in r.message]
    assert restarts == [
        f"partitions {sorted(p for p, end in ends.items() if end > 1)} delivered none of their waiting records"
        " for 3 s: restarting the Kafka client, reading resumes at the committed offsets"
    ]
    assert wedged == {p for p, end in ends.items() if end > 0}
    assert committed_offsets(settings, options.group) == {p: end for p, end in ends.items() if end > 0}
    landed = sorted(event_row(e) for f in read_lake(settings) for e in f.events)
    assert landed == expected_rows(records, origins)
