"""The relative-error norm of the seed contract, and other whole-array
reductions."""

from __future__ import annotations

import cmath
import math
from typing import Any

__all__ = ["all_finite", "relative_error", "row_norms", "vector_norm"]


def all_finite(a: Any, xp: Any) -> bool:
    """Whether every entry of ``a`` is finite, in one reduction: a NaN or inf
    anywhere makes the sum non-finite, and a finite sum proves every entry
    finite. Only a sum that overflows takes the entry-by-entry test (a
    framework's isfinite is several passes, and its all() more calls)."""
    try:
        if cmath.isfinite(complex(xp.sum(a))):
            return True
    except (NotImplementedError, RuntimeError, TypeError):
        pass  # no sum for this dtype here (torch's complex32 on the CPU)
    return bool(xp.all(xp.isfinite(a)))


def vector_norm(a: Any, xp: Any) -> float:
    """2-norm of all entries (complex entries count by modulus), scaled by the
    largest entry first so that neither 1e-200 nor 1e200 under- or overflows."""
    magnitude = xp.abs(xp.reshape(a, (-1,)))
    if magnitude.shape[0] == 0:
        return 0.0
    largest = float(xp.max(magnitude))
    if largest == 0.0 or largest != largest or largest == float("inf"):
        return largest
    return largest * float(xp.sqrt(xp.sum((magnitude / largest) ** 2)))


def relative_error(numerical: Any, analytical: Any, xp: Any) -> float:
    """``||num - ana|| / (||num|| + ||ana||)``, exactly 0.0 when both are zero.

    The result lies in [0, 1] (triangle inequality) and is symmetric. Both
    arrays are scaled by their largest entry first, so that neither the
    difference nor the norms overflow near the top of the dtype.
    """
    largest = max(_largest(numerical, xp), _largest(analytical, xp))
    if largest == 0.0:
        return 0.0
    if largest != largest or largest == float("inf"):
        return 1.0  # a NaN or infinite derivative is a wrong one
    a, b = numerical, analytical
    if not 1e-100 < largest < 1e100:
        a, b = a / largest, b / largest  # squares would under- or overflow
    denominator = vector_norm(a, xp) + vector_norm(b, xp)
    return min(1.0, vector_norm(a - b, xp) / denominator)


def _largest(a: Any, xp: Any) -> float:
    magnitude = xp.abs(xp.reshape(a, (-1,)))
    return float(xp.max(magnitude)) if magnitude.shape[0] else 0.0


def row_norms(a: Any, xp: Any, ord: float = 2) -> Any:
    """The ``ord``-norm (2 or inf) of each row of a real ``(k, m)`` array, in
    read-only passes. NaN stays NaN. Unscaled: for the sizes of derivatives,
    not for the ends of the dtype."""
    if ord == math.inf:
        # max and min rather than abs: no temporary, and faster than torch's
        # inf-norm.
        return xp.maximum(xp.max(a, axis=1), -xp.min(a, axis=1))
    linalg = getattr(xp, "linalg", None)
    if linalg is not None and hasattr(linalg, "vector_norm"):
        return linalg.vector_norm(a, axis=1)
    return xp.sqrt(xp.sum(a * a, axis=1))
