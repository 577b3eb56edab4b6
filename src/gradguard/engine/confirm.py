"""Confirming at other steps: what the check's step cannot decide, measured again.

An entry compared at the check's step may be undecided (f not smooth or
not finite within the stencil) or disagree for reasons other than a wrong
derivative (rounding inside f, a staircase that the stencil straddles).
:class:`Confirmation` measures such entries again: in float64 at longer
steps first (:meth:`~Confirmation.second_opinion`), then at shorter ones
(:meth:`~Confirmation.shorter_steps`), in low precision at shorter ones
down to the finest (:meth:`~Confirmation.finest`). Every strategy that
compares Jacobian entries column by column judges them through
:meth:`~Confirmation.judge_entries`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.verdict import BAND, ROUNDING, SAFETY, Entries, doubt
from .ledger import Ledger
from .numerical import SHORTER_STEP, SHORTER_STEPS, WIDE_STEP, Fields, Numerical, consistent
from .spans import runs

#: Steps (times the check's) at which entries that disagree are measured
#: again, in turn, in float64 (see Confirmation.second_opinion).
SECOND_STEPS = (WIDE_STEP, WIDE_STEP**2)
#: Low precision: a wrong entry's estimate must also agree with a smooth one
#: at a step this many times shorter than the first, where one is smooth
#: (see Confirmation.finest).
FINEST_STEP = 1024.0


@dataclass(frozen=True)
class Block:
    """Columns ``start:stop`` of the Jacobian under comparison: their
    analytical side ``(columns, m)`` (either mode's), its rounding against
    the wider dtypes (or None), and the scale of their entries."""

    start: int
    stop: int
    ana: Any
    ana_err: Any
    scale: Any


class Confirmation:
    """Entries of a chunk of columns, judged with the re-measures that settle them."""

    def __init__(self, numerical: Numerical, ledger: Ledger):
        self.numerical = numerical
        self.ledger = ledger
        self.xp = numerical.xp
        self.p = numerical.p

    def judge_entries(self, block: Block, fields: Fields) -> tuple[Fields, Entries]:
        """Compare the entries of ``block`` (either mode), with
        the re-measures that settle what the check's step cannot: in float64
        longer steps first (:meth:`second_opinion`), then shorter ones
        (:meth:`shorter_steps`). ``fields`` is (value, truncation,
        rounding, roughness, nonfinite); the same come back, entries
        replaced. Complex step is exact to rounding: compared as it is."""
        if self.numerical.complex_step:
            return fields, self._entries(block, fields)
        compared = None
        if not self.numerical.wide_steps:
            fields, compared = self.second_opinion(block, fields)
        return self.shorter_steps(block, fields, compared)

    def _entries(self, block: Block, fields: Fields) -> Entries:
        return self.ledger.entries("entry", block.ana, fields, block.scale, block.ana_err)

    # -- float64: longer steps ---------------------------------------------------
    def second_opinion(self, block: Block, near: Fields) -> tuple[Fields, Entries]:
        """Entries of ``block`` that disagree at the check's step
        get further estimates, at the steps SECOND_STEPS times longer in turn;
        where one agrees with the analytical value within its own tolerance,
        it stands. ``near`` is (value, truncation, rounding, roughness,
        nonfinite) at the check's step; the same comes back, entries replaced,
        with the compared entries.

        Rounding inside f that the model (a unit of |f(x)| per evaluation)
        misses, such as an output that is small by cancellation of large
        intermediate terms (a cumulative sum near zero) or the sine of a large
        sum, shrinks like 1/h and can be systematic, out of reach of the error
        estimates; a wrong derivative does not shrink. Each longer step's own
        tolerance (its truncation grows like h^2) still separates errors above
        about 1e-7 of the derivative's scale. Costs evaluations only for the
        columns where entries disagree.
        """
        xp, p, num = self.xp, self.p, self.numerical
        start, ana, ana_err = block.start, block.ana, block.ana_err
        fields = near
        entries = self._entries(block, near)
        # Entries where f did not move beyond its rounding at the check's
        # step (every point gave f(x), up to an ulp) but moves at a longer
        # one: f is quantised
        # coarser than its dtype (a cancellation inside), by more than the
        # analytical side's change over the step. Its resolution, not the
        # derivative, is what cannot be told apart there.
        still = ROUNDING * near[2]
        flat = (xp.abs(near[0]) <= still) & (near[1] <= still) & (near[3] <= still)
        quantised = xp.zeros_like(flat)
        # The estimates at every step, with their truncation: where they
        # differ by more than that explains, the difference is f's noise
        # (a wrong derivative gives the same wrong value at every step).
        estimates = [(near[0], near[1])]
        for factor in SECOND_STEPS:
            if not entries.exceeding:
                break
            # NaN compares False: such entries keep the first estimate.
            disagree = entries.error > entries.tolerance
            columns = np.flatnonzero(p.adapter.to_numpy(xp.any(disagree, axis=1)))
            if not columns.size:
                break
            lo, hi = int(columns[0]), int(columns[-1]) + 1
            num.evaluator.expected += num.accuracy * (hi - lo)
            far = num.stencil(num.steps[start + lo : start + hi] * factor, start + lo)
            wide = num.with_noise(far)
            second = self.ledger.entries(
                "entry",
                ana[lo:hi, :],
                wide,
                block.scale,
                None if ana_err is None else ana_err[lo:hi, :],
            )
            # Agreement at a longer step stands, and so does doubt (a noisy
            # or rough f there), where the error shrank as noise does (by
            # half at least): a wrong derivative's stays.
            shrunk = 2 * second.error <= entries.error[lo:hi, :]
            take = entries.wrong[lo:hi, :] & ~second.wrong & xp.isfinite(second.numerical)
            take = shrunk & (take | (disagree[lo:hi, :] & (second.error <= second.tolerance)))
            moved = flat[lo:hi, :] & (xp.abs(far.value) > ROUNDING * wide[2])
            quantised = xp.concat([quantised[:lo, :], moved, quantised[hi:, :]], axis=0)
            estimates.append(
                tuple(
                    xp.concat([a[:lo, :], b, a[hi:, :]], axis=0)
                    for a, b in zip(estimates[0], (far.value, far.truncation))
                )
            )
            if not bool(xp.any(take)):
                continue
            fields = tuple(
                xp.concat([a[:lo, :], xp.where(take, b, a[lo:hi, :]), a[hi:, :]], axis=0)
                for a, b in zip(fields, wide)
            )
            entries = self._entries(block, fields)
        if entries.exceeding and len(estimates) > 1:
            noise = _spread_beyond_truncation(estimates, xp)
            quantised = quantised | (entries.error <= BAND * SAFETY * noise)
        return fields, doubt(entries, quantised)

    # -- shorter steps -----------------------------------------------------------
    def shorter_steps(
        self, block: Block, near: Fields, entries: Entries | None = None
    ) -> tuple[Fields, Entries]:
        """Entries of ``block`` that the first step cannot
        decide are measured again at steps SHORTER_STEP times shorter, up to
        SHORTER_STEPS times. ``near`` is (value, truncation, rounding,
        roughness, nonfinite) at the first step, ``entries`` their
        comparison if already made; the same come back, entries replaced.

        The float32 steps are a few hundredths of max(1, |x|) and the stencil
        spans three of them, so kinks (abs, sort, cummax), jumps (floor,
        round, rem) and poles (tan, x**-2) come within its reach at ordinary
        points. Per entry, a shorter step's estimate replaces the current one
        where it is smooth and finite and the current one is not, where the
        two disagree beyond their error estimates (a jump that the longer
        stencil straddles yet looks smooth over: a staircase sampled near its
        own period), or where the current one is too close to call and the
        shorter one is more precise. A disagreement with the analytical side
        counts as wrong only once the next shorter step confirms the
        estimate (agrees with it); an entry that no step decides is
        undecided, marked rough. Entries that agree are never measured
        again, and only columns with an open entry are.

        In float64 (short steps, and disagreements already given a second
        opinion) only entries left undecided because f is not smooth or not
        finite within the stencil are measured again: a jump of round(x, 3)
        every 0.001.
        """
        xp, num = self.xp, self.numerical
        fields = near
        if entries is None:
            entries = self._entries(block, fields)
        open_ = self._open(entries) if num.shorter_steps else None
        if open_ is None:
            return fields, entries
        wide = num.wide_steps
        # Float64: a shorter step may settle an undecided entry as agreeing,
        # never as wrong. Rounding inside f that the estimates miss (a
        # staircase (y + c) - c) grows as the step shrinks, and the shorter
        # steps lack the longer steps' measure of it (see second_opinion).
        undecided = xp.zeros_like(open_) if wide else open_
        # What second_opinion found f's resolution cannot decide stays so
        # when the entries are compared again below.
        unresolved = None if wide else entries.coarse
        # Low precision: a disagreement at the first step stands if a smooth
        # estimate at the finest step agrees with it, and is undecided if
        # one disagrees; only where that step is not smooth either does it
        # go down the steps in between.
        unconfirmed = xp.zeros_like(open_)
        first_wrong = entries.wrong
        if wide and entries.exceeding:
            checked = self.finest(block, fields, first_wrong)
            if checked is not None:
                confirmed, unconfirmed = checked
                open_ = open_ & ~confirmed & ~unconfirmed
        fields, entries, open_ = self._step_down(block, fields, entries, open_)
        unconfirmed = unconfirmed | ((open_ | undecided) & entries.wrong)
        if wide and entries.exceeding:
            # Wrong at a shorter step only: the finest step has its say too.
            checked = self.finest(block, fields, entries.wrong & ~first_wrong & ~unconfirmed)
            if checked is not None:
                unconfirmed = unconfirmed | checked[1]
        if bool(xp.any(unconfirmed)):
            # Unconfirmed at every step: undecided. An infinite roughness
            # marks them rough here and in the dense cotangent products.
            value, truncation, rounding, roughness, nonfinite = fields
            roughness = xp.where(unconfirmed, xp.full_like(roughness, math.inf), roughness)
            fields = (value, truncation, rounding, roughness, nonfinite)
            entries = self._entries(block, fields)
        if unresolved is not None:
            entries = doubt(entries, unresolved)
        return fields, entries

    def _open(self, entries: Entries) -> Any:
        """The entries that shorter steps measure again, or None for none.

        Open: undecided, wrong but not yet confirmed, or agreeing only
        within the wide tolerance of a stencil that a kink reaches. In
        float64 only what is undecided for want of smoothness: an entry
        that agrees stays agreed, and rounding inside f that the model
        misses (a running sum near zero) only grows at shorter steps."""
        if self.numerical.wide_steps:
            open_ = entries.rough_agreeing
            if entries.exceeding:
                open_ = open_ | entries.wrong | entries.uncertain
            return open_
        if entries.exceeding:
            return entries.rough | entries.nonfinite
        return None

    def _step_down(
        self, block: Block, fields: Fields, entries: Entries, open_: Any
    ) -> tuple[Fields, Entries, Any]:
        """The open entries measured at steps SHORTER_STEP times shorter in
        turn, a shorter estimate taking over where it is smooth and the
        current one is not, disagrees with it, or is too close to call;
        the fields, their entries and what stays open come back."""
        xp = self.xp
        steps = self.numerical.steps[block.start : block.stop]
        for _ in range(SHORTER_STEPS):
            columns = [bool(c) for c in self.p.adapter.to_numpy(xp.any(open_, axis=1))]
            if not any(columns):
                break
            steps = steps / SHORTER_STEP
            short = self.remeasure(block.start, steps, columns, fields)
            new = self._entries(block, short)
            agree = consistent(fields, short, xp)
            smooth = ~(new.rough | new.rough_agreeing | short[4]) & xp.isfinite(short[0])
            unsmooth = entries.rough | entries.nonfinite | entries.rough_agreeing
            sharper = entries.marginal & (new.tolerance < entries.tolerance)
            take = open_ & smooth & (unsmooth | ~agree | sharper)
            # Kept as they are: a disagreement that the shorter step, smooth
            # too, confirms, and an entry too close to call that it cannot
            # sharpen.
            settled = ~take & smooth & agree & (entries.wrong | entries.marginal)
            still = new.rough_agreeing | new.wrong | new.uncertain
            open_ = (take & still) | (open_ & ~take & ~settled)
            fields = tuple(xp.where(take, b, a) for a, b in zip(fields, short))
            entries = self._entries(block, fields)
        return fields, entries, open_

    def finest(self, block: Block, fields: Fields, among: Any) -> tuple[Any, Any] | None:
        """Low precision: of the entries ``among`` (a mask), those whose
        estimate a smooth one at a step FINEST_STEP times shorter than the
        first confirms, and those it contradicts; None when ``among`` is
        empty. Entries where that step is not smooth are in neither.

        A staircase (round, floor, x mod c) seen from a point near the middle
        of a stair is odd about it at every scale above the stair's width:
        no even difference shows the jumps, and every longer step measures
        the slope of the staircase as a whole, consistently. Only a step
        shorter than the distance to the jumps sees the flat stair. A wrong
        derivative of a smooth f agrees there too, within that step's wider
        rounding; such an estimate is not compared itself (too imprecise to
        pass anything): a disagreement only makes the entry undecided.
        """
        xp = self.xp
        columns = [bool(c) for c in self.p.adapter.to_numpy(xp.any(among, axis=1))]
        if not any(columns):
            return None
        start = block.start
        steps = self.numerical.steps[start : start + len(columns)] / FINEST_STEP
        finest = self.remeasure(start, steps, columns, fields)
        compared = self._entries(block, finest)
        smooth = ~(compared.rough | compared.rough_agreeing | finest[4]) & xp.isfinite(finest[0])
        agree = consistent(fields, finest, xp)
        return among & smooth & agree, among & smooth & ~agree

    def remeasure(self, start: int, steps: Any, columns: list[bool], fields: Fields) -> Fields:
        """``fields`` with the flagged ``columns`` (of those from ``start``)
        measured again at ``steps``; the others as they are."""
        xp, num = self.xp, self.numerical
        pieces: list[Fields] = []
        for a, b, flagged in runs(columns):
            if not flagged:
                pieces.append(tuple(f[a:b, ...] for f in fields))
                continue
            num.evaluator.expected += num.accuracy * (b - a)
            pieces.append(num.with_noise(num.stencil(steps[a:b], start + a)))
        if len(pieces) == 1:
            return pieces[0]
        return tuple(xp.concat(list(parts), axis=0) for parts in zip(*pieces))


def _spread_beyond_truncation(estimates: list[tuple[Any, Any]], xp: Any) -> Any:
    """Per entry, how far estimates at different steps (value, truncation)
    differ beyond what their truncation explains: f's noise, since a wrong
    derivative gives the same wrong value at every step."""
    noise = xp.zeros_like(estimates[0][0])
    for i, (a, ta) in enumerate(estimates):
        for b, tb in estimates[i + 1 :]:
            excess = xp.abs(a - b) - SAFETY * (ta + tb)
            noise = xp.maximum(noise, xp.where(xp.isfinite(excess), excess, noise))
    return noise
