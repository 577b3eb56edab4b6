"""Which input entry each output depends on, read off the analytical Jacobian.

When every output depends on at most one entry of an argument (elementwise
functions, permutations, gathers, broadcasts into it), one perturbation of
all its entries at once measures every column of the argument: each
output's difference belongs to one column (Curtis, Powell and Reid, 1974).
"""

from __future__ import annotations

from typing import Any

from array_api_compat import device

from .norms import all_finite, row_norms

__all__ = ["SoleEntries"]

#: Units of rounding by which a row's sum of squares may differ from its one
#: entry's square (both are rounded a few times).
_SQUARES_ULPS = 16.0


class SoleEntries:
    """Whether each row of a real ``(m, w)`` Jacobian has at most one entry,
    and which, from its rows in batches (:meth:`add`), for a positive
    ``step`` per column.

    Three row reductions a batch, where an argmax alone takes as long: for a
    row with one entry, ``rows @ step`` is that entry times its step, and
    ``rows @ (step * column)`` that times its column too. A second entry
    shows in the row's sum of squares, which is then not the square of the
    entry so found (unless it is below some 1e-14 of the first, where
    rounding hides it).
    """

    def __init__(self, step: Any, rows: int, xp: Any):
        self.xp = xp
        self.step = step
        self.weighted_step = step * xp.arange(step.shape[0], dtype=step.dtype, device=device(step))
        zeros = [xp.zeros((rows,), dtype=step.dtype, device=device(step)) for _ in range(3)]
        self.along, self.weighted, self.squares = zeros
        #: False once some row is known to have two entries.
        self.possible = True

    def add(self, rows: Any, start: int) -> None:
        """Rows ``start:start + k`` of the Jacobian, ``(k, w)``. The first
        batch is judged at once, so that a dense Jacobian costs one batch."""
        if not self.possible:
            return
        xp = self.xp
        stop = start + rows.shape[0]
        self.along[start:stop] = rows @ self.step
        self.weighted[start:stop] = rows @ self.weighted_step
        self.squares[start:stop] = row_norms(rows, xp) ** 2
        if start == 0:
            self.possible = self._judge(slice(0, stop)) is not None

    def result(self) -> Any:
        """Per row, the column of its entry (0 in a row of zeros); None if
        some row has two entries, or a NaN or inf."""
        if not self.possible:
            return None
        return self._judge(slice(None))

    def _judge(self, rows: slice) -> Any:
        xp = self.xp
        along, weighted, squares = self.along[rows], self.weighted[rows], self.squares[rows]
        if not (all_finite(along, xp) and all_finite(weighted, xp) and all_finite(squares, xp)):
            return None
        nonzero = along != 0
        safe = xp.where(nonzero, along, xp.ones_like(along))
        column = xp.astype(xp.round(weighted / safe), xp.int64)
        last = self.step.shape[0] - 1
        column = xp.where(nonzero, xp.clip(column, 0, last), xp.zeros_like(column))
        value = along / xp.take(self.step, column)
        eps = float(xp.finfo(along.dtype).eps)
        if bool(xp.any(xp.abs(squares - value * value) > _SQUARES_ULPS * eps * squares)):
            return None
        return column
