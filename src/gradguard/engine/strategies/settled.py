"""Columns settled before the full stencil: what such a strategy is, and the
book they share.

A :class:`Settler` (the two-point screen, grouped columns) takes the column
ranges still open and returns those it could not settle; the column-by-column
check measures only those with the full stencil. What settlers settle they
book in one :class:`SettledBook`, tallied once at the end.
"""

from __future__ import annotations

from typing import Any, Protocol

from array_api_compat import array_namespace

from ...core.norms import row_norms
from ...core.verdict import Tally
from ..parts import Parts
from ..problem import _device
from ..spans import Ranges, extend
from .reverse_jacobian import ReverseSide


class Settler(Protocol):
    """A way to settle columns of a full reverse check before the full stencil."""

    def settle(self, ranges: Ranges, side: ReverseSide, book: SettledBook) -> Ranges:
        """Settle what it can of ``ranges``, book it, return what stays open."""
        ...


class SettledBook:
    """What settlers book for settled columns, gathered over the whole
    check and tallied once at :meth:`close` (no per-chunk host round trips):
    per column, the 2-norms of the two sides and of their difference; and
    for random dense cotangents u, their VJPs against the numerical u . J
    with the pieces of its tolerance."""

    def __init__(
        self,
        cotangents: Any,
        analytical: Any,
        analytical_error: Any,
        n: int,
        rounding_at_x: Any,
    ):
        xp = array_namespace(analytical)
        dtype, where = analytical.dtype, _device(analytical)
        self.cotangents = cotangents  # (probes, m)
        self.weights = row_norms(cotangents, xp)[:, None]  # (probes, 1)
        self.rounding_at_x = rounding_at_x  # (probes,)
        self.analytical = analytical  # (probes, n)
        self.analytical_error = analytical_error
        shape = (cotangents.shape[0], n)
        zeros = [xp.zeros(shape, dtype=dtype, device=where) for _ in range(4)]
        self.numerical, self.truncation, self.rounding, self.scale = zeros
        self.dense_columns: Ranges = []
        self.norms = [xp.zeros((n,), dtype=dtype, device=where) for _ in range(3)]
        #: Columns booked by their norms: (first, stop, nonzero threshold).
        self.agreeing: list[tuple[int, int, float]] = []

    @classmethod
    def of(cls, parts: Parts, side: ReverseSide) -> SettledBook:
        """The book for a check's dense cotangents. The numerical side's
        rounding in u . J, |u| . (eps (|f(x+h)| + |f(x-h)|) + noise) as the
        entry-by-entry path has it (before the division by 2h), with f at
        x+-h taken as f at x: it covers the analytical side's rounding where
        u . J is zero by cancellation."""
        xp, p, numerical = parts.xp, parts.problem, parts.numerical
        eps = float(xp.finfo(p.work_dtype).eps)
        at_x = xp.abs(side.dense_cots) @ (2 * eps * xp.abs(numerical.f0) + numerical.noise)
        n = p.in_layout.size
        return cls(side.dense_cots, side.dense_ana, side.dense_err, n, at_x)

    def add_dense(
        self, first: int, numerical: Any, truncation: Any, rounding: Any, scale: Any
    ) -> None:
        last = first + numerical.shape[1]
        self.numerical[:, first:last] = numerical
        self.truncation[:, first:last] = truncation
        self.rounding[:, first:last] = rounding
        self.scale[:, first:last] = scale
        extend(self.dense_columns, first, last)

    def add_agreeing(
        self, first: int, diff: Any, numerical: Any, analytical: Any, threshold: float
    ) -> None:
        """Columns from ``first`` whose every entry agrees; their norms."""
        last = first + diff.shape[0]
        for book, norms in zip(self.norms, (diff, numerical, analytical)):
            book[first:last] = norms
        self.agreeing.append((first, last, threshold))

    def close(self, parts: Parts) -> None:
        """Compare the dense cotangents of the booked columns and tally the
        agreeing ones in the ledger."""
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        for first, last in self.dense_columns:
            zero = xp.zeros_like(self.numerical[:, first:last])
            error = self.analytical_error
            numerical = (
                self.numerical[:, first:last],
                self.truncation[:, first:last],
                self.rounding[:, first:last],
                zero,
                xp.broadcast_to(xp.asarray(False, device=_device(zero)), zero.shape),
            )
            ledger.compare(
                "cotangent",
                self.analytical[:, first:last],
                numerical,
                self.scale[:, first:last],
                first,
                analytical_error=None if error is None else error[:, first:last],
            )
        spans: Ranges = []
        for first, last, _ in self.agreeing:
            extend(spans, first, last)
        outputs = p.out_layout.size
        for first, last in spans:
            for slot, by_argument in zip(p.in_layout.slots, ledger.by_argument):
                lo, hi = max(first, slot.offset), min(last, slot.offset + slot.width)
                if lo >= hi:
                    continue
                diff_sq, num_sq, ana_sq = (float(xp.sum(b[lo:hi] ** 2)) for b in self.norms)
                tally = Tally(
                    checked=(hi - lo) * outputs,
                    diff_sq=diff_sq,
                    num_sq=num_sq,
                    ana_sq=ana_sq,
                    cross=(num_sq + ana_sq - diff_sq) / 2,  # <a, n> by polarisation
                )
                by_argument.merge(tally)
                ledger.add(tally, "rev", entry=True)
        # Their nonzero entries are counted only if the check fails.
        for first, last, threshold in self.agreeing:
            for i, slot in enumerate(p.in_layout.slots):
                lo, hi = max(first, slot.offset), min(last, slot.offset + slot.width)
                if lo < hi:
                    ledger.uncounted.append((i, lo, hi, threshold))
