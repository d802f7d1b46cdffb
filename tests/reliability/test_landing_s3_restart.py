"""The S3 server restarted while landing writes under load, twice.

Guarantee: landing rides the restarts out (its writes retried, nothing committed before they
all succeed, the process never exits), and the lake and the served hourly maps hold every record
of the topic exactly once.

Measured: known records produced straight to the test's topic throughout (acknowledged = records
in the topic), landing writing to a private S3Proxy. Each stop is issued the moment the landing
log (debug level) says a flush's intent is written; that it caught landing mid-write is shown by
landing's own log: one `object_store_refusing` line while the server was away (a write failed
and was being retried) and one `object_store_back` after it returned. The lake is read back
whole and the maps are tallied cell by cell through the query API (tests/reliability/served.py).
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime

import pytest

from infra import supervisor
from infra.programs import PROGRAMS
from tests.landing.conftest import (
    event_row,
    expected_rows,
    read_lake,
    wait_landed,
)

from .figures import Figures, record
from .landing_scenarios import INTENT, LANDING_ARGS, PRODUCE_EVERY_S, SLICE_EVENTS, batches_of, log_events, producing
from .served import tally_served

pytestmark = pytest.mark.reliability

RESTARTS = 2
DOWN_S = 8.0
RUNNING_S = 4.0  # landing writes this long before each restart, and after the last


def _count_within(lines: list[dict], first: datetime, last: datetime) -> int:
    return sum(first <= datetime.fromisoformat(line["ts"]) <= last for line in lines)


def test_s3_server_restarted_mid_write_loses_and_repeats_nothing(private_s3, start_landing, tmp_path):
    landing = start_landing(*LANDING_ARGS, lake=private_s3)
    landing.wait_for_log(r"assigned partitions \[\d")
    stops: list[datetime] = []  # when each stop was issued
    with producing(private_s3) as traffic:
        for _ in range(RESTARTS):
            time.sleep(RUNNING_S)
            landing.wait_for_log(INTENT.pattern, start=len(landing.log()))
            stops.append(datetime.now(UTC))
            supervisor.stop_program(private_s3, "s3")
            time.sleep(DOWN_S)
            supervisor.start(private_s3, PROGRAMS, ["s3"], do_fetch=False)
        time.sleep(RUNNING_S)
    wait_landed(private_s3, landing)
    survived = landing.process.poll() is None
    landing.stop_cleanly()

    log = landing.log()
    refusals, backs = log_events(log, "object_store_refusing"), log_events(log, "object_store_back")
    # Per restart, from its stop to the next one: landing's refusing lines and its "back" lines.
    said = [
        (_count_within(refusals, first, last), _count_within(backs, first, last))
        for first, last in itertools.pairwise([*stops, datetime.now(UTC)])
    ]
    json_rows = sorted(event_row(e) for f in read_lake(private_s3, "json") for e in f.events)
    events = traffic.events
    tally = tally_served(private_s3, batches_of(traffic.records), tmp_path, land=False)
    record(
        Figures.from_tally(
            tally,
            scenario="S3 server restarted mid-write",
            load=f"{len(traffic.records)} records, {events} events produced to the topic while landing wrote "
            f"({SLICE_EVENTS} events every {PRODUCE_EVERY_S} s)",
            faults=f"the S3 server stopped and restarted {RESTARTS} times, down {DOWN_S:.0f} s each, "
            "each time as a flush had begun writing",
            http_5xx=0,
            test="tests/reliability/test_landing_s3_restart.py::test_s3_server_restarted_mid_write_loses_and_repeats_nothing",
            notes=f"landing never exited; per restart its log said (refusing, back) {said}, codes "
            f"{sorted({line['error_code'] for line in refusals})}; lake rows {len(json_rows)} for {events} events",
        )
    )

    assert survived
    # Each restart caught landing mid-write (a write failed while the server was away), said once each way.
    assert said == [(1, 1)] * RESTARTS, (stops, refusals, backs)
    # Every record once in the lake, JSON and Parquet, and in the served maps.
    assert json_rows == expected_rows(traffic.records, traffic.origins)
    assert sorted(event_row(e) for f in read_lake(private_s3, "parquet") for e in f.events) == json_rows
    assert (tally.lost, tally.duplicated, tally.served) == (0, 0, events)
