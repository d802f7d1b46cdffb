"""The S3 server restarted while landing writes under load, twice.

Guarantee: landing rides the restarts out (its writes retried, nothing committed before they
all succeed, the process never exits), and the lake and the served hourly maps hold every record
of the topic exactly once.

Measured: known records produced straight to the test's topic throughout (acknowledged = records
in the topic), landing writing to a private S3Proxy. Each restart is issued the moment the
landing log (debug level) says a flush's intent is written; that the restart caught the flush
mid-write is shown by the flush's "landed" line coming only after the server was down. The lake
is read back whole and the maps are tallied cell by cell through the query API
(tests/reliability/served.py).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from heatmap_core.timeutil import hour_start
from infra import supervisor
from infra.programs import PROGRAMS
from tests.landing.conftest import (
    event_row,
    expected_rows,
    make_records,
    produce,
    read_lake,
    start_landing,  # noqa: F401  (a fixture)
    wait_landed,
)

from .figures import Figures, record
from .object_store import batches_of, private_s3  # noqa: F401  (a fixture)
from .served import tally_served
from .test_landing_kill_mid_flush import CLIENTS, INTENT, LANDING_ARGS, PRODUCE_EVERY_S, SLICE_EVENTS, SPAN

pytestmark = pytest.mark.reliability

RESTARTS = 2
DOWN_S = 8.0
RUNNING_S = 4.0  # landing writes this long before each restart, and after the last


def _landed_at(log: str, ranges: str) -> datetime | None:
    """When the flush of ``ranges`` logged its files landed (step 4), if it did."""
    for line in log.splitlines():
        if line.startswith("{") and (entry := json.loads(line)).get("message") == f"flush {ranges}: landed, to be committed":
            return datetime.fromisoformat(entry["ts"])
    return None


def test_s3_server_restarted_mid_write_loses_and_repeats_nothing(private_s3, start_landing, tmp_path):
    start = hour_start(datetime.now(UTC)) - timedelta(hours=1)
    produced: list = []
    origins: list[tuple[int, int]] = []
    stop = threading.Event()

    def produce_until_stopped() -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            records = make_records(SLICE_EVENTS, per_record=50, clients=CLIENTS, start=start, span=SPAN, seed=seed)
            origins.extend(produce(private_s3, records))
            produced.extend(records)
            time.sleep(PRODUCE_EVERY_S)

    producer = threading.Thread(target=produce_until_stopped)
    landing = start_landing(*LANDING_ARGS, lake=private_s3)
    landing.wait_for_log(r"assigned partitions \[\d")
    interrupted: list[tuple[str, datetime]] = []  # (the flush's ranges, when the server was down)
    producer.start()
    try:
        for _ in range(RESTARTS):
            time.sleep(RUNNING_S)
            match = landing.wait_for_log(INTENT.pattern, start=len(landing.log()))
            supervisor.stop_program(private_s3, "s3")
            interrupted.append((match.group(1), datetime.now(UTC)))
            time.sleep(DOWN_S)
            supervisor.start(private_s3, PROGRAMS, ["s3"], do_fetch=False)
        time.sleep(RUNNING_S)
    finally:
        stop.set()
        producer.join()
    wait_landed(private_s3, landing)
    survived = landing.process.poll() is None
    landing.stop_cleanly()

    log = landing.log()
    landed_after = [(_landed_at(log, ranges), down_at) for ranges, down_at in interrupted]
    refusals = [json.loads(line) for line in log.splitlines() if '"object_store_refusing"' in line]
    json_rows = sorted(event_row(e) for f in read_lake(private_s3, "json") for e in f.events)
    events = sum(len(r.events) for r in produced)
    tally = tally_served(private_s3, batches_of(produced), tmp_path, land=False)
    record(
        Figures.from_tally(
            tally,
            scenario="S3 server restarted mid-write",
            load=f"{len(produced)} records, {events} events produced to the topic while landing wrote "
            f"({SLICE_EVENTS} events every {PRODUCE_EVERY_S} s)",
            faults=f"the S3 server stopped and restarted {RESTARTS} times, down {DOWN_S:.0f} s each, "
            "each time as a flush had begun writing",
            http_5xx=0,
            test="tests/reliability/test_landing_s3_restart.py::test_s3_server_restarted_mid_write_loses_and_repeats_nothing",
            notes=f"landing never exited; every interrupted flush landed after the server was back; "
            f"refusals logged {len(refusals)} ({', '.join(r['error_code'] for r in refusals) or 'none'}: "
            f"the S3 client's own retries rode the rest out); lake rows {len(json_rows)} for {events} events",
        )
    )

    assert survived
    # Each restart caught a flush mid-write: it had begun before the server went down and landed after.
    assert all(landed is not None and landed > down_at for landed, down_at in landed_after), landed_after
    # Every record once in the lake, JSON and Parquet, and in the served maps.
    assert json_rows == expected_rows(produced, origins)
    assert sorted(event_row(e) for f in read_lake(private_s3, "parquet") for e in f.events) == json_rows
    assert (tally.lost, tally.duplicated, tally.served) == (0, 0, events)
