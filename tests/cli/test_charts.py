"""The terminal bar chart of `meter usage --by day`."""

from __future__ import annotations

from meter.cli.charts import bar, bars


def test_bars_share_one_scale_and_the_largest_fills_the_width():
    lines = bars([("2025-06-02", 10), ("2025-06-03", 5), ("2025-06-04", 0)], width=10)

    assert [
        "2025-06-02  ██████████  10",
        "2025-06-03  █████        5",
        "2025-06-04               0",
    ] == lines


def test_a_small_nonzero_value_is_never_an_empty_bar():
    assert "▏" == bar(1, 10_000, 10)
    assert "" == bar(0, 10, 10)


def test_no_rows_draw_no_chart():
    assert [] == bars([])
