"""Landing SIGKILLed ten times, each time inside a flush, and restarted while records keep arriving.

Guarantee: the lake and the served hourly maps hold every record of the topic exactly once.

Measured: known records produced straight to the test's topic throughout (acknowledged = records
in the topic). Each landing process runs at debug level, so its log marks the moment a flush's
intent is written (protocol step 1) and the moment its files are landed (step 4); the test kills
it with SIGKILL as soon as the intent line of its first or second rotation flush (several
partitions at once, dozens of part files) appears. A kill is proven to have
landed inside a flush by the store and Kafka, not by timing: the next process finds the intent
of the killed process's last flush uncommitted and says "re-flushing offsets ..." for its ranges.
Afterwards the lake is read back whole and the maps are tallied cell by cell through the query
API (tests/reliability/served.py).
"""

from __future__ import annotations

import random
import re
import signal
import time

import pytest

from tests.landing.conftest import (
    LandingProcess,
    event_row,
    expected_rows,
    read_lake,
    wait_landed,
)

from .figures import Figures, record
from .landing_scenarios import INTENT, LANDING_ARGS, PRODUCE_EVERY_S, SLICE_EVENTS, batches_of, producing
from .served import tally_served

pytestmark = pytest.mark.reliability

KILLS = 10
# A rotation flush covers several partitions (dozens of part files); a replay covers one and may be over in milliseconds.
ROTATION_PARTITIONS = 3
REFLUSH = re.compile(r"re-flushing offsets (\d+)-(\d+)")


RANGE = re.compile(r"p(\d+) (\d+)-(\d+)")


def _ranges(text: str) -> set[tuple[int, int, int]]:
    """{(partition, first, last)} of an intent line's ranges."""
    return {(int(p), int(first), int(last)) for p, first, last in RANGE.findall(text)}


def _wait_for_rotation(landing: LandingProcess, position: int, timeout_s: float = 60.0) -> int:
    """Until the log shows a rotation flush's intent after ``position`` (one of several partitions:
    the replay of a single crashed range can be over in milliseconds); returns where that line ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for match in INTENT.finditer(landing.log(), position):
            position = match.end()
            if len(_ranges(match.group(1))) >= ROTATION_PARTITIONS:
                return position
        assert landing.process.poll() is None, landing.log()[-3000:]
        time.sleep(0.01)
    raise AssertionError(f"no rotation flush within {timeout_s:.0f} s:\n{landing.log()[-3000:]}")


def _reflushed(log: str) -> set[tuple[int, int]]:
    return {(int(first), int(last)) for first, last in REFLUSH.findall(log)}


def test_landing_killed_mid_flush_ten_times_lands_every_event_once(settings, spark, start_landing, tmp_path):
    rng = random.Random(16)
    # A static member id: each restart takes the partitions back at once instead of waiting out a session.
    restart = dict(HEATMAP_LANDING_INSTANCE_ID="killed")
    killed: list[tuple[LandingProcess, set[tuple[int, int, int]]]] = []  # (process, the ranges of the flush it died in)
    with producing(settings) as traffic:
        for _ in range(KILLS):
            landing = start_landing(*LANDING_ARGS, **restart)
            landing.wait_for_log(r"assigned partitions \[\d")
            position = 0
            for _ in range(rng.randint(1, 2)):  # its first or second rotation
                position = _wait_for_rotation(landing, position)
            assert landing.stop(signal.SIGKILL) == -signal.SIGKILL
            killed.append((landing, _ranges(INTENT.findall(landing.log())[-1])))

    final = start_landing(*LANDING_ARGS, **restart)
    wait_landed(settings, final)
    final.stop_cleanly()
    successors = [process for process, _ in killed[1:]] + [final]
    # The flush each kill interrupted, as the next process found it: intent written, not committed.
    replayed = [
        _reflushed(successor.log()) & {(first, last) for _, first, last in ranges}
        for (_, ranges), successor in zip(killed, successors, strict=True)
    ]

    json_rows = sorted(event_row(e) for f in read_lake(settings, "json") for e in f.events)
    events = traffic.events
    tally = tally_served(settings, batches_of(traffic.records), tmp_path, land=False)
    record(
        Figures.from_tally(
            tally,
            scenario="Landing killed -9 mid-flush, ten times",
            load=f"{len(traffic.records)} records, {events} events produced to the topic while landing was killed and "
            f"restarted ({SLICE_EVENTS} events every {PRODUCE_EVERY_S} s)",
            faults=f"{KILLS} SIGKILLs of the landing process, each between a flush's intent and its commit",
            http_5xx=0,
            test="tests/reliability/test_landing_kill_mid_flush.py::"
            "test_landing_killed_mid_flush_ten_times_lands_every_event_once",
            notes=f"{sum(map(bool, replayed))} of {KILLS} killed flushes re-flushed by the next process "
            f"({sum(map(len, replayed))} ranges onto the same keys); lake rows {len(json_rows)} for {events} events",
        )
    )

    # Every record once in the served maps and in the lake, JSON and Parquet.
    assert (tally.lost, tally.duplicated, tally.served) == (0, 0, events)
    assert json_rows == expected_rows(traffic.records, traffic.origins)
    assert sorted(event_row(e) for f in read_lake(settings, "parquet") for e in f.events) == json_rows
    # Each kill landed inside a flush: the next process re-flushed ranges of the killed one's last flush.
    assert all(replayed), [(p.log_path, r) for (p, _), r in zip(killed, replayed, strict=True)]
    assert not [p.log_path for p in [*successors, killed[0][0]] if "reading resumes at offset" in p.log()]
