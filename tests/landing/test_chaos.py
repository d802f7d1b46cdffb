"""SIGKILL at random moments during a 200,000-event run: every event still lands exactly once."""

from __future__ import annotations

import random
import re
import signal
import threading
import time
from datetime import timedelta

import pytest

from tests.landing.conftest import event_row, expected_rows, make_records, produce, read_lake, wait_landed

EVENTS = 200_000
KILLS = 10
CLIENTS = ("acme", "globex", "initech", "umbrella", "hooli")
LANDING_ARGS = ("--flush-interval", "0.5", "--max-events", "2500")


@pytest.mark.slow
def test_sigkill_chaos_lands_every_event_exactly_once(settings, start_landing):
    records = make_records(events=EVENTS, per_record=160, clients=CLIENTS, span=timedelta(hours=4), seed=2026)
    slices = [records[i : i + 50] for i in range(0, len(records), 50)]
    origins: list[tuple[int, int]] = []

    def produce_while_landing_runs() -> None:
        for part in slices:
            origins.extend(produce(settings, part))
            time.sleep(0.5)

    producer = threading.Thread(target=produce_while_landing_runs)
    rng = random.Random(4)
    # A static member id: each restart takes the partitions back at once instead of waiting out a session.
    restart = dict(HEATMAP_LANDING_INSTANCE_ID="chaos")
    started = []
    producer.start()
    try:
        for _ in range(KILLS):
            landing = start_landing(*LANDING_ARGS, **restart)
            started.append(landing)
            landing.wait_for_log(r"assigned partitions \[\d")
            time.sleep(rng.uniform(0.1, 2.5))
            assert landing.stop(signal.SIGKILL) == -signal.SIGKILL
    finally:
        producer.join()

    final = start_landing(*LANDING_ARGS, **restart)
    started.append(final)
    wait_landed(settings, final)
    final.stop_cleanly()
    assert not [p.log_path for p in started if "reading resumes at offset" in p.log()]  # no skipped offsets
    replays = sum(len(re.findall("re-flushing offsets", p.log())) for p in started)
    print(f"{KILLS} kills; {replays} flush ranges written before a kill were re-flushed onto the same keys")

    json_files = read_lake(settings, "json")
    rows = [event_row(e) for f in json_files for e in f.events]
    dedup_keys = {(e.kafka_partition, e.kafka_offset, e.batch_index) for f in json_files for e in f.events}
    # No duplicate lines at all (so the dedup key is a safety net, not a necessity) and nothing missing.
    assert len(rows) == EVENTS
    assert len(dedup_keys) == EVENTS
    assert sorted(rows) == expected_rows(records, origins)
    assert sorted(event_row(e) for f in read_lake(settings, "parquet") for e in f.events) == sorted(rows)
