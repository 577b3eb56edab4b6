"""The colouring behind measuring columns together (gradguard.core.sparsity):
no two columns of one colour share a row, on any pattern, and the structures
seen most get the fewest colours possible."""

from __future__ import annotations

import numpy as np
import pytest

from gradguard.core.sparsity import Pattern, distance2_colouring, owners


def _nonzeros(matrix):
    """(column, row) of a dense pattern's nonzeros, ordered by column."""
    rows, columns = np.nonzero(matrix)
    order = np.argsort(columns, kind="stable")
    return columns[order], rows[order]


def _assert_proper(matrix, colour):
    """No row has two columns of one colour."""
    for row in matrix:
        used = colour[np.flatnonzero(row)]
        assert len(set(used.tolist())) == used.size


@pytest.mark.parametrize("seed", range(12))
def test_random_patterns_are_coloured_properly(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 60, size=2)
    matrix = rng.random((height, width)) < rng.uniform(0.01, 0.5)
    colour = distance2_colouring(*_nonzeros(matrix), int(width), int(height))
    _assert_proper(matrix, colour)
    # At least as many colours as the fullest row has columns, never more
    # than the columns.
    fullest = int(matrix.sum(axis=1).max(initial=0))
    assert max(1, fullest) <= colour.max(initial=0) + 1 <= max(1, width)


@pytest.mark.parametrize(
    ("matrix", "colours"),
    [
        (np.eye(40), 1),  # elementwise
        (np.eye(40)[np.random.default_rng(1).permutation(40)], 1),  # a permutation
        (np.kron(np.eye(8), np.ones((5, 5))), 5),  # blocks of 5 (softmax over rows)
        (sum(np.eye(40, k=k) for k in range(-2, 3)), 5),  # a band of 5 (a convolution)
        (np.ones((3, 12)), 12),  # dense
        (np.zeros((4, 6)), 1),  # nothing
    ],
)
def test_common_structures_get_the_fewest_colours(matrix, colours):
    height, width = matrix.shape
    colour = distance2_colouring(*_nonzeros(matrix != 0), width, height)
    _assert_proper(matrix, colour)
    assert colour.max(initial=0) + 1 == colours


def test_a_pattern_no_residue_colouring_fits_is_coloured_greedily():
    """Row i has columns i and i + 6: two a row, but j mod 2 gives both the
    same colour; the greedy colouring still needs only 2 (chains of i, i + 6,
    i + 12, ... alternate)."""
    matrix = np.zeros((30, 36))
    for i in range(30):
        matrix[i, [i, i + 6]] = 1
    colour = distance2_colouring(*_nonzeros(matrix), 36, 30)
    _assert_proper(matrix, colour)
    assert colour.max() + 1 == 2
    assert not (colour == np.arange(36) % 2).all()


def test_owners_name_each_rows_one_column_of_a_colour():
    matrix = np.kron(np.eye(3), np.ones((2, 2)))  # blocks of 2
    columns, rows = _nonzeros(matrix)
    colour = distance2_colouring(columns, rows, 6, 6)
    found = owners(colour, columns, rows, range(0, 2), 6)
    for c in range(2):
        for row in range(6):
            owner = found[c, row]
            assert owner >= 0 and colour[owner] == c and matrix[row, owner]
    # A colour range past the last colour owns nothing.
    assert (owners(colour, columns, rows, range(2, 3), 6) == -1).all()


def test_a_pattern_gives_up_once_a_row_has_too_many_columns():
    pattern = Pattern(width=100, rows=10, max_shared=25, max_entries=10_000)
    pattern.add(np.array([0, 0, 1]), np.array([3, 4, 5]))
    assert pattern.possible
    pattern.add(np.full(30, 2), np.arange(30))
    assert not pattern.possible
    budget = Pattern(width=100, rows=10, max_shared=25, max_entries=5)
    budget.add(np.arange(6), np.arange(6))
    assert not budget.possible
