"""Columns that share no output row, read off the analytical Jacobian's pattern.

Columns of a Jacobian whose nonzero rows are disjoint can be measured by one
finite difference along a step in all of them at once: each output's
difference then belongs to at most one of them (Curtis, Powell and Reid,
1974). Grouping the columns so is colouring the column intersection graph,
distance-2 colouring of the bipartite graph of rows and columns (Gebremedhin,
Manne and Pothen, 2005); the greedy colouring here, in column order, is
optimal for the structures seen most: elementwise (one colour), blocks of k
(softmax or layer norm over rows: k colours), bands of width k (convolutions:
k colours).

Host-side (NumPy) index arithmetic: it runs on the pattern's integer
indices, never on the Jacobian's values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Pattern", "distance2_colouring", "owners"]


class Pattern:
    """The nonzeros of ``width`` columns of a Jacobian with ``rows`` rows,
    gathered batch by batch (:meth:`add`) until too many columns share a row
    (:attr:`possible` turns False). ``max_shared`` bounds the columns one row
    may have, ``max_entries`` the nonzeros in all."""

    def __init__(self, width: int, rows: int, max_shared: int, max_entries: int):
        self.width, self.rows = width, rows
        self.max_shared, self.max_entries = max_shared, max_entries
        self.per_row = np.zeros(rows, dtype=np.int64)
        self.column_parts: list[np.ndarray] = []
        self.row_parts: list[np.ndarray] = []
        self.entries = 0
        self.possible = True

    def add(self, rows: np.ndarray, columns: np.ndarray) -> None:
        """More nonzeros, as their (row, column) indices."""
        if not self.possible:
            return
        self.entries += columns.size
        self.per_row += np.bincount(rows, minlength=self.rows)
        if self.entries > self.max_entries or int(self.per_row.max(initial=0)) > self.max_shared:
            self.possible = False
            self.column_parts, self.row_parts = [], []
            return
        self.column_parts.append(columns)
        self.row_parts.append(rows)

    def nonzeros(self) -> tuple[np.ndarray, np.ndarray]:
        """(column, row) of every nonzero, ordered by column."""
        if not self.column_parts:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        columns = np.concatenate(self.column_parts)
        rows = np.concatenate(self.row_parts)
        order = np.argsort(columns, kind="stable")
        return columns[order], rows[order]


def distance2_colouring(
    columns: np.ndarray, rows: np.ndarray, width: int, height: int
) -> np.ndarray:
    """A colour per column (0, 1, ...) such that two columns with a nonzero
    in the same row never share one: greedy, in column order, each column
    taking the smallest colour none of its rows has yet. ``(columns[k],
    rows[k])`` are the nonzeros, ordered by column; a column without any
    gets colour 0.

    Each row's colours are one Python integer used as a bit set, so a column
    costs a few operations per nonzero (0.2 s for 5 * 10^5 nonzeros); where
    every row's columns lie in a window of the fewest colours possible
    (blocks, bands), :func:`_colours_by_residue` finds the same colouring
    in a few array operations."""
    by_residue = _colours_by_residue(columns, rows, width, height)
    if by_residue is not None:
        return by_residue
    colour = np.zeros(width, dtype=np.int64)
    taken_in_row = [0] * height
    starts = np.searchsorted(columns, np.arange(width + 1)).tolist()
    row_list = rows.tolist()
    for j in range(width):
        its_rows = row_list[starts[j] : starts[j + 1]]
        if not its_rows:
            continue
        taken = 0
        for i in its_rows:
            taken |= taken_in_row[i]
        free = (~taken & (taken + 1)).bit_length() - 1  # the lowest clear bit
        bit = 1 << free
        for i in its_rows:
            taken_in_row[i] |= bit
        colour[j] = free
    return colour


def _colours_by_residue(
    columns: np.ndarray, rows: np.ndarray, width: int, height: int
) -> np.ndarray | None:
    """Colour j mod k, k the most columns any row has (no colouring has
    fewer colours), if no row has two columns of one colour; else None.
    Assumes nothing: it is checked. It holds for block-diagonal Jacobians
    whose blocks of k are aligned to k, and for bands of width k, where the
    greedy colouring in column order is the same."""
    if not columns.size:
        return np.zeros(width, dtype=np.int64)
    k = int(np.bincount(rows, minlength=height).max())
    colour = np.arange(width, dtype=np.int64) % k
    seen = np.bincount(rows * k + colour[columns], minlength=height * k)
    return colour if int(seen.max()) <= 1 else None


def owners(
    colour: np.ndarray, columns: np.ndarray, rows: np.ndarray, chosen: range, height: int
) -> np.ndarray:
    """Per colour in ``chosen`` and per row, the one column of that colour
    with a nonzero there, or -1: ``(len(chosen), height)``."""
    owner = np.full((len(chosen), height), -1, dtype=np.int64)
    of_column = colour[columns]
    inside = (of_column >= chosen.start) & (of_column < chosen.stop)
    owner[of_column[inside] - chosen.start, rows[inside]] = columns[inside]
    return owner
