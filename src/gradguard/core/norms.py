"""The relative-error norm of the seed contract."""

from __future__ import annotations

from typing import Any

__all__ = ["relative_error", "vector_norm"]


def vector_norm(a: Any, xp: Any) -> Any:
    """2-norm of all entries, as a 0-d array (complex entries count by modulus)."""
    return xp.sqrt(xp.sum(xp.abs(xp.reshape(a, (-1,))) ** 2))


def relative_error(numerical: Any, analytical: Any, xp: Any) -> float:
    """``||num - ana|| / (||num|| + ||ana||)``, exactly 0.0 when both are zero.

    The result lies in [0, 1] (triangle inequality) and is symmetric.
    """
    denominator = float(vector_norm(numerical, xp)) + float(vector_norm(analytical, xp))
    if denominator == 0.0:
        return 0.0
    return min(1.0, float(vector_norm(numerical - analytical, xp)) / denominator)
