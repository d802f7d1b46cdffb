"""Two landing instances in one consumer group produce the same lake contents as one instance."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from heatmap_core.s3 import ensure_bucket, remove_bucket, s3_client
from tests.landing.conftest import event_row, expected_rows, make_records, produce, read_lake, wait_landed

CLIENTS = ("acme", "globex", "initech", "umbrella", "hooli")
SCREENS = ("home_v1", "checkout", "pricing")
ARGS = ("--flush-interval", "0.5", "--max-events", "1000")


def _contents(settings, fmt: str) -> dict[str, Counter]:
    """Per dt/hour/client_id folder, the multiset of events it holds (file names may differ)."""
    folders: dict[str, Counter] = defaultdict(Counter)
    for file in read_lake(settings, fmt):
        folders[file.key.rsplit("/", 1)[0]].update(event_row(e) for e in file.events)
    return dict(folders)


def _last_assignment(log: str) -> list[int]:
    return [int(p) for p in re.findall(r"assigned partitions \[([\d, ]*)\]", log)[-1].split(", ") if p]


def _landed_events(log: str) -> int:
    return int(re.findall(r"progress: landed=(\d+) events", log)[-1])


@pytest.fixture
def pair_settings(settings):
    """The test's settings with a lake bucket of the pair's own, removed afterwards like the test's."""
    pair = settings.model_copy(update={"raw_bucket": f"{settings.raw_bucket}-pair"})
    ensure_bucket(s3_client(pair), pair.raw_bucket)
    yield pair
    remove_bucket(s3_client(pair), pair.raw_bucket)


def test_two_instances_land_what_one_lands(settings, pair_settings, start_landing):
    first = make_records(events=10_000, per_record=100, clients=CLIENTS, screens=SCREENS, span=timedelta(hours=2))
    second = make_records(
        events=10_000, per_record=100, clients=CLIENTS, screens=SCREENS, span=timedelta(hours=2), seed=8
    )
    origins = produce(settings, first)

    single = start_landing(*ARGS, group="single")
    pair = [start_landing(*ARGS, group="pair", lake=pair_settings)]
    pair[0].wait_for_log(r"assigned partitions \[0, 1, 2, 3, 4, 5\]")
    # The second member joins while the first is landing: the group rebalances mid-stream.
    pair.append(start_landing(*ARGS, group="pair", lake=pair_settings))
    for instance in pair:
        instance.wait_for_log(r"assigned partitions \[\d(, \d){2}\]")
    origins += produce(settings, second)

    wait_landed(settings, single)
    wait_landed(pair_settings, *pair)
    assert sorted(_last_assignment(pair[0].log()) + _last_assignment(pair[1].log())) == [0, 1, 2, 3, 4, 5]
    single.stop_cleanly()
    assert [instance.stop() for instance in pair] == [0, 0]
    assert all(_landed_events(instance.log()) > 0 for instance in pair)
    assert not [p.log_path for p in (single, *pair) if "reading resumes at offset" in p.log()]  # no skipped offsets

    for fmt in ("json", "parquet"):
        one, two = _contents(settings, fmt), _contents(pair_settings, fmt)
        assert one == two
        assert sorted(row for rows in one.values() for row in rows.elements()) == expected_rows(first + second, origins)
