"""The two-point screen: columns settled from f(x + h) and f(x - h) alone.

Large float64 reverse checks (see :func:`applies`) first compare each
column's second-order quotient with the stored analytical column; a column
within tolerance is settled and booked, at 2 evaluations instead of the full
stencil's 4. Only the columns with an entry that is not go on to the full
stencil, which alone may call an entry wrong.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from array_api_compat import array_namespace

from ...core.differences import coordinate_points
from ...core.norms import row_norms
from ...core.verdict import ANALYTICAL, SAFETY, Entries
from ..ledger import KEEP_JACOBIAN_ENTRIES, WORST
from ..parts import Parts
from ..spans import Ranges, chunks, runs
from .reverse_jacobian import ReverseSide
from .settled import SettledBook

#: Inputs from which a full reverse check screens columns with two points
#: first (also past KEEP_JACOBIAN_ENTRIES entries). tanh(x + mean(x)) in
#: torch, median CPU time, full stencil against screened: n = 64, 9.3 against
#: 8.3 ms; 128, 11.6 / 13.5; 256, 34 / 34; 511, 78 / 36 ms. Where the per-entry
#: error map is kept (ERROR_MAP_ENTRIES) the screen has no cheap path and costs
#: what the stencil does; past it, half. From 512 only, n = 511 took 2.1x n = 512.
SCREEN_INPUTS = 64

#: The sides of a chunk as the screen holds them: (f(x+h), f(x-h), the
#: quotient, the analytical rows, their rounding or None, 2h per column).
_Sides = tuple[Any, ...]


def applies(parts: Parts, direction: str) -> bool:
    """Whether a full check settles columns before the full stencil: large
    float64 reverse checks with the default stencil, where the screen's
    rounding model (the work dtype's) holds."""
    xp, p, numerical = parts.xp, parts.problem, parts.numerical
    n, m = p.in_layout.size, p.out_layout.size
    return (
        direction == "rev"
        and not numerical.complex_step
        and (n * m > KEEP_JACOBIAN_ENTRIES or n >= SCREEN_INPUTS)
        and numerical.accuracy == 4
        and float(xp.finfo(p.work_dtype).eps) < 1e-10
        and numerical.output_eps is None  # the screen's rounding is the work dtype's
    )


class Screen:
    """Settles columns from two points each (a :class:`~.settled.Settler`)."""

    def __init__(self, parts: Parts):
        self.parts = parts
        xp, p, numerical = parts.xp, parts.problem, parts.numerical
        # The represented 2h of every column, for the quotients.
        self.sizes = xp.abs((p.x0 + numerical.steps) - (p.x0 - numerical.steps))
        # Worst-list candidates: (errors, columns, rows of their sides).
        self.candidates: tuple[list[float], list[int], tuple[Any, ...]] | None = None

    def settle(self, ranges: Ranges, side: ReverseSide, book: SettledBook) -> Ranges:
        numerical = self.parts.numerical
        # Two points per column screened instead of the full stencil's; the
        # columns that do not settle add their stencil's points back.
        screened = sum(b - a for a, b in ranges)
        self.parts.evaluator.expected += (2 - numerical.accuracy) * screened
        open_ranges: Ranges = []
        for start, stop in chunks(ranges, numerical.columns_per_chunk):
            open_ranges += self._screen(start, stop, self.sizes[start:stop], side, book)
        self._flush_candidates()
        self.parts.evaluator.expected += numerical.accuracy * sum(b - a for a, b in open_ranges)
        return open_ranges

    def _screen(
        self, start: int, stop: int, size: Any, side: ReverseSide, book: SettledBook
    ) -> Ranges:
        """Settle the columns ``start:stop`` from the two points x +- h;
        ``size`` is their represented 2h.

        The second-order quotient is compared with the usual tolerance, its
        truncation term set to what it is for a well-scaled f at this step:
        an entry within that is settled. Settled columns are booked here; the
        ranges of columns with an entry that is not come back for the full
        stencil. Costs 2 evaluations per column instead of 4 when everything
        agrees.

        Every such tolerance is at least ``floor`` below, so a column whose
        largest error is within it is settled by a few reductions, without
        tolerances of its own: most columns, most of the time. Only the others
        get per-entry tolerances here.
        """
        parts = self.parts
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        c = stop - start
        h = parts.numerical.steps[start:stop]
        out = parts.numerical.evaluate(coordinate_points(p.x0, h, start, (1, -1), xp))
        plus, minus = out[:c, :], out[c:, :]
        size = size[:, None]
        # In place: one (columns, m) temporary fewer, 368 -> 324 us a chunk
        # at n = 3000.
        num = plus - minus
        num /= size
        if ledger.keep:
            ledger.num_t[start:stop, :] = num  # stage 2 overwrites what it redoes
        ana, ana_err = side.columns(start, stop, p.work_dtype, xp)
        largest = float(xp.max(row_norms(num, xp, ord=math.inf)))
        if not math.isfinite(largest):
            # NaN or inf in f near x (or a quotient past the dtype's range):
            # the full stencil flags such entries; a screen would settle an
            # inf error against an inf floor.
            return [(start, stop)]
        diff = num - ana
        quick, column_error, diff_norms, floor = self._within_floor(diff, largest)
        pieces = [(0, c, True)] if quick.all() else runs(quick.tolist())
        if quick.any():
            num_norms = row_norms(num, xp)
            ana_norms = row_norms(ana, xp)
        # Entries below this are rounding noise of the chunk's largest: "zero".
        threshold = largest * float(xp.finfo(p.work_dtype).eps) ** 0.5
        sides = (plus, minus, num, ana, ana_err, size)
        open_ranges: Ranges = []
        for a, b, settled in pieces:
            if not settled:
                open_ranges += self._screen_exactly(start, a, b, sides, largest, book)
                continue
            book.add_agreeing(start + a, diff_norms[a:b], num_norms[a:b], ana_norms[a:b], threshold)
            if ledger.error_map_t is not None and floor > 0:
                # error / floor: at least each entry's error / tolerance, and
                # within 1 (per-entry tolerances here cost what the full
                # stencil does, and made n = 256 take 2.5x n = 257).
                rows = slice(start + a, start + b)
                bound = xp.abs(diff[a:b, :]) / floor
                ledger.error_map_t[rows, :] = xp.maximum(ledger.error_map_t[rows, :], bound)
            rounding = book.rounding_at_x[:, None] / xp.matrix_transpose(size[a:b, :])
            _book_linearity(book, start + a, ana[a:b, :], rounding)
        if quick.any():
            errors = np.where(quick, p.adapter.to_numpy(column_error), -math.inf)
            self._worst_candidates(start, errors, sides, largest)
        return open_ranges

    def _within_floor(self, diff: Any, largest: float) -> tuple[Any, Any, Any, float]:
        """Per column of ``diff`` (num - ana), whether its largest error is
        within the floor of every tolerance (host booleans), the column
        errors that decided it, the columns' 2-norms of ``diff``, and the
        floor."""
        parts = self.parts
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        eps = float(xp.finfo(p.work_dtype).eps)
        eps_ana = max(p.eps_analytical, ledger.eps_store)
        # compare() allows SAFETY * truncation + ANALYTICAL * eps_ana *
        # scale at least, both scaled by the chunk's largest entry.
        floor = (SAFETY * eps ** (2 / 3) + ANALYTICAL * eps_ana) * largest
        floor += float(ledger.atol or 0.0)
        # Per column, the 2-norm of the errors (which the tallies need anyway)
        # bounds the largest; the largest itself only where that is not enough.
        diff_norms = row_norms(diff, xp)
        column_error = diff_norms
        quick = p.adapter.to_numpy(diff_norms <= floor)
        if not quick.all():
            column_error = row_norms(diff, xp, ord=math.inf)
            quick = p.adapter.to_numpy(column_error <= floor)
        return quick, column_error, diff_norms, floor

    def _screen_entries(
        self, plus: Any, minus: Any, num: Any, ana: Any, ana_err: Any, size: Any, scale: Any
    ) -> Entries:
        """Entries of the two-point screen, with their own tolerances;
        ``scale`` is each row's chunk's largest entry, ``(k, 1)``."""
        parts = self.parts
        xp = parts.xp
        eps = float(xp.finfo(parts.problem.work_dtype).eps)
        noise = parts.numerical.noise
        rounding = (eps * (xp.abs(plus) + xp.abs(minus)) + noise[None, :]) / size
        zero = xp.zeros_like(num)
        # The quotient's truncation is not measured here; allow what it is at
        # this step for a well-scaled f, eps^(2/3) of the entry's scale
        # (4e-11 in float64). Larger truncation goes to the full stencil.
        truncation = eps ** (2 / 3) * (xp.abs(num) + scale)
        nowhere = xp.broadcast_to(xp.asarray(False, device=parts.device), num.shape)
        return parts.ledger.entries(
            "entry", ana, (num, truncation, rounding, zero, nowhere), scale, ana_err
        )

    def _screen_exactly(
        self, start: int, a: int, b: int, sides: _Sides, largest: float, book: SettledBook
    ) -> Ranges:
        """Screen rows ``a:b`` of the chunk at ``start`` (its largest entry
        ``largest``) entry by entry: book the columns that settle, return the
        ranges that need the full stencil."""
        parts = self.parts
        xp, p = parts.xp, parts.problem
        rows: list[Any] = [None if t is None else t[a:b, ...] for t in sides]
        plus, minus, num, ana, ana_err, size = rows
        scale = xp.full((b - a, 1), largest, dtype=p.work_dtype, device=parts.device)
        entries = self._screen_entries(plus, minus, num, ana, ana_err, size, scale)
        if entries.exceeding:
            settled = p.adapter.to_numpy(xp.all(entries.error <= entries.tolerance, axis=1))
        else:
            settled = [True] * (b - a)
        open_ranges = []
        weights = xp.abs(book.cotangents)  # (probes, m)
        eps = float(xp.finfo(p.work_dtype).eps)
        noise = parts.numerical.noise
        for lo, hi, ok in runs([bool(s) for s in settled]):
            if not ok:
                open_ranges.append((start + a + lo, start + a + hi))
                continue
            part = (
                entries
                if (lo, hi) == (0, b - a)
                else entries.map(lambda t, lo=lo, hi=hi: t[lo:hi, :])
            )
            parts.ledger.record("entry", part, start + a + lo, rows=True)
            sub_round = (
                eps * (xp.abs(plus[lo:hi, :]) + xp.abs(minus[lo:hi, :])) + noise[None, :]
            ) / size[lo:hi, :]
            rounding = weights @ xp.matrix_transpose(sub_round)
            _book_linearity(book, start + a + lo, ana[lo:hi, :], rounding)
        return open_ranges

    # -- the worst list --------------------------------------------------------
    def _worst_candidates(self, start: int, errors: Any, sides: _Sides, largest: float) -> None:
        """Keep, over the whole screen, the settled columns with the largest
        ``errors`` (host, -inf for the others), with their rows of ``sides``
        and their chunk's ``largest``; :meth:`_flush_candidates` gives them
        their tolerances, once, for the worst list. The largest error /
        tolerance is among them unless tolerances differ a lot between
        columns; all of them pass."""
        xp, device = self.parts.xp, self.parts.device
        held = self.candidates
        floor = min(held[0]) if held is not None and len(held[0]) >= WORST else -math.inf
        above = np.flatnonzero(errors > floor)
        if not above.size:
            return
        picked = [int(r) for r in above[np.argsort(-errors[above], kind="stable")][:WORST]]
        index = xp.asarray(picked, device=device)
        taken = tuple(None if t is None else xp.take(t, index, axis=0) for t in sides)
        dtype = self.parts.problem.work_dtype
        scale = xp.full((len(picked), 1), largest, dtype=dtype, device=device)
        taken = (*taken, scale)
        new = ([float(errors[r]) for r in picked], [start + r for r in picked], taken)
        if held is not None:
            fields = tuple(
                None if a is None else xp.concat([a, b], axis=0) for a, b in zip(held[2], taken)
            )
            new = (held[0] + new[0], held[1] + new[1], fields)
            if len(new[0]) > WORST:
                keep = sorted(range(len(new[0])), key=lambda i: -new[0][i])[:WORST]
                at = xp.asarray(keep, device=device)
                new = (
                    [new[0][i] for i in keep],
                    [new[1][i] for i in keep],
                    tuple(None if t is None else xp.take(t, at, axis=0) for t in new[2]),
                )
        self.candidates = new

    def _flush_candidates(self) -> None:
        if self.candidates is not None:
            _, columns, sides = self.candidates
            entries = self._screen_entries(*sides)
            self.parts.ledger.keep_worst("entry", entries, 0, positions=columns)
            self.candidates = None


def _book_linearity(book: SettledBook, first: int, rows: Any, rounding: Any) -> None:
    """Book settled columns from ``first`` for the products with random
    cotangents u. Their entries agree with f's differences, each within its
    tolerance; what is left to compare is whether the rule is linear in its
    cotangent: the dense VJPs against u times the one-hot rows ``rows``
    (columns, m), to rounding. (Carrying the entries' allowance for the
    quotient's truncation into u . num instead made products that cancel to
    nearly 0 unresolved: multi_head_attention_forward inconclusive; and
    carrying none failed tan near a pole.)"""
    xp = array_namespace(rows)
    book.add_dense(
        first,
        book.cotangents @ xp.matrix_transpose(rows),
        xp.zeros_like(rounding),
        rounding,
        xp.abs(book.cotangents) @ xp.matrix_transpose(xp.abs(rows)),
    )
