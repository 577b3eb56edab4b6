"""Coloured columns: columns that share no output measured by one stencil.

From the analytical Jacobian's pattern, each argument's columns are coloured
so that no two of one colour have a nonzero in the same output
(:mod:`gradguard.core.sparsity`); one stencil along a step in every column
of a colour then measures them all, each output's difference belonging to
its one column. Elementwise functions, permutations and gathers take one
colour; softmax or layer norm over rows of k, k colours; a convolution with
k taps, k colours: a few stencils instead of one per column.

What the analytical side misses cannot hide: a column's entry that the rule
has as zero moves some output of the colour's stencil, where the rule says
nothing moves it (or something else does), and the colour disagrees. Each
column's step carries its own random weight, so that two missed entries
cannot cancel. A colour whose every output agrees, within tolerance and
decided, is settled; the columns of any other go on, to the screen and the
full stencil, which locate what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.differences import directional_derivatives
from ...core.sparsity import Pattern, distance2_colouring, owners
from ...core.verdict import Entries
from ..ledger import entry_scale, error_ratio
from ..parts import Parts
from ..problem import _to_xp
from ..spans import Ranges, extend, runs, subtract
from .reverse_jacobian import ReverseSide
from .settled import SettledBook

#: Whether a full reverse check colours columns (see Colouring). Off, every
#: column takes its own points (the screen's or the full stencil's).
COLOUR_COLUMNS = True
#: Largest ratio of two steps of one argument for which its columns are
#: coloured: a missed entry at column k shows in column j's measurement
#: scaled by step k / step j.
STEP_SPREAD = 16.0
#: Colouring pays where its stencils cost less than the screen's two points
#: a column: at most one colour for this many columns.
COLUMNS_PER_COLOUR = 4
#: Nonzeros of an argument's pattern beyond which it is not coloured (the
#: pattern is kept and coloured on the host, some 0.2 us a nonzero).
MAX_PATTERN_ENTRIES = 1 << 22
#: Settled columns from which the report says so in a note (below, the saving
#: is a few milliseconds, and the note would be on every small check).
NOTE_COLUMNS = 512
#: Rows of the stored Jacobian whose nonzeros are found per batch.
SCAN_ROWS = 256


@dataclass
class _Argument:
    """One argument's columns ``lo:hi``, each entry's step (its own times a
    random weight) and its nonzeros as the analytical Jacobian has them."""

    slot: int
    lo: int
    hi: int
    step: Any
    columns: np.ndarray
    rows: np.ndarray
    colour: np.ndarray
    colours: int


@dataclass
class _Sums:
    """Per column of an argument, on the host, what the book needs of its
    settled colours: sums over the column's outputs."""

    diff_sq: np.ndarray
    num_sq: np.ndarray
    ana_sq: np.ndarray
    products: np.ndarray  # (probes, width): u . J per column
    truncation: np.ndarray  # (probes, width)
    rounding: np.ndarray  # (probes, width)
    terms: np.ndarray  # (probes, width)
    settled: np.ndarray  # bool (width,)
    steps: np.ndarray  # each column's represented step
    cotangents: np.ndarray  # the dense cotangents u, (probes, m)
    kept: np.ndarray | None  # the numerical columns, (width, m), where the ledger keeps them
    scale: float = 0.0

    @classmethod
    def zeros(cls, width: int, cotangents: np.ndarray, keep: bool) -> _Sums:
        probes, m = cotangents.shape
        return cls(
            diff_sq=np.zeros(width),
            num_sq=np.zeros(width),
            ana_sq=np.zeros(width),
            products=np.zeros((probes, width)),
            truncation=np.zeros((probes, width)),
            rounding=np.zeros((probes, width)),
            terms=np.zeros((probes, width)),
            settled=np.zeros(width, dtype=bool),
            steps=np.zeros(width),
            cotangents=cotangents,
            kept=np.zeros((width, m)) if keep else None,
        )


def applies(parts: Parts, direction: str) -> bool:
    """Whether a full check colours columns before the screen and the full
    stencil: reverse float64 checks with the default stencil. (Forward checks
    need every column's stencil for their JVPs.)"""
    xp, p, numerical = parts.xp, parts.problem, parts.numerical
    return (
        COLOUR_COLUMNS
        and direction == "rev"
        and not numerical.complex_step
        and numerical.accuracy == 4
        and float(xp.finfo(p.work_dtype).eps) < 1e-10
        and numerical.output_eps is None
        and p.in_layout.size >= 2
        and p.out_layout.size > 0
    )


