"""Scroll reach answers from summed ``(depth_row, reached, folds)`` rows; pure, no I/O.

Every counted view reached the top, so ``reached`` at row 0 is the number of
views and a row's share is ``reached / reached[0]``. The median fold is the
first row where the running sum of ``folds`` reaches half of all folds: half
the views see at most down to that row without scrolling. A depth is the
row's top edge, ``depth_row / GRID_H``, the inverse of the grid's
``floor(y_norm * GRID_H)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import accumulate

from heatmap_core.grid import GRID_H
from query_api.models import DepthRow, Fold


def depth_of(row: int) -> float:
    return row / GRID_H


def median_fold(folds: Iterable[tuple[int, int]]) -> Fold | None:
    """The median of ``(depth_row, folds)`` pairs in row order; None when no fold was counted."""
    pairs = list(folds)
    total = sum(count for _, count in pairs)
    if not total:
        return None
    running_sums = accumulate(count for _, count in pairs)
    # running >= total / 2, in integers; the last running sum is the total, so one row qualifies
    row = next(row for (row, _), running in zip(pairs, running_sums, strict=True) if 2 * running >= total)
    return Fold(depth_row=row, y_norm=depth_of(row))


def reach(rows: Iterable[tuple[int, int, int]]) -> tuple[int, list[DepthRow], Fold | None]:
    """``views``, the depth rows with their shares, and the median fold, from rows ordered by depth_row."""
    ordered = list(rows)
    views = next((reached for row, reached, _ in ordered if row == 0), 0)
    depth_rows = [
        DepthRow(
            depth_row=row,
            y_norm=depth_of(row),
            reached=reached,
            share=reached / views if views else 0.0,
            folds=folds,
        )
        for row, reached, folds in ordered
    ]
    return views, depth_rows, median_fold((row, folds) for row, _, folds in ordered)
