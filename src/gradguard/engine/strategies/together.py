"""Grouped columns: every column of an argument settled from one stencil.

Where each output depends on at most one entry of an argument (elementwise
functions, permutations, gathers) as the analytical Jacobian has it, one
perturbation of all its entries at once measures all its columns (4
evaluations instead of 4 per column). Anything else, the analytical side
missing an entry included, shows as a disagreement; then nothing is settled
here and the columns go on to the screen, which locates what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.differences import directional_derivatives
from ...core.sparsity import SoleEntries
from ...core.verdict import Entries
from ..ledger import entry_scale
from ..numerical import Fields
from ..parts import Parts
from ..problem import _to_xp
from ..spans import Ranges, subtract
from .reverse_jacobian import ReverseSide
from .settled import SettledBook

#: Whether an argument whose every output depends on at most one of its
#: entries (as the analytical Jacobian has it) settles from one perturbation
#: of all of them (see Together). Off, every column takes its own.
GROUP_COLUMNS = True
#: Largest ratio of two steps of one argument for which its columns settle
#: together: a second entry of a row, at column k, shows in the measurement
#: of column j scaled by step k / step j.
STEP_SPREAD = 16.0


@dataclass
class _Candidate:
    """An argument whose columns may settle together: its inputs ``lo:hi``,
    the step of each entry, and what the analytical rows say of which entry
    each output depends on."""

    slot: int
    lo: int
    hi: int
    step: Any
    sole: SoleEntries


@dataclass
class _Measured:
    """One candidate's stencil along all its entries, per output: the column
    of its one entry, the fields per unit of that entry's step, their
    comparison, and the steps of the argument's entries."""

    column: Any
    ana: Any
    fields: Fields
    scale: Any
    entries: Entries
    steps: Any
    owned: Any