class Colouring:
    """Settles coloured columns of each argument (a :class:`~.settled.Settler`).
    Comes first: it takes any columns, the screen then takes what is left."""

    def __init__(self, parts: Parts):
        self.parts = parts

    def settle(self, ranges: Ranges, side: ReverseSide, book: SettledBook) -> Ranges:
        settled: Ranges = []
        for argument in self._arguments(side):
            sums = self._measure(argument, side)
            if sums is None:
                continue
            self._book(argument, sums, side, book)
            for a, b, ok in runs(sums.settled.tolist()):
                if ok:
                    extend(settled, argument.lo + a, argument.lo + b)
        return subtract(ranges, settled)

    # -- which arguments, which colours ----------------------------------------
    def _arguments(self, side: ReverseSide) -> list[_Argument]:
        """Arguments of two entries or more, steps within STEP_SPREAD of each
        other, coloured with at most one colour per COLUMNS_PER_COLOUR
        columns. Each entry's step is its own times a random weight in
        [1/sqrt(2), sqrt(2)): with equal steps, missed entries x[k] - x[l]
        of one output would cancel. (Within a factor sqrt(2), neither
        truncation nor rounding grows by more than 2.)"""
        parts = self.parts
        xp, p = parts.xp, parts.problem
        found = []
        for i, slot in enumerate(p.in_layout.slots):
            lo, hi = slot.offset, slot.offset + slot.width
            if hi - lo < 2:
                continue
            h = parts.numerical.steps[lo:hi]
            if float(xp.max(h)) > STEP_SPREAD * float(xp.min(h)):
                continue
            pattern = self._pattern(side, lo, hi)
            if pattern is None:
                continue
            columns, rows = pattern.nonzeros()
            colour = distance2_colouring(columns, rows, hi - lo, p.out_layout.size)
            colours = int(colour.max(initial=0)) + 1
            if colours * COLUMNS_PER_COLOUR > hi - lo:
                continue
            weights = 2.0 ** (parts.rng.random(hi - lo) - 0.5)
            step = h * _to_xp(weights, xp, p.x0)
            found.append(_Argument(i, lo, hi, step, columns, rows, colour, colours))
        return found

    def _pattern(self, side: ReverseSide, lo: int, hi: int) -> Pattern | None:
        """The nonzeros of columns ``lo:hi`` of the stored analytical
        Jacobian, SCAN_ROWS of its rows at a time; None as soon as some
        output has more of them than could ever pay (a dense Jacobian costs
        one batch)."""
        p = self.parts.problem
        width, m = hi - lo, p.out_layout.size
        pattern = Pattern(width, m, width // COLUMNS_PER_COLOUR, MAX_PATTERN_ENTRIES)
        host = p.adapter.to_numpy
        for a in range(0, m, SCAN_ROWS):
            # NumPy's flatnonzero of a flat boolean block: 0.03 s for 10^8
            # entries, where a 2-D nonzero took 0.13 (torch) to 0.35 s (NumPy).
            nonzero = np.asarray(host(side.jac[a : min(m, a + SCAN_ROWS), lo:hi] != 0))
            rows, columns = np.divmod(np.flatnonzero(nonzero), width)
            pattern.add(rows + a, columns)
            if not pattern.possible:
                return None
        return pattern

    # -- the stencils ------------------------------------------------------------
    def _measure(self, t: _Argument, side: ReverseSide) -> _Sums | None:
        """Every colour of ``t`` by one stencil each, in chunks of colours;
        the per-column sums of the colours that settle (None if none does)."""
        parts = self.parts
        p, numerical = parts.problem, parts.numerical
        width = t.hi - t.lo
        cotangents = p.adapter.to_numpy(side.dense_cots)
        sums = _Sums.zeros(width, cotangents, parts.ledger.keep)
        step_h = p.adapter.to_numpy(t.step)
        per_chunk = max(1, numerical.columns_per_chunk)
        parts.evaluator.expected += numerical.accuracy * t.colours
        for c0 in range(0, t.colours, per_chunk):
            chosen = range(c0, min(t.colours, c0 + per_chunk))
            self._measure_colours(t, chosen, step_h, side, sums)
        settled = int(sums.settled.sum())
        parts.evaluator.expected -= numerical.accuracy * settled
        parts.evaluator.advance(0)
        if not settled:
            return None
        if settled >= NOTE_COLUMNS:
            p.notes.append(
                f"{p.in_names[t.slot]}: {settled} of its {width} columns were measured "
                f"together, in {t.colours} group(s) of columns that share no output as the "
                f"analytical Jacobian has it ({numerical.accuracy * t.colours} evaluations)"
            )
        return sums

    def _measure_colours(
        self, t: _Argument, chosen: range, step_h: np.ndarray, side: ReverseSide, sums: _Sums
    ) -> None:
        """The stencils of the colours ``chosen``, compared output by output
        with each output's one column; the settled ones added to ``sums``."""
        parts = self.parts
        xp, p, numerical = parts.xp, parts.problem, parts.numerical
        n, m = p.in_layout.size, p.out_layout.size
        owner = owners(t.colour, t.columns, t.rows, chosen, m)
        of_colour = t.colour - chosen.start
        members = np.flatnonzero((of_colour >= 0) & (of_colour < len(chosen)))
        displacement = np.zeros((len(chosen), n))
        displacement[of_colour[members], t.lo + members] = step_h[members]
        dd = directional_derivatives(
            numerical.evaluate,
            p.x0,
            _to_xp(displacement, xp, p.x0),
            numerical.f0,
            xp,
            numerical.accuracy,
            numerical.output_eps,
        )
        # The represented step of each column, and per output that of its
        # column; an output no column of the colour has is measured against
        # the argument's smallest step, which makes its difference largest.
        direction = p.adapter.to_numpy(dd.direction)
        steps = np.abs(direction[of_colour[members], t.lo + members])
        sums.steps[members] = steps
        owned = owner >= 0
        column_step = np.zeros(t.hi - t.lo)
        column_step[members] = steps
        smallest = float(np.min(np.abs(step_h)))
        size = _to_xp(np.where(owned, column_step[np.maximum(owner, 0)], smallest), xp, p.x0)
        flat = xp.asarray(np.arange(m) * n + np.where(owned, owner + t.lo, 0), device=parts.device)
        owned_xp = xp.asarray(owned, device=parts.device)

        def analytical(stored: Any) -> Any:
            taken = xp.take(xp.reshape(stored, (-1,)), xp.reshape(flat, (-1,)))
            taken = xp.reshape(xp.astype(taken, p.work_dtype, copy=False), owned.shape)
            return xp.where(owned_xp, taken, xp.zeros_like(taken))

        ana = analytical(side.jac)
        ana_err = None if side.jac_err is None else analytical(side.jac_err)
        num = dd.value / size
        rnd = (dd.rounding + numerical.noise[None, :]) / size
        fields = (num, dd.truncation / size, rnd, dd.roughness / size, dd.nonfinite)
        scale = entry_scale(num, xp)
        entries = parts.ledger.entries("entry", ana, fields, scale, ana_err)
        agree = _agreeing_rows(entries, xp, p.adapter.to_numpy)
        if not agree.any():
            return
        sums.scale = max(sums.scale, float(scale))
        self._add(t, chosen, owner, agree, entries, fields, ana, side, sums)

    def _add(
        self,
        t: _Argument,
        chosen: range,
        owner: np.ndarray,
        agree: np.ndarray,
        entries: Entries,
        fields: Any,
        ana: Any,
        side: ReverseSide,
        sums: _Sums,
    ) -> None:
        """Add the agreeing colours of a chunk to the per-column sums; an
        output none of a colour's columns has counts under the colour's first
        column, its value standing for whatever the colour moved it by."""
        parts = self.parts
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        host = p.adapter.to_numpy
        m = p.out_layout.size
        of_colour = t.colour - chosen.start
        members = np.flatnonzero((of_colour >= 0) & (of_colour < len(chosen)))
        present, first_at = np.unique(of_colour[members], return_index=True)
        first = np.zeros(len(chosen), dtype=np.int64)
        first[present] = members[first_at]
        rows = np.flatnonzero(agree)
        column = np.where(owner[rows] >= 0, owner[rows], first[rows][:, None])
        num_all = host(fields[0])
        num_h = num_all[rows]
        ana_h, trunc_h, rnd_h, rough_h = (host(a)[rows] for a in (ana, *fields[1:4]))

        def per_column(values: np.ndarray) -> np.ndarray:
            return np.bincount(column.ravel(), values.ravel(), minlength=t.hi - t.lo)

        sums.diff_sq += per_column((num_h - ana_h) ** 2)
        sums.num_sq += per_column(num_h**2)
        sums.ana_sq += per_column(ana_h**2)
        weights = np.abs(sums.cotangents)
        for k, (u, w) in enumerate(zip(sums.cotangents, weights)):
            sums.products[k] += per_column(u[None, :] * num_h)
            sums.truncation[k] += per_column(w[None, :] * (trunc_h + rough_h))
            sums.rounding[k] += per_column(w[None, :] * rnd_h)
            sums.terms[k] += per_column(w[None, :] * np.abs(num_h))
        settled_now = np.zeros(len(chosen), dtype=bool)
        settled_now[rows] = True
        sums.settled[members[settled_now[of_colour[members]]]] = True
        if sums.kept is not None:
            # The numerical Jacobian where the analytical one has entries.
            at = (of_colour[t.columns] >= 0) & (of_colour[t.columns] < len(chosen))
            at &= settled_now[np.clip(of_colour[t.columns], 0, len(chosen) - 1)]
            cols, outs = t.columns[at], t.rows[at]
            sums.kept[cols, outs] = num_all[of_colour[cols], outs]
        index = xp.asarray(rows, device=parts.device)
        part = entries.map(lambda a: xp.take(a, index, axis=0))
        ledger.count_flags(part, xp)
        if ledger.error_map_t is not None:
            self._map(t, owner[rows], part)
        owned_at = np.flatnonzero(owner[rows].ravel() >= 0)
        if owned_at.size:
            at_xp = xp.asarray(owned_at, device=parts.device)
            picked = part.map(lambda a: xp.take(xp.reshape(a, (1, -1)), at_xp, axis=1))
            inputs = owner[rows].ravel()[owned_at] + t.lo
            located = (inputs.tolist(), (owned_at % m).tolist())
            ledger.keep_worst("entry", picked, 0, located=located)

    def _map(self, t: _Argument, owner: np.ndarray, part: Entries) -> None:
        """Error / tolerance of the settled colours' entries into the
        per-entry map (small checks only: on the host); the entries the
        analytical Jacobian has as zero stay 0, agreeing."""
        parts = self.parts
        p, ledger = parts.problem, parts.ledger
        host = p.adapter.to_numpy
        ratio = host(error_ratio(part, parts.xp))
        owned = owner >= 0
        table = host(ledger.error_map_t).copy()
        columns, outputs = owner[owned] + t.lo, np.nonzero(owned)[1]
        table[columns, outputs] = np.maximum(table[columns, outputs], ratio[owned])
        ledger.error_map_t[t.lo : t.hi, :] = _to_xp(table[t.lo : t.hi], parts.xp, p.x0)

    # -- the book ----------------------------------------------------------------
    def _book(self, t: _Argument, sums: _Sums, side: ReverseSide, book: SettledBook) -> None:
        """Book the settled columns, run by run: their norms, and the dense
        cotangents' products over them with their error estimates."""
        parts = self.parts
        xp, p = parts.xp, parts.problem

        def to_xp(host_array: np.ndarray) -> Any:
            return _to_xp(host_array, xp, p.x0)

        eps = float(xp.finfo(p.work_dtype).eps)
        threshold = sums.scale * eps**0.5
        # As in the screen, rounding of f at x per unit of each column's step
        # joins in: it covers the analytical side's rounding where u . J is
        # zero by cancellation (a column that owns no output).
        at_x = (
            p.adapter.to_numpy(book.rounding_at_x)[:, None]
            / np.where(sums.steps > 0, sums.steps, 1.0)[None, :]
        )
        for a, b, ok in runs(sums.settled.tolist()):
            if not ok:
                continue
            first = t.lo + a
            book.add_agreeing(
                first,
                to_xp(np.sqrt(sums.diff_sq[a:b])),
                to_xp(np.sqrt(sums.num_sq[a:b])),
                to_xp(np.sqrt(sums.ana_sq[a:b])),
                threshold,
            )
            book.add_dense(
                first,
                to_xp(sums.products[:, a:b]),
                to_xp(sums.truncation[:, a:b]),
                to_xp(sums.rounding[:, a:b] + at_x[:, a:b]),
                to_xp(sums.terms[:, a:b]),
            )
            if sums.kept is not None:
                parts.ledger.num_t[first : t.lo + b, :] = to_xp(sums.kept[a:b])


def _agreeing_rows(entries: Entries, xp: Any, host: Any) -> np.ndarray:
    """Per colour (row of ``entries``), whether every output is within its
    tolerance, decided, and smooth: an output on a kink goes column by column,
    where its entries get second opinions at other steps (see confirm)."""
    smooth = ~xp.any(entries.rough_agreeing, axis=1)
    if entries.exceeding:
        within = xp.all(entries.error <= entries.tolerance, axis=1)
        smooth = smooth & within & ~xp.any(entries.uncertain, axis=1)
    return np.asarray(host(smooth), dtype=bool)
