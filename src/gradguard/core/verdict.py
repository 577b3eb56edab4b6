"""Per-entry tolerances and the three-valued verdict.

A tolerance is never a fixed constant. For each compared entry it is

    multiple * (
        SAFETY * (truncation + ROUNDING * rounding + noise)   finite-difference error estimate
      + ANALYTICAL * eps_analytical * (|ana| + |num| + scale) rounding of the analytical side
      + SAFETY * |ana - the same rule in float64|             ...measured, where f allows
      + RESOLVED * scale)                                     what differences resolve at best
  + atol + rtol * |num|                                       optional user overrides

where ``noise`` is what the fourth difference shows of f's own rounding
noise (that entry's, and the spread measured over many entries), and
``multiple`` grows slowly with the number of entries compared (see
:func:`count_multiple`): among 10^5 estimates a few exceed 3 of their own by
chance. An entry whose error exceeds its tolerance is *wrong* only when the
evidence is clear; it is *uncertain* when f is not smooth there (a kink, or
noise beyond ROUGH rounding floors), when f is not finite nearby, when the
error is within BAND tolerances (the precision cannot decide), or when it is
within FLOOR of the scale of the computation (sqrt(eps) of the entry's scale
or of ``floor_scale``: rounding of terms that the estimates cannot see, such
as a derivative that is zero by cancellation inside the rule). An entry that
agrees is *unresolved* when its tolerance exceeds COARSE of its magnitude:
the agreement says nothing at the precision a wrong derivative shows at.
Uncertain and unresolved entries make the verdict "inconclusive", never
"fail". A NaN or infinite analytical value (or tolerance) never agrees:
where f is finite nearby, it is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = [
    "ANALYTICAL",
    "ARRAY_FIELDS",
    "BAND",
    "COARSE",
    "FLOOR",
    "RESOLVED",
    "ROUGH",
    "ROUNDING",
    "SAFETY",
    "Entries",
    "Tally",
    "compare",
    "count_multiple",
    "doubt",
]

#: Multiple of the finite-difference error estimate that still counts as
#: agreement. The estimate is of the 2nd-order quotient, itself a bound on
#: the 4th-order value compared, so a small factor suffices.
SAFETY = 4.0
#: Units of rounding per evaluation that a smooth f may carry.
ROUNDING = 4.0
#: Units of rounding of the analytical side (its dtype's eps).
ANALYTICAL = 32.0
#: The fourth difference above this many rounding floors means f is not
#: smooth (or not deterministic) at this step.
ROUGH = 256.0
#: An even difference up to this many times what a smooth f would give
#: next to its truncation estimate is a smooth f's (see compare).
SMOOTH = 32.0
#: Errors up to this many tolerances are too close to the precision limit
#: to call wrong.
BAND = 3.0
#: Exponent of eps: an error within eps**FLOOR of the entry's scale is never
#: called wrong (1.5e-8 in float64; float64 only): rounding inside f or its
#: rule that no estimate sees stays below it, and a derivative right to that
#: is right for every use.
FLOOR = 1 / 2
#: Exponent of eps: agreement within eps**RESOLVED of the scale counts
#: (3.7e-11 in float64): the truncation estimate is the second-order
#: quotient's, whose error at the step used is about that.
RESOLVED = 2 / 3
#: Exponent of eps: a tolerance above eps**COARSE of the entry's magnitude
#: (1.2e-4 in float64) cannot tell a wrong derivative from a right one.
COARSE = 1 / 4
#: Entries compared at which ``multiple`` is 1 (see count_multiple).
COUNT_REFERENCE = 1000


@dataclass(frozen=True)
class Entries:
    """Compared entries of one batch (all arrays the same shape)."""

    analytical: Any
    numerical: Any
    error: Any
    tolerance: Any
    wrong: Any
    uncertain: Any
    nonfinite: Any
    #: Uncertain because f is not smooth (or noisy) there.
    rough: Any
    #: Uncertain only because the error is within BAND tolerances.
    marginal: Any
    #: f is not smooth there, yet both sides agree (e.g. a subgradient that
    #: equals the mean of the one-sided slopes).
    rough_agreeing: Any
    #: Uncertain: the sides agree, but within a tolerance too wide to tell
    #: (above COARSE of the magnitude), mostly from truncation (f changes
    #: faster than the step resolves)...
    steep: Any = None
    #: ...or mostly from rounding and noise of f (f resolves too little).
    coarse: Any = None
    #: Uncertain: beyond the tolerance, but within FLOOR of the scale.
    faint: Any = None
    #: Some entry exceeds its tolerance (else every flag above but
    #: ``rough_agreeing`` is all False).
    exceeding: bool = True

    def map(self, fn: Any) -> Entries:
        """The same entries with ``fn`` applied to every array (e.g. a slice)."""
        arrays = {
            name: None if getattr(self, name) is None else fn(getattr(self, name))
            for name in ARRAY_FIELDS
        }
        return Entries(**arrays, exceeding=self.exceeding)


ARRAY_FIELDS = tuple(f.name for f in fields(Entries) if f.name != "exceeding")


def count_multiple(count: int) -> float:
    """How much wider tolerances are when ``count`` entries are compared: the
    expected largest of ``count`` Gaussian deviations, sqrt(2 ln count),
    relative to its value at COUNT_REFERENCE entries (never below 1). 1.32
    at 10^5 entries, 1.53 at 10^7."""
    if count <= COUNT_REFERENCE:
        return 1.0
    return math.sqrt(math.log(count) / math.log(COUNT_REFERENCE))


def compare(
    analytical: Any,
    numerical: Any,
    truncation: Any,
    rounding: Any,
    roughness: Any,
    nonfinite: Any,
    scale: Any,
    eps_analytical: float,
    xp: Any,
    rtol: float | None = None,
    atol: float | None = None,
    analytical_error: Any = None,
    pool: bool = False,
    eps_numerical: float | None = None,
    floor_scale: float = 0.0,
    multiple: float = 1.0,
) -> Entries:
    """Tolerances and classification of entries (see the module docstring).

    ``analytical_error``, when known, is the measured rounding of the
    analytical side (the same rule evaluated in a wider dtype); it joins the
    tolerance like the finite-difference estimate does. With ``pool``, the
    rows of the arrays are columns of one Jacobian (inputs, outputs): the
    noise an output shows in any of them (its even difference next to its
    rounding floor) is that output's, and an error within what it allows is
    uncertain, not wrong (f's resolution cannot decide). ``eps_numerical``
    is the precision of f's values (default: the dtype of ``numerical``;
    coarser when f returns a narrower dtype than it computes
    in). ``floor_scale`` stands for the scale of the computation where f
    resolves nothing (the numerical value within its tolerance of zero):
    the FLOOR applies to it.
    """
    eps = float(xp.finfo(numerical.dtype).eps) if eps_numerical is None else eps_numerical
    terms = xp.abs(numerical) + scale
    safe_terms = xp.where(terms > 0, terms, xp.ones_like(terms))
    rough, asymptotic, own_noise = _smoothness(terms, truncation, rounding, roughness, eps, xp)
    estimate = SAFETY * (truncation + ROUNDING * rounding + own_noise)
    tol = estimate + ANALYTICAL * eps_analytical * (xp.abs(analytical) + xp.abs(numerical) + scale)
    if analytical_error is not None:
        tol = tol + SAFETY * analytical_error
    tol = tol + eps**RESOLVED * scale
    if multiple != 1.0:
        tol = tol * multiple
    if atol is not None:
        tol = tol + atol
    if rtol is not None:
        tol = tol + rtol * xp.abs(numerical)
    error = xp.abs(analytical - numerical)
    # NaN counts as exceeding; so does an infinite tolerance, which the
    # analytical side's own size can make (inf <= inf would let it pass).
    exceeds = ~(error <= tol) | (tol == math.inf)
    # Agreement within a tolerance too wide to mean anything (exact
    # agreement, both zero say, is agreement). The tolerance bounds the
    # error by the second-order quotient's; the value compared is of higher
    # order, its own truncation about truncation^2 / |value| (one length
    # scale): that, with rounding and noise, is what the check resolves.
    finer = truncation * truncation / safe_terms
    resolution = multiple * (SAFETY * (finer + ROUNDING * rounding + own_noise))
    agreeing = ~exceeds & (error > 0)
    coarse_at = eps**COARSE
    unresolved = agreeing & (resolution > coarse_at * (terms + xp.abs(analytical)))
    if not bool(xp.any(exceeds | unresolved)):
        # The common case, kept cheap: nothing to classify (``exceeds`` is
        # all False, and serves as every flag that is).
        none = exceeds
        return Entries(
            analytical, numerical, error, tol, none, none, none, none, none, rough, exceeding=False
        )
    # Measured against the batch's largest scale too: an entry that is zero
    # by cancellation (its row's terms all near zero) is resolved when the
    # rest of the computation is.
    batch_scale = xp.max(xp.broadcast_to(scale, error.shape))
    # An analytical zero (up to its own rounding) is a claim the differences
    # do check: that f does not move, to within their resolution next to the
    # scale of the computation (floor, sign, a dead branch). A small nonzero
    # value below the resolution is a claim they cannot check.
    zero = ANALYTICAL * eps_analytical * (batch_scale + floor_scale)
    zero_claim = xp.astype(xp.abs(analytical) <= zero, error.dtype) * floor_scale
    unresolved = unresolved & (resolution > coarse_at * (terms + batch_scale + zero_claim))
    # Truncation dominates: f changes faster than the step resolves. (A
    # staircase's noise shows in both, in the even difference some three
    # times more; a smooth f's even difference is below its truncation
    # unless the step spans its length scale, where the truncation is a
    # good part of the value.)
    explained = (2 * truncation >= roughness) | ~asymptotic
    steep = unresolved & (finer + truncation >= ROUNDING * rounding) & explained
    coarse = unresolved & ~steep
    # f not finite near x (or its error estimates past the dtype's range):
    # the numerical side cannot decide. The analytical side's values are
    # what is judged, so they do not count here.
    bad_value = ~xp.isfinite(numerical) | ~xp.isfinite(estimate) | nonfinite
    # (In float32 and below, the analytical side's rounding is measured in
    # float64 where f allows, and the floor would be as coarse as 3e-4.)
    floor = eps**FLOOR if eps < 1e-10 else 0.0
    # Where f resolves nothing (the numerical value within its tolerance of
    # zero), the scale of the computation stands in for the entry's; so it
    # does where the whole batch is below eps of it (f is zero in exact
    # arithmetic, and both sides differentiate the rounding of its terms).
    unseen = (xp.abs(numerical) <= tol) | (batch_scale <= eps * floor_scale)
    unseen = xp.astype(unseen, error.dtype) * floor_scale
    within_floor = error <= floor * (terms + batch_scale + unseen)
    close = (error <= BAND * tol) | within_floor
    marginal = exceeds & ~rough & ~bad_value & close & (tol < math.inf)
    faint = marginal & ~(error <= BAND * tol)
    if pool and eps < 1e-10:
        # (Float64 only: in float32 every evaluation's noise is of that size,
        # and the steps adapt.)
        explained = _explained_by_output_noise(error, tol, rounding, own_noise, multiple, xp)
        noisy = exceeds & ~rough & ~bad_value & ~marginal & explained & (tol < math.inf)
        coarse = coarse | noisy
        marginal = marginal | noisy
    uncertain = (exceeds & (rough | bad_value | marginal)) | unresolved
    wrong = exceeds & ~uncertain
    return Entries(
        analytical,
        numerical,
        error,
        tol,
        wrong,
        uncertain,
        bad_value & exceeds,
        rough & exceeds & ~bad_value,
        marginal,
        rough & ~exceeds,
        steep=steep,
        coarse=coarse,
        faint=faint,
    )


def _smoothness(
    terms: Any, truncation: Any, rounding: Any, roughness: Any, eps: float, xp: Any
) -> tuple[Any, Any, Any]:
    """Which entries look rough (a kink, a jump, noise), which are in the regime
    where the truncation estimate holds, and the noise left in the even
    difference that widens the tolerance: ``(rough, asymptotic, own_noise)``."""
    # Not smooth: the even difference is far above rounding AND large next to
    # the derivative itself. Noise from cancellation inside f (a sum of many
    # terms that nearly cancel) passes the first test but not the second: it
    # is noise, and it widens the tolerance instead.
    rough = (roughness > ROUGH * rounding) & (roughness > eps**0.5 * terms)
    # A smooth f whose derivatives grow on one length scale L gives an even
    # difference of about truncation * h / L, and h / L is about
    # sqrt(truncation / |derivative|): a steep smooth f (large arguments,
    # sin(30 x)) is not rough. A kink leaves an even difference as large as
    # its truncation, a noisy f too.
    safe_terms = xp.where(terms > 0, terms, xp.ones_like(terms))
    # (Only where h / L is small, the regime that estimate holds in.)
    asymptotic = truncation <= 1e-2 * terms
    smooth_like = asymptotic & (roughness <= SMOOTH * truncation * xp.sqrt(truncation / safe_terms))
    rough = rough & ~smooth_like
    # What is left of the even difference is noise: it widens the estimate.
    own_noise = xp.where(rough | smooth_like, xp.zeros_like(roughness), roughness)
    return rough, asymptotic, own_noise


def _explained_by_output_noise(
    error: Any, tol: Any, rounding: Any, own_noise: Any, multiple: float, xp: Any
) -> Any:
    """Where an output's noise, seen in its other columns (the rows of a
    pooled comparison are columns of one Jacobian), explains the error: f's
    resolution cannot decide there."""
    positive = rounding > 0
    ratio = own_noise / xp.where(positive, rounding, xp.ones_like(rounding))
    ratio = xp.where(positive & xp.isfinite(ratio), ratio, xp.zeros_like(ratio))
    pooled = xp.max(ratio, axis=0, keepdims=True) * rounding
    return error <= BAND * (tol + multiple * SAFETY * ROUNDING * pooled)


def doubt(entries: Entries, where: Any) -> Entries:
    """``entries`` with those wrong ``where`` made uncertain: f's resolution
    (measured outside compare) cannot decide them."""
    if not entries.exceeding:
        return entries
    moved = entries.wrong & where
    coarse = moved if entries.coarse is None else entries.coarse | moved
    return replace(
        entries,
        wrong=entries.wrong & ~moved,
        uncertain=entries.uncertain | moved,
        marginal=entries.marginal | moved,
        coarse=coarse,
    )


@dataclass
class Tally:
    """Totals over compared entries, in Python numbers; tallies of separate
    batches add up with :meth:`merge`."""

    checked: int = 0
    wrong: int = 0
    uncertain: int = 0
    nonfinite: int = 0
    diff_sq: float = 0.0
    num_sq: float = 0.0
    ana_sq: float = 0.0
    cross: float = 0.0
    #: Entries where either side is nonzero (beyond rounding noise).
    active: int = 0
    #: Wrong entries whose analytical value is NaN or inf.
    analytical_nonfinite: int = 0

    @classmethod
    def of(cls, entries: Entries, xp: Any) -> Tally:
        a = entries.analytical
        n = entries.numerical
        sums = _sums(a, n, xp)
        analytical_nonfinite = 0
        if not all(math.isfinite(v) for v in sums):
            # NaN or inf on either side (or sums past the largest float):
            # the sums are over the entries where both sides are finite.
            if entries.exceeding:
                flags = entries.wrong & ~xp.isfinite(a)
                analytical_nonfinite = int(xp.count_nonzero(flags))
            finite = xp.isfinite(n) & xp.isfinite(a)
            a = xp.where(finite, a, xp.zeros_like(a))
            n = xp.where(finite, n, xp.zeros_like(n))
            sums = _sums(a, n, xp)

        def count(flags: Any) -> int:
            return int(xp.count_nonzero(flags)) if entries.exceeding else 0

        diff_sq, num_sq, ana_sq, cross = sums
        return cls(
            checked=math.prod(a.shape),
            wrong=count(entries.wrong),
            uncertain=count(entries.uncertain),
            nonfinite=count(entries.nonfinite),
            diff_sq=diff_sq,
            num_sq=num_sq,
            ana_sq=ana_sq,
            cross=cross,
            active=_active(a, n, xp),
            analytical_nonfinite=analytical_nonfinite,
        )

    def merge(self, other: Tally) -> None:
        for name in _TALLY_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def relative_error(self) -> float:
        denominator = self.num_sq**0.5 + self.ana_sq**0.5
        if denominator == 0.0:
            return 0.0
        return min(1.0, self.diff_sq**0.5 / denominator)


_TALLY_FIELDS = tuple(f.name for f in fields(Tally))


def _sums(a: Any, n: Any, xp: Any) -> list[float]:
    """Sums over all entries of (a - n)^2, n^2, a^2 and a * n: dot products,
    which make no temporary arrays but the difference."""
    size = math.prod(a.shape)
    a, n = xp.reshape(a, (size,)), xp.reshape(n, (size,))
    d = a - n
    return [float(xp.vecdot(u, v)) for u, v in ((d, d), (n, n), (a, a), (a, n))]


def _active(a: Any, n: Any, xp: Any) -> int:
    """Entries where either side is nonzero, rounding noise aside: above
    sqrt(eps) of the batch's largest magnitude."""
    magnitude = xp.maximum(xp.abs(a), xp.abs(n))
    if math.prod(magnitude.shape) == 0:
        return 0
    floor = float(xp.max(magnitude)) * float(xp.finfo(magnitude.dtype).eps) ** 0.5
    return int(xp.count_nonzero(magnitude > floor))
