"""SQL fragments that several queries over the bucket tables share, each written once.

Values always travel as ``{name:Type}`` parameters: a fragment names the
parameters, the caller binds them (``window_parameters``).
"""

from __future__ import annotations

from datetime import datetime

from heatmap_core.schema import BUCKET_TIME
from heatmap_core.timeutil import naive_utc


def time_parameter(name: str) -> str:
    """A placeholder compared with bucket_start; bind it to ``naive_utc(moment)``."""
    return f"{{{name}:{BUCKET_TIME}}}"


def time_array_parameter(name: str) -> str:
    return f"{{{name}:Array({BUCKET_TIME})}}"


def in_window(lo: str, hi: str) -> str:
    """Rows whose bucket starts in [lo, hi).

    Half-open, so adjacent windows never share a bucket, and the window of a
    day or a week holds exactly the finer buckets it is made of. ``lo`` and
    ``hi`` are SQL expressions: placeholders, or lambda arguments.
    """
    return f"bucket_start >= {lo} AND bucket_start < {hi}"


# The bucket window over parameters {start} and {end}: bind ``window_parameters(start, end)``.
BUCKET_WINDOW = in_window(time_parameter("start"), time_parameter("end"))


def window_parameters(start: datetime, end: datetime) -> dict[str, datetime]:
    return {"start": naive_utc(start), "end": naive_utc(end)}
