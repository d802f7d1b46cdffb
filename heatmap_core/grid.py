"""The heatmap grid: one definition, used by Python code and by the Spark job."""

from __future__ import annotations

import math

GRID_W = 100
GRID_H = 200


def cell_of(x_norm: float, y_norm: float) -> tuple[int, int]:
    """Map normalized coordinates in [0, 1] to a grid cell, clamping the edges.

    x_norm == 1.0 belongs to the last column, not to a column past the grid.
    """
    cell_x = min(max(math.floor(x_norm * GRID_W), 0), GRID_W - 1)
    cell_y = min(max(math.floor(y_norm * GRID_H), 0), GRID_H - 1)
    return cell_x, cell_y


def spark_cell_columns(x_col, y_col):
    """The same function as Spark column expressions (floor, then clamp)."""
    from pyspark.sql import functions as F

    cell_x = F.least(F.greatest(F.floor(x_col * GRID_W), F.lit(0)), F.lit(GRID_W - 1))
    return cell_x.cast("int"), spark_row_column(y_col)


def spark_row_column(y_col):
    """The grid row of a depth (``cell_of``'s y) as a Spark column expression: a cell's row, a scroll depth row."""
    from pyspark.sql import functions as F

    return F.least(F.greatest(F.floor(y_col * GRID_H), F.lit(0)), F.lit(GRID_H - 1)).cast("int")
