"""Ranges of columns, as the strategies pass them on: what one settler leaves
open is what the next one (or the full stencil) measures, so a range lost or
doubled here is a column never compared or compared twice."""

from __future__ import annotations

from gradguard.engine.spans import chunks, extend, runs, subtract


def test_subtract_leaves_the_columns_outside_the_settled_arguments():
    assert subtract([(0, 10)], [(2, 4), (6, 7)]) == [(0, 2), (4, 6), (7, 10)]
    assert subtract([(0, 10)], [(0, 10)]) == []
    assert subtract([(0, 10)], []) == [(0, 10)]
    # Several open ranges, a removed span across two of them.
    assert subtract([(0, 3), (5, 9)], [(2, 6)]) == [(0, 2), (6, 9)]


def test_chunks_cut_each_range_and_keep_short_ones_whole():
    assert chunks([(0, 7)], 3) == [(0, 3), (3, 6), (6, 7)]
    # The screen's open ranges are at most a chunk long: cutting again changes nothing.
    assert chunks([(1, 3), (4, 6)], 3) == [(1, 3), (4, 6)]
    assert chunks([], 3) == []


def test_runs_and_extend():
    assert runs([True, True, False, True]) == [(0, 2, True), (2, 3, False), (3, 4, True)]
    ranges: list[tuple[int, int]] = []
    extend(ranges, 0, 2)
    extend(ranges, 2, 5)
    extend(ranges, 6, 7)
    assert ranges == [(0, 5), (6, 7)]
