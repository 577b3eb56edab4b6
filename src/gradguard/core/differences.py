"""Centred finite differences on the Array API namespace ``xp``.

Everything here works on a batch of directions at once: ``evaluate`` maps a
``(k, n)`` array of points to a ``(k, m)`` array of outputs, and the caller
decides how that batch is computed (vectorised, looped, on an executor).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import device

from .stencils import CENTRAL, EVEN_DIFFERENCE, KINK_RESPONSE, Stencil

__all__ = [
    "DirectionalDerivatives",
    "apply_stencil",
    "complex_step_derivatives",
    "coordinate_points",
    "directional_derivatives",
    "partial_derivatives",
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

    #: High-order (4 or 6) estimate of ``J @ direction``.
    value: Any
    #: Truncation error estimate: the distance to the next lower-order
    #: stencil, whose error it estimates and which bounds that of ``value``.
    truncation: Any
    #: Rounding floor of ``value``: one unit of rounding in each evaluation.
    rounding: Any
    #: |highest even difference| scaled so that it is ~ |jump in slope| *
    #: |direction| at a kink, ~ evaluation noise for a noisy ``f``, and ~ 0
    #: for a smooth one.
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
    accuracy: int = 4,
    output_eps: Any = None,
) -> DirectionalDerivatives:
    """Evaluate ``f`` at ``x0 + o * displacements[r]`` for the offsets of the
    central stencil of order ``accuracy`` (4: ±1, ±2; 6: ±1, ±2, ±3).

    ``x0`` is ``(n,)``, ``displacements`` ``(k, n)``, ``f0 = f(x0)`` ``(m,)``.
    The value is the order-``accuracy`` stencil; its error is estimated by
    its distance to the order ``accuracy - 2`` stencil on the same points
    (which bounds it), so the step should suit that lower order:
    ``eps**(1/(accuracy - 1))``. Costs ``accuracy * k`` evaluations, done as
    one batch. ``output_eps``, ``(m,)`` or None, is the precision each output
    of f actually has, where coarser than the dtype of the outputs (f computes
    in float64 and returns float32, say): its rounding is what the quotients carry.
    """
    stencil = _stencil(accuracy)
    k, n = displacements.shape
    offsets = _weights((stencil.offsets,), x0, xp)[0, :, None, None]
    # (p, k, n): a block per offset, x0 added in place where the dtypes
    # agree (one array of this size fewer: tens of MB of fresh pages at 10^6).
    blocks = displacements[None, :, :] * offsets
    if blocks.dtype == x0.dtype:
        blocks += x0[None, None, :]
    else:
        blocks = x0[None, None, :] + blocks
    # What the points actually moved x0 by (exact, Sterbenz). The stencil is
    # linear in the points, so the quotient is the derivative along the same
    # combination of those displacements.
    actual = xp.reshape(blocks - x0[None, None, :], (len(stencil.offsets), k * n))
    direction = xp.reshape(_weights((stencil.weights,), x0, xp) @ actual, (k, n))
    points = xp.reshape(blocks, (len(stencil.offsets) * k, n))
    return _quotients(evaluate(points), f0, k, accuracy, direction, xp, output_eps)


def partial_derivatives(
    evaluate: Evaluate,
    x0: Any,
    steps: Any,
    start: int,
    f0: Any,
    xp: Any,
    accuracy: int = 4,
    output_eps: Any = None,
) -> DirectionalDerivatives:
    """Derivatives along the coordinates ``start .. start + len(steps)``,
    per unit of each coordinate: ``value[r] ~ J[:, start + r]``.

    Like :func:`directional_derivatives` with ``displacements`` rows of a
    scaled identity, but every field is already divided by the step as
    represented at that coordinate, and ``direction`` is that step ``(k,)``.
    """
    stencil = _stencil(accuracy)
    k = steps.shape[0]
    points = coordinate_points(x0, steps, start, stencil.offsets, xp)
    own = x0[start : start + k]
    represented = apply_stencil(
        stencil, {o: (own + steps * float(o)) - own for o in stencil.offsets}
    )
    result = _quotients(evaluate(points), f0, k, accuracy, represented, xp, output_eps)
    per_unit = represented[:, None]
    size = xp.abs(per_unit)
    return DirectionalDerivatives(
        value=result.value / per_unit,
        truncation=result.truncation / size,
        rounding=result.rounding / size,
        roughness=result.roughness / size,
        nonfinite=result.nonfinite,
        direction=represented,
    )


def coordinate_points(x0: Any, steps: Any, start: int, offsets: tuple[int, ...], xp: Any) -> Any:
    """``x0 + o * steps[r] * e[start + r]`` for every offset ``o`` (the outer
    blocks) and ``r < k = len(steps)``: a ``(len(offsets) * k, n)`` array.

    Copies of ``x0`` with each block's moved entries written through one
    strided slice (row ``r`` moves flat index ``r * (n + 1) + start``): one
    pass over the points, where adding a scaled identity would take several.
    """
    k = steps.shape[0]
    n = x0.shape[0]
    if k == 0:
        return xp.zeros((0, n), dtype=x0.dtype, device=device(x0))
    points = xp.tile(x0, (len(offsets) * k,))
    own = x0[start : start + k]
    for block, offset in enumerate(offsets):
        first = block * k * n + start
        points[first : first + (k - 1) * (n + 1) + 1 : n + 1] = own + steps * float(offset)
    return xp.reshape(points, (len(offsets) * k, n))


def _stencil(accuracy: int) -> Stencil:
    if accuracy not in CENTRAL or accuracy < 4:
        raise ValueError(f"accuracy must be one of {sorted(a for a in CENTRAL if a >= 4)}")
    return CENTRAL[accuracy]


def _quotients(
    outputs: Any,
    f0: Any,
    k: int,
    accuracy: int,
    direction: Any,
    xp: Any,
    output_eps: Any = None,
) -> DirectionalDerivatives:
    """Stencils applied to ``outputs`` (one block of ``k`` rows per offset).

    The three stencils the estimates need (the derivative of order
    ``accuracy``, its difference from the one of order ``accuracy - 2`` and
    the even difference) are linear in the blocks, so they are one small
    matrix product: a single pass over the outputs instead of one per term."""
    p, m = len(CENTRAL[accuracy].offsets), outputs.shape[1]
    blocks = xp.reshape(outputs, (p, k * m))
    # An inf output makes NaN here (inf times a zero weight); the nonfinite
    # flags below mark it, so NumPy's warning about it is no news.
    with np.errstate(invalid="ignore"):
        combined = _weights(_STENCIL_ROWS[accuracy], outputs, xp) @ blocks
    value = xp.reshape(combined[0, :], (k, m))
    # The even difference weighs the centre too; the others do not.
    even = xp.reshape(combined[2, :], (k, m)) + EVEN_DIFFERENCE[accuracy].weights[p // 2] * f0
    # One unit of rounding per evaluation, and no less than the spacing of
    # the smallest numbers (eps * smallest normal). The perturbed values
    # differ from f(x) by at most the largest offset times the step's worth,
    # |value|: that bounds their size without a pass over every point.
    finfo = xp.finfo(outputs.dtype)
    eps: Any = float(finfo.eps) if output_eps is None else output_eps
    at_x, reach = _ROUNDING[accuracy]
    smallest = float(finfo.smallest_normal)
    rounding = (eps * at_x) * (xp.abs(f0) + smallest) + (eps * reach) * xp.abs(value)
    # Every output enters the even difference with a nonzero weight, so a NaN
    # or inf anywhere makes its sum so (an overflowing sum of finite values
    # only sends the batch to the entry-by-entry test).
    if math.isfinite(float(xp.sum(even))):
        nonfinite = xp.zeros_like(value, dtype=xp.bool)
    else:
        bad = ~xp.isfinite(outputs)
        nonfinite = bad[0:k, :]
        for i in range(1, p):
            nonfinite = nonfinite | bad[i * k : (i + 1) * k, :]
    return DirectionalDerivatives(
        value=value,
        truncation=xp.abs(xp.reshape(combined[1, :], (k, m))),
        rounding=rounding,
        roughness=xp.abs(even) * (1.0 / KINK_RESPONSE[accuracy]),
        nonfinite=nonfinite,
        direction=direction,
    )


def _stencil_rows(accuracy: int) -> tuple[tuple[float, ...], ...]:
    """Weights on the offsets of the order-``accuracy`` stencil of: that
    stencil, its difference from the order ``accuracy - 2`` one (the
    truncation estimate), and the even difference (its centre weight aside)."""
    offsets = CENTRAL[accuracy].offsets

    def on_offsets(stencil: Stencil) -> tuple[float, ...]:
        weight = dict(zip(stencil.offsets, stencil.weights))
        return tuple(float(weight.get(o, 0.0)) for o in offsets)

    value = CENTRAL[accuracy].weights
    lower = on_offsets(CENTRAL[accuracy - 2])
    return (
        value,
        tuple(a - b for a, b in zip(value, lower)),
        on_offsets(EVEN_DIFFERENCE[accuracy]),
    )


_STENCIL_ROWS = {accuracy: _stencil_rows(accuracy) for accuracy in EVEN_DIFFERENCE}
#: Units of rounding in a quotient: sum |w| of f at x, and the same times
#: the largest offset of |value| (see _quotients).
_ROUNDING = {
    accuracy: (
        sum(abs(w) for w in CENTRAL[accuracy].weights),
        sum(abs(w) for w in CENTRAL[accuracy].weights) * max(CENTRAL[accuracy].offsets),
    )
    for accuracy in EVEN_DIFFERENCE
}


def _weights(rows: tuple[tuple[float, ...], ...], like: Any, xp: Any) -> Any:
    """A small constant matrix in the dtype and on the device of ``like``,
    made once per dtype and device: making it costs more than using it."""
    where = device(like)
    try:
        return _constant(rows, like.dtype, where, xp)
    except TypeError:  # a namespace whose devices or dtypes do not hash
        return xp.asarray(rows, dtype=like.dtype, device=where)


@functools.lru_cache(maxsize=64)
def _constant(rows: tuple[tuple[float, ...], ...], dtype: Any, where: Any, xp: Any) -> Any:
    return xp.asarray(rows, dtype=dtype, device=where)


#: Complex-step size relative to max(1, |x|): the step never meets a
#: subtraction, so it can be tiny; it only has to stay clear of underflow.
COMPLEX_STEP = 1e-20


def complex_step_derivatives(
    evaluate: Evaluate,
    x0: Any,
    displacements: Any,
    xp: Any,
) -> DirectionalDerivatives:
    """``J @ d`` as ``Im f(x0 + i d) / |d|``-scaled, one evaluation per direction.

    Exact up to rounding for f analytic in x (no abs, max, comparisons or
    casts to real); ``evaluate`` maps ``(k, n)`` complex points to ``(k, m)``
    complex outputs. ``displacements`` should be tiny (COMPLEX_STEP scale).
    """
    unit = xp.asarray(1j, dtype=xp.complex128 if x0.dtype == xp.float64 else xp.complex64)
    points = xp.astype(x0[None, :], unit.dtype) + xp.astype(displacements, unit.dtype) * unit
    outputs = evaluate(points)
    value = xp.imag(outputs)
    eps = float(xp.finfo(value.dtype).eps)
    real = xp.real(outputs)
    zero = xp.zeros_like(value)
    return DirectionalDerivatives(
        value=value,
        truncation=zero,
        rounding=eps * xp.abs(value),
        roughness=zero,
        nonfinite=~(xp.isfinite(value) & xp.isfinite(real)),
        direction=xp.imag(points),
    )
