"""Step sizes derived from the dtype, never fixed constants."""

from __future__ import annotations

from typing import Any

__all__ = ["default_steps", "step_exponent"]


def step_exponent(order: int) -> float:
    """Exponent of machine epsilon in the optimal step of an order-``order``
    first-derivative stencil: truncation O(h**p) balances rounding O(eps/h)
    at h ~ eps**(1/(p+1))."""
    return 1.0 / (order + 1)


def default_steps(x: Any, xp: Any, order: int = 2, eps: float | None = None) -> Any:
    """``h_i = eps**(1/(p+1)) * max(1, |x_i|)`` in the dtype of ``x``; ``eps``
    is that dtype's unless f's values carry less precision (given)."""
    eps = max(float(xp.finfo(x.dtype).eps), eps or 0.0)
    scale = xp.maximum(xp.abs(x), xp.ones_like(x))
    return scale * (eps ** step_exponent(order))
