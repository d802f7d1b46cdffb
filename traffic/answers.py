"""Reading the query API's map answers, to compare them with the traffic's ground truth."""

from __future__ import annotations

from collections import Counter


def cell_counts(body: dict) -> Counter[tuple[int, int]]:
    """A map answer's cells (three columns) as (cell_x, cell_y) -> count, having checked that the
    columns are of one length and that each cell comes once, in (cell_x, cell_y) order."""
    columns = body["cells"]
    positions = list(zip(columns["cell_x"], columns["cell_y"], strict=True))
    if positions != sorted(set(positions)):
        raise ValueError("cells repeated or out of (cell_x, cell_y) order")
    return Counter(dict(zip(positions, columns["count"], strict=True)))