class Together:
    """Settles whole arguments from one stencil each (a :class:`~.settled.Settler`).
    Comes before the screen: it takes whole arguments."""

    def __init__(self, parts: Parts):
        self.parts = parts
        self.candidates = self._candidates()

    def _candidates(self) -> list[_Candidate]:
        """Arguments whose columns may settle together: two entries or more,
        steps within STEP_SPREAD of each other, no error map to fill. Each
        entry's step is its own times a random weight in [1/sqrt(2),
        sqrt(2)): an entry of another column that the analytical side misses
        adds to a row's difference in proportion to its step, and with equal
        steps a missed x[k] - x[l] would cancel. (Within a factor sqrt(2),
        neither truncation nor rounding grows by more than 2.)"""
        parts = self.parts
        xp, p = parts.xp, parts.problem
        if not GROUP_COLUMNS or p.out_layout.size == 0 or parts.ledger.error_map_t is not None:
            return []
        found = []
        for i, slot in enumerate(p.in_layout.slots):
            lo, hi = slot.offset, slot.offset + slot.width
            if hi - lo < 2:
                continue
            h = parts.numerical.steps[lo:hi]
            if float(xp.max(h)) > STEP_SPREAD * float(xp.min(h)):
                continue
            weights = 2.0 ** (parts.rng.random(hi - lo) - 0.5)
            step = h * _to_xp(weights, xp, p.x0)
            found.append(_Candidate(i, lo, hi, step, SoleEntries(step, p.out_layout.size, xp)))
        return found

    def watch_rows(self, rows: Any, start: int) -> None:
        for t in self.candidates:
            t.sole.add(rows[:, t.lo : t.hi], start)

    def settle(self, ranges: Ranges, side: ReverseSide, book: SettledBook) -> Ranges:
        settled = [t for t in self.candidates if self._settle(t, side, book)]
        return subtract(ranges, [(t.lo, t.hi) for t in settled])

    def _settle(self, t: _Candidate, side: ReverseSide, book: SettledBook) -> bool:
        """Settle every column of one argument from one stencil along a step
        in all its entries at once, when each output depends on at most one
        of its entries as the analytical Jacobian has it. An output's
        derivative along that step is then its one entry's times the entry's
        step, and is compared with its own error estimates, like a column of
        the full stencil. True when the argument settled (and is booked)."""
        measured = self._measure(t, side)
        if measured is None or measured.entries.exceeding:
            return False
        parts = self.parts
        p = parts.problem
        parts.evaluator.expected -= 2 * (t.hi - t.lo)  # the screen's two points a column
        parts.evaluator.advance(0)
        parts.ledger.count_flags(measured.entries, parts.xp)
        self._book(t, measured, side, book)
        p.notes.append(
            f"{p.in_names[t.slot]}: every output depends on at most one of its entries (as "
            f"the analytical Jacobian has it), so its {t.hi - t.lo} columns were measured "
            f"together, by {parts.numerical.accuracy} evaluations"
        )
        return True

    def _measure(self, t: _Candidate, side: ReverseSide) -> _Measured | None:
        """The stencil along all of ``t``'s entries, compared per output with
        its one entry; None where some output depends on two entries."""
        parts = self.parts
        xp, p, numerical = parts.xp, parts.problem, parts.numerical
        column = t.sole.result()
        if column is None:
            return None
        n, m = p.in_layout.size, p.out_layout.size
        displacement = xp.zeros((1, n), dtype=p.work_dtype, device=parts.device)
        displacement[0, t.lo : t.hi] = t.step
        parts.evaluator.expected += numerical.accuracy
        dd = directional_derivatives(
            numerical.evaluate,
            p.x0,
            displacement,
            numerical.f0,
            xp,
            numerical.accuracy,
            numerical.output_eps,
        )
        outputs = xp.arange(m, dtype=column.dtype, device=parts.device)
        flat = (column + t.lo) * m + outputs

        def analytical(stored: Any) -> Any:
            taken = xp.take(xp.reshape(stored, (-1,)), flat)
            return xp.astype(taken, p.work_dtype, copy=False)[None, :]

        ana = analytical(side.jac_t)
        ana_err = None if side.jac_err_t is None else analytical(side.jac_err_t)
        # Per output, the step of its entry. A row of zeros (no entry of this
        # argument) is measured against the smallest: that makes its
        # difference largest.
        steps = xp.abs(dd.direction[0, t.lo : t.hi])
        owned = ana[0, :] != 0
        smallest = xp.full_like(ana[0, :], float(xp.min(steps)))
        size = xp.where(owned, xp.take(steps, column), smallest)[None, :]
        num = dd.value / size
        rnd = (dd.rounding + numerical.noise[None, :]) / size
        fields = (num, dd.truncation / size, rnd, dd.roughness / size, dd.nonfinite)
        scale = entry_scale(num, xp)
        entries = parts.ledger.entries("entry", ana, fields, scale, ana_err)
        return _Measured(column, ana, fields, scale, entries, steps, owned)

    def _book(
        self, t: _Candidate, measured: _Measured, side: ReverseSide, book: SettledBook
    ) -> None:
        """Book a settled argument: per column, what the column screen books
        for it, as sums over its outputs, on the host (a few values per
        output). A row of zeros counts under column 0, its value standing for
        whatever the whole argument moved it by."""
        parts = self.parts
        xp, p = parts.xp, parts.problem
        host = p.adapter.to_numpy
        columns = host(measured.column)
        fields = measured.fields
        num = fields[0]
        on_host = (host(a)[0] for a in (num, measured.ana, *fields[1:4]))
        num_h, ana_h, trunc_h, rnd_h, rough_h = on_host

        def per_column(values: Any) -> Any:
            return np.bincount(columns, values, minlength=t.hi - t.lo)

        def to_xp(host_array: Any) -> Any:
            return _to_xp(host_array, xp, p.x0)

        norms = [per_column(v) ** 0.5 for v in ((num_h - ana_h) ** 2, num_h**2, ana_h**2)]
        diff_norms, num_norms, ana_norms = (to_xp(v) for v in norms)
        eps = float(xp.finfo(p.work_dtype).eps)
        threshold = float(measured.scale) * eps**0.5
        book.add_agreeing(t.lo, diff_norms, num_norms, ana_norms, threshold)
        # Random dense cotangents u: u . J per column, with its error
        # estimates, as the full stencil gives them (roughness, a kink's
        # mark, counts as truncation: nothing here is rough).
        cots = host(book.cotangents)
        weights = np.abs(cots)
        # As in the column screen, rounding of f at x per unit of each
        # column's step joins in: it covers the analytical side's rounding
        # where u . J is zero by cancellation (a column that owns no output).
        at_x = book.rounding_at_x[:, None] / measured.steps[None, :]

        def per_cotangent(rows: Any) -> Any:  # (probes, m) -> (probes, columns)
            return to_xp(np.stack([per_column(row) for row in rows]))

        book.add_dense(
            t.lo,
            per_cotangent(cots * num_h),
            per_cotangent(weights * (trunc_h + rough_h)),
            per_cotangent(weights * rnd_h) + at_x,
            per_cotangent(weights * np.abs(num_h)),
        )
        ledger = parts.ledger
        if ledger.keep:
            zero = xp.zeros_like(num)
            ledger.num_t[t.lo : t.hi, :] = xp.where(side.jac_t[t.lo : t.hi, :] != 0, num, zero)
        at = np.flatnonzero(host(measured.owned))
        if at.size:
            index = xp.asarray(at, device=parts.device)
            part = measured.entries.map(lambda a: xp.take(a, index, axis=1))
            located = ([int(c) + t.lo for c in columns[at]], [int(i) for i in at])
            ledger.keep_worst("entry", part, 0, located=located)
