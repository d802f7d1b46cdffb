"""The Parquet encoder of the raw lake (Phase 2), against the schema heatmap_core.lake_schema defines.

A Parquet part file is built column by column from the very lines its JSON twin
encodes (the ``LakeEvent`` runs of a ``PartFile``), against the explicit schema:
the two copies hold the same lines, and no line is parsed back from JSON (that
parse was most of the Parquet copy's cost) nor goes through pandas.

A run is the lines of one Kafka record within one hour: the fields a record
gives all its lines (``heatmap_core.events.RECORD_FIELDS``) are taken once per
run and repeated by Arrow, the others once per line.
"""

from __future__ import annotations

import io
from itertools import accumulate, chain
from operator import attrgetter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from heatmap_core.events import RECORD_FIELDS
from heatmap_core.lake_schema import LakeEvent, arrow_schema

LAKE_SCHEMA = arrow_schema()


def _column(runs: list[list[LakeEvent]], field: pa.Field, run_ends: list[int]) -> pa.Array:
    value = attrgetter(field.name)
    if field.name in RECORD_FIELDS:
        per_run = pa.array([value(run[0]) for run in runs], field.type)
        return pc.run_end_decode(pa.RunEndEncodedArray.from_arrays(run_ends, per_run))
    return pa.array(list(map(value, chain.from_iterable(runs))), field.type)


def parquet_from_lines(runs: list[list[LakeEvent]]) -> bytes:
    """One Parquet file of the lines of ``runs`` (each a non-empty run of one record's lines), in order."""
    run_ends = list(accumulate(len(run) for run in runs))
    table = pa.Table.from_arrays([_column(runs, field, run_ends) for field in LAKE_SCHEMA], schema=LAKE_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()
