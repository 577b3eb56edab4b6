"""Per-entry tolerances and the three-valued verdict.

A tolerance is never a fixed constant. For each compared entry it is

    SAFETY * (truncation + ROUNDING * rounding + noise)   finite-difference error estimate
  + ANALYTICAL * eps_analytical * (|ana| + |num| + scale) rounding of the analytical side
  + SAFETY * |ana - the same rule in float64|             ...measured, where f allows
  + atol + rtol * |num|                                   optional user overrides

where ``noise`` is what the fourth difference shows of f's own rounding
noise. An entry whose error exceeds its tolerance is *wrong* only when the
evidence is clear; it is *uncertain* when f is not smooth there (a kink, or
noise beyond ROUGH rounding floors), when f is not finite nearby, or when the
error is within BAND tolerances (the precision cannot decide). Uncertain
entries make the verdict "inconclusive", never "fail". A NaN or infinite
analytical value (or tolerance) never agrees: where f is finite nearby, it is
wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

__all__ = [
    "ANALYTICAL",
    "ARRAY_FIELDS",
    "BAND",
    "ROUGH",
    "ROUNDING",
    "SAFETY",
    "Entries",
    "Tally",
    "compare",
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
#: Errors up to this many tolerances are too close to the precision limit
#: to call wrong.
BAND = 3.0


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
    #: Some entry exceeds its tolerance (else every flag above but
    #: ``rough_agreeing`` is all False).
    exceeding: bool = True

    def map(self, fn: Any) -> Entries:
        """The same entries with ``fn`` applied to every array (e.g. a slice)."""
        arrays = {name: fn(getattr(self, name)) for name in ARRAY_FIELDS}
        return Entries(**arrays, exceeding=self.exceeding)


ARRAY_FIELDS = tuple(f.name for f in fields(Entries) if f.name != "exceeding")


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
) -> Entries:
    """Tolerances and classification of entries (see the module docstring).

    ``analytical_error``, when known, is the measured rounding of the
    analytical side (the same rule evaluated in a wider dtype); it joins the
    tolerance like the finite-difference estimate does.
    """
    # Not smooth: the even difference is far above rounding AND large next to
    # the derivative itself. Noise from cancellation inside f (a sum of many
    # terms that nearly cancel) passes the first test but not the second: it
    # is noise, and it widens the tolerance instead.
    magnitude = xp.abs(numerical) + scale
    relative = float(xp.finfo(numerical.dtype).eps) ** 0.5
    rough = (roughness > ROUGH * rounding) & (roughness > relative * magnitude)
    noise = xp.where(rough, xp.zeros_like(roughness), roughness)
    estimate = SAFETY * (truncation + ROUNDING * rounding + noise)
    tol = estimate + ANALYTICAL * eps_analytical * (xp.abs(analytical) + xp.abs(numerical) + scale)
    if analytical_error is not None:
        tol = tol + SAFETY * analytical_error
    if atol is not None:
        tol = tol + atol
    if rtol is not None:
        tol = tol + rtol * xp.abs(numerical)
    error = xp.abs(analytical - numerical)
    # NaN counts as exceeding; so does an infinite tolerance, which the
    # analytical side's own size can make (inf <= inf would let it pass).
    exceeds = ~(error <= tol) | (tol == math.inf)
    if not bool(xp.any(exceeds)):
        # The common case, kept cheap: nothing to classify (``exceeds`` is
        # all False, and serves as every flag that is).
        none = exceeds
        return Entries(
            analytical, numerical, error, tol, none, none, none, none, none, rough, False
        )
    # f not finite near x (or its error estimates past the dtype's range):
    # the numerical side cannot decide. The analytical side's values are
    # what is judged, so they do not count here.
    bad_value = ~xp.isfinite(numerical) | ~xp.isfinite(estimate) | nonfinite
    marginal = exceeds & ~rough & ~bad_value & (error <= BAND * tol) & (tol < math.inf)
    uncertain = exceeds & (rough | bad_value | marginal)
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
