"""Per-entry tolerances and the three-valued verdict.

A tolerance is never a fixed constant. For each compared entry it is

    SAFETY * (truncation + ROUNDING * rounding)     finite-difference error estimate
  + ANALYTICAL * eps_analytical * (|ana| + |num| + scale)   rounding of the analytical side
  + atol + rtol * |num|                             optional user overrides

An entry whose error exceeds it is *wrong* when the function is smooth
there, and *uncertain* when it is not (a kink, noise, or non-finite values
nearby): there the finite differences cannot decide, and a wrong verdict
must not be given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANALYTICAL",
    "ROUGH",
    "ROUNDING",
    "SAFETY",
    "Entries",
    "Tally",
    "classify",
    "tolerance",
]

#: Multiple of the finite-difference error estimate that still counts as
#: agreement. The estimate is of the 2nd-order quotient, itself a bound on
#: the 4th-order value compared, so a small factor suffices.
SAFETY = 4.0
#: Units of rounding per evaluation that a smooth f may carry.
ROUNDING = 16.0
#: Units of rounding of the analytical side (its dtype's eps).
ANALYTICAL = 32.0
#: The fourth difference above this many rounding floors means f is not
#: smooth (or not deterministic) at this step.
ROUGH = 256.0


def tolerance(
    numerical: Any,
    analytical: Any,
    truncation: Any,
    rounding: Any,
    scale: Any,
    eps_analytical: float,
    xp: Any,
    rtol: float | None = None,
    atol: float | None = None,
) -> Any:
    """Per-entry tolerance (see the module docstring)."""
    tol = SAFETY * (truncation + ROUNDING * rounding)
    tol = tol + ANALYTICAL * eps_analytical * (xp.abs(analytical) + xp.abs(numerical) + scale)
    if atol is not None:
        tol = tol + atol
    if rtol is not None:
        tol = tol + rtol * xp.abs(numerical)
    return tol


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


def classify(
    analytical: Any,
    numerical: Any,
    tol: Any,
    roughness: Any,
    rounding: Any,
    nonfinite: Any,
    xp: Any,
) -> Entries:
    """Split entries into agreeing, wrong and uncertain ones."""
    error = xp.abs(analytical - numerical)
    bad_value = ~xp.isfinite(numerical) | nonfinite
    rough = roughness > ROUGH * rounding
    exceeds = (error > tol) | ~xp.isfinite(error)
    wrong = exceeds & ~rough & ~bad_value
    uncertain = exceeds & (rough | bad_value)
    return Entries(analytical, numerical, error, tol, wrong, uncertain, bad_value)


@dataclass
class Tally:
    """Running totals over batches of compared entries, in Python floats."""

    checked: int = 0
    wrong: int = 0
    uncertain: int = 0
    nonfinite: int = 0
    diff_sq: float = 0.0
    num_sq: float = 0.0
    ana_sq: float = 0.0
    cross: float = 0.0
    ana_nonzero: int = 0
    num_nonzero: int = 0
    worst_ratio: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def add(self, entries: Entries, xp: Any) -> None:
        a = entries.analytical
        n = entries.numerical
        finite = xp.isfinite(n) & xp.isfinite(a)
        a0 = xp.where(finite, a, xp.zeros_like(a))
        n0 = xp.where(finite, n, xp.zeros_like(n))
        size = math.prod(a.shape)
        self.checked += size
        self.wrong += int(xp.sum(xp.astype(entries.wrong, xp.int64)))
        self.uncertain += int(xp.sum(xp.astype(entries.uncertain, xp.int64)))
        self.nonfinite += int(xp.sum(xp.astype(entries.nonfinite, xp.int64)))
        self.diff_sq += float(xp.sum((a0 - n0) ** 2))
        self.num_sq += float(xp.sum(n0**2))
        self.ana_sq += float(xp.sum(a0**2))
        self.cross += float(xp.sum(a0 * n0))
        self.ana_nonzero += int(xp.sum(xp.astype(a0 != 0, xp.int64)))
        self.num_nonzero += int(xp.sum(xp.astype(n0 != 0, xp.int64)))
        if size:
            ratio = entries.error / xp.where(
                entries.tolerance > 0, entries.tolerance, xp.ones_like(entries.tolerance)
            )
            ratio = xp.where(xp.isfinite(ratio), ratio, xp.zeros_like(ratio))
            self.worst_ratio = max(self.worst_ratio, float(xp.max(ratio)))

    @property
    def relative_error(self) -> float:
        denominator = self.num_sq**0.5 + self.ana_sq**0.5
        if denominator == 0.0:
            return 0.0
        return min(1.0, self.diff_sq**0.5 / denominator)
