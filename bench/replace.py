"""The cost of materializing one hour as its day fills up: ``replace_bucket`` of hour 0 and of hour 23
of the same day, every hour of which holds 200,000 cells (1M with --big), on a chdb_server of the
bench's own. Under a day partition each replacement stages the rest of the day (hour 0 and hour 23
alike: O(day)); with an hour's own partition each costs O(hour), the two side by side show which."""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import Result, console, private_clickhouse
from heatmap_core.clickhouse import apply_schema, clickhouse, replace_bucket
from heatmap_core.schema import HOURLY
from heatmap_core.settings import Settings
from heatmap_core.timeutil import day_start

CELLS = 200_000
BIG_CELLS = 1_000_000
REPEATS = 3

# ``count`` cells of one hour in HOURLY's column order: 20,000 per screen (the whole 100 x 200 grid).
_HOUR_CELLS = """
SELECT 'bench', concat('s', toString(intDiv(number, 20000))), 'click', 'desktop',
       toDateTime({start:DateTime}, 'UTC'), toUInt8(number % 100), toUInt8(intDiv(number, 100) % 200),
       toUInt64(1 + number % 7 + {salt:UInt64})
FROM numbers({count:UInt64})
"""


def run(settings: Settings, big: bool = False) -> list[Result]:
    cells = BIG_CELLS if big else CELLS
    day = day_start(datetime.now(UTC)) - timedelta(days=2)
    with (
        tempfile.TemporaryDirectory(prefix="bench-replace-") as data_dir,
        private_clickhouse(settings, Path(data_dir)) as (private, _server),
    ):
        private = private.model_copy(update={"clickhouse_database": f"bench_{uuid.uuid4().hex[:8]}"})
        database = private.clickhouse_database
        with clickhouse(private) as client:
            apply_schema(client, database)
            filling = []  # each hour's write as the day fills up, as a day of materializations does
            for hour in range(24):
                began = time.perf_counter()
                replace_bucket(
                    client,
                    HOURLY,
                    day + timedelta(hours=hour),
                    select_sql=_HOUR_CELLS,
                    parameters={
                        "start": (day + timedelta(hours=hour)).replace(tzinfo=None),
                        "count": cells,
                        "salt": 0,
                    },
                    database=database,
                )
                filling.append(time.perf_counter() - began)
            console.print(f"the day filled hour by hour: {', '.join(f'{v * 1000:.0f}' for v in filling)} ms")
            timings: dict[int, list[float]] = {0: [], 23: []}
            written_rows: dict[int, set[int]] = {0: set(), 23: set()}
            for salt in range(1, REPEATS + 1):
                for hour in (0, 23):
                    start = day + timedelta(hours=hour)
                    began = time.perf_counter()
                    written = replace_bucket(
                        client,
                        HOURLY,
                        start,
                        select_sql=_HOUR_CELLS,
                        parameters={"start": start.replace(tzinfo=None), "count": cells, "salt": salt},
                        database=database,
                    )
                    timings[hour].append(time.perf_counter() - began)
                    assert written.rows == cells
                    written_rows[hour].add(written.written_rows)
            total = client.query(f"SELECT count() FROM `{database}`.`{HOURLY.name}`").result_rows[0][0]
            assert total == 24 * cells, total
    for hour, values in timings.items():
        console.print(
            f"replace hour {hour}: {', '.join(f'{v * 1000:.0f}' for v in values)} ms; "
            f"rows ClickHouse wrote: {', '.join(f'{n:,}' for n in sorted(written_rows[hour]))}"
        )
    return [
        Result(
            "replace",
            f"replace_bucket hour 23 as the day fills ({cells:,} cells an hour, 23 hours before it)",
            filling[23] * 1000,
            "hour 0 of the same day, written first",
            filling[0] * 1000,
            "ms",
            False,
        ),
        Result(
            "replace",
            f"re-replace hour 23 of the full day ({cells:,} cells an hour)",
            statistics.median(timings[23]) * 1000,
            "re-replace hour 0 of the same full day",
            statistics.median(timings[0]) * 1000,
            "ms",
            False,
        ),
    ]
