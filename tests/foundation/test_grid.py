"""Property-based tests of the grid function (pure)."""

from hypothesis import given
from hypothesis import strategies as st

from heatmap_core.grid import GRID_H, GRID_W, cell_of

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def test_corners_and_edges():
    assert cell_of(0.0, 0.0) == (0, 0)
    assert cell_of(1.0, 1.0) == (GRID_W - 1, GRID_H - 1)
    assert cell_of(0.25, 0.20) == (25, 40)
    just_below_one = 1.0 - 2**-53
    assert cell_of(just_below_one, just_below_one) == (GRID_W - 1, GRID_H - 1)


@given(unit, unit)
def test_cells_stay_inside_the_grid(x, y):
    cx, cy = cell_of(x, y)
    assert 0 <= cx < GRID_W and 0 <= cy < GRID_H


@given(unit, unit)
def test_cell_contains_the_point(x, y):
    cx, cy = cell_of(x, y)
    # the point lies inside its cell's [start, end) span, except 1.0 which joins the last cell
    assert cx / GRID_W <= x and (x < (cx + 1) / GRID_W or cx == GRID_W - 1)
    assert cy / GRID_H <= y and (y < (cy + 1) / GRID_H or cy == GRID_H - 1)


@given(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6),
)
def test_out_of_range_values_are_clamped(x, y):
    cx, cy = cell_of(x, y)
    assert 0 <= cx < GRID_W and 0 <= cy < GRID_H
    if x < 0:
        assert cx == 0
    if x >= 1:
        assert cx == GRID_W - 1
    if y < 0:
        assert cy == 0
    if y >= 1:
        assert cy == GRID_H - 1


def test_negative_coordinates_clamp_to_the_first_cell():
    assert cell_of(0.5, -0.25) == (50, 0)
    assert cell_of(-3.0, -1e-9) == (0, 0)


def test_spark_expression_matches_python_definition(spark):
    """The Spark column expressions must bucket exactly like cell_of."""
    from heatmap_core.grid import spark_cell_columns

    points = [(0.0, 0.0), (1.0, 1.0), (0.999999, 0.999999), (0.25, 0.2), (0.5, 0.5), (-0.1, 1.5), (0.0999999, 0.005)]
    frame = spark.createDataFrame(points, "x double, y double")
    cell_x, cell_y = spark_cell_columns(frame.x, frame.y)
    got = [(row.cx, row.cy) for row in frame.select(cell_x.alias("cx"), cell_y.alias("cy")).collect()]
    assert got == [cell_of(x, y) for x, y in points]
