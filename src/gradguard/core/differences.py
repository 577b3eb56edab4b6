"""Centred finite differences on the Array API namespace ``xp``.

Everything here works on a batch of directions at once: ``evaluate`` maps a
``(k, n)`` array of points to a ``(k, m)`` array of outputs, and the caller
decides how that batch is computed (vectorised, looped, on an executor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .stencils import CENTRAL, FOURTH_DIFFERENCE, Stencil

__all__ = [
    "DirectionalDerivatives",
    "apply_stencil",
    "directional_derivatives",
    "represented_displacement",
]

Evaluate = Callable[[Any], Any]


def represented_displacement(x: Any, displacement: Any) -> Any:
    """The displacement that ``x + displacement`` actually moved ``x`` by.

    ``(x + d) - x`` is exact in binary floating point whenever ``|d| <= |x|``
    (Sterbenz) and within one rounding of ``d`` otherwise, so dividing by it
    instead of by ``d`` removes the error of representing the step.
    """
    return (x + displacement) - x


def apply_stencil(stencil: Stencil, values: dict[int, Any]) -> Any:
    """``sum_k w_k * values[o_k]``; the caller divides by ``h**power``."""
    total = None
    for offset, weight in zip(stencil.offsets, stencil.weights):
        term = values[offset] * weight
        total = term if total is None else total + term
    return total


@dataclass(frozen=True)
class DirectionalDerivatives:
    """Derivatives of ``f`` along ``k`` directions, with what is known of their error.

    All arrays are ``(k, m)`` unless noted, in units of the displacement
    (``value[r] ~ J @ direction[r]``).
    """

    #: 4th-order (Richardson) estimate of ``J @ direction``.
    value: Any
    #: Truncation error estimate: |N(h) - N(2h)| / 3, the error of the
    #: 2nd-order quotient, which bounds that of ``value``.
    truncation: Any
    #: Rounding floor of ``value``: one unit of rounding in each evaluation.
    rounding: Any
    #: |fourth difference| / 2: ~ |jump in slope| * |direction| at a kink,
    #: ~ evaluation noise for a noisy ``f``, ~ 0 for a smooth one.
    roughness: Any
    #: Some evaluation near ``x`` was NaN or infinite.
    nonfinite: Any
    #: ``(k, n)``: the direction the quotients were actually taken along,
    #: after rounding of the perturbed points.
    direction: Any


def directional_derivatives(
    evaluate: Evaluate,
    x0: Any,
    displacements: Any,
    f0: Any,
    xp: Any,
) -> DirectionalDerivatives:
    """Evaluate ``f`` at ``x0 + o * displacements[r]`` for o in (-2, -1, 1, 2).

    ``x0`` is ``(n,)``, ``displacements`` ``(k, n)``, ``f0 = f(x0)`` ``(m,)``.
    Costs ``4k`` evaluations, done as one batch of ``4k`` points.
    """
    k = displacements.shape[0]
    offsets = (-2, -1, 1, 2)
    points = xp.concat([x0[None, :] + displacements * float(o) for o in offsets], axis=0)
    outputs = evaluate(points)
    values = {o: outputs[i * k : (i + 1) * k, :] for i, o in enumerate(offsets)}
    moved = {o: points[i * k : (i + 1) * k, :] - x0[None, :] for i, o in enumerate(offsets)}
    values[0] = f0[None, :]

    # Second-order quotients at h and 2h, in units of the displacement.
    narrow = (values[1] - values[-1]) / 2.0
    wide = (values[2] - values[-2]) / 4.0
    value = apply_stencil(CENTRAL[4], values)
    fourth = apply_stencil(FOURTH_DIFFERENCE, values)
    d_narrow = (moved[1] - moved[-1]) / 2.0
    d_wide = (moved[2] - moved[-2]) / 4.0

    eps = float(xp.finfo(outputs.dtype).eps)
    abs_sum = sum(
        abs(w) * xp.abs(values[o]) for o, w in zip(CENTRAL[4].offsets, CENTRAL[4].weights)
    )
    nonfinite = ~xp.isfinite(values[-2])
    for o in (-1, 0, 1, 2):
        nonfinite = nonfinite | ~xp.isfinite(values[o])
    return DirectionalDerivatives(
        value=value,
        truncation=xp.abs(narrow - wide) / 3.0,
        rounding=abs_sum * eps,
        roughness=xp.abs(fourth) / 2.0,
        nonfinite=nonfinite,
        direction=(d_narrow * 4.0 - d_wide) / 3.0,
    )
