"""The seed contract: the textbook gradient check of one array.

``check_gradient(f, x, analytical_grad, epsilon=1e-7)`` returns the
centred-difference gradient and the relative error, exactly as DESIGN.md
defines them; :func:`numerical_gradient` is its numerical half, with
per-entry steps and higher-order stencils when no epsilon is given.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from array_api_compat import device

from ._errors import (
    ArgumentError,
    ArgumentTypeError,
    GradguardError,
    PrecisionError,
    PrecisionWarning,
)
from .adapters import Adapter, adapter_for
from .core import norms
from .core.differences import apply_stencil, represented_displacement
from .core.stencils import CENTRAL
from .core.steps import default_steps
from .engine.evaluation import Evaluator

__all__ = ["check_gradient", "numerical_gradient", "relative_error"]


class _Missing:
    """Default of required arguments, so that leaving one out is our error."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()

# A requested step is "swamped" when rounding changes it by more than this
# fraction: the quotient would then carry that much error before f adds any.
_STEP_TOLERANCE = 1e-3
#: Perturbed points held at once: bounds memory for large x.
_CHUNK_ENTRIES = 1 << 24


def numerical_gradient(
    f: Callable[[Any], Any],
    x: Any = _MISSING,
    epsilon: float | None = None,
    *,
    order: int = 2,
) -> Any:
    """Gradient of the scalar function ``f`` at ``x`` by centred differences.

    With ``epsilon`` given, entry i is ``(f(x + eps e_i) - f(x - eps e_i)) / (2 eps)``.
    With ``epsilon=None`` each entry gets the step ``eps_dtype**(1/(p+1)) * max(1, |x_i|)``
    for the central stencil of accuracy ``order`` p (2, 4 or 6), and the
    quotient is divided by the step as represented in floating point.

    ``x`` may be any supported array or a list of floats; the result is the
    same kind of array (a NumPy array for a list), shape, dtype and device.
    ``f`` receives arrays of that kind. If the step vanishes in ``x``'s
    precision, ``f`` is evaluated in float64 with a
    :class:`~gradguard.PrecisionWarning`, or a :class:`~gradguard.PrecisionError`
    names a step that works.
    """
    x, adapter, core_x, xp, gradient = _numerical_gradient(f, x, epsilon, order)
    return adapter.from_core(xp.astype(gradient, core_x.dtype), like=x)


def _numerical_gradient(
    f: Callable[[Any], Any], x: Any, epsilon: float | None, order: int
) -> tuple[Any, Adapter, Any, Any, Any]:
    """The gradient in the working dtype (float64 when the step needed it)."""
    if not callable(f):
        raise ArgumentTypeError(f"f: expected a callable, got {type(f).__name__}")
    if isinstance(order, bool) or order not in CENTRAL:
        raise ArgumentError(f"order: must be one of {sorted(CENTRAL)}, got {order!r}")
    x, adapter = _as_array(x, "x")
    core_x = adapter.to_core(x)
    xp = adapter.namespace(core_x)
    if not xp.isdtype(core_x.dtype, "real floating"):
        raise ArgumentTypeError(
            f"x: needs a real floating dtype, got {core_x.dtype}; convert it first "
            "(integers are not differentiable: e.g. x.astype(float64), x.double())"
        )
    n = math.prod(core_x.shape)
    if n == 0:
        raise ArgumentError("x: is empty; pass an array with at least one entry")
    if not norms.all_finite(core_x, xp):
        raise ArgumentError("x: contains NaN or inf; finite differences need a finite point")
    if epsilon is not None:
        _check_epsilon(epsilon)
    work_dtype = _working_dtype(f, x, core_x, adapter, xp, epsilon)
    x_work = xp.reshape(xp.astype(core_x, work_dtype), (-1,))
    stencil = CENTRAL[2] if epsilon is not None else CENTRAL[order]
    if epsilon is not None:
        # The seed's formula: divide by the nominal step.
        steps = xp.full((n,), float(epsilon), dtype=work_dtype, device=device(x_work))
    else:
        steps = represented_displacement(x_work, default_steps(x_work, xp, order))
    evaluate = _scalar_evaluator(f, x, adapter, core_x.shape, xp, work_dtype)
    # Columns in chunks: never an n-by-n array for large n.
    chunk = max(1, _CHUNK_ENTRIES // (n * len(stencil.offsets)))
    parts = []
    for start in range(0, n, chunk):
        count = min(n, start + chunk) - start
        eye = xp.eye(count, n, k=start, dtype=work_dtype, device=device(x_work))
        eye = eye * steps[None, :]
        points = xp.concat([x_work[None, :] + eye * float(o) for o in stencil.offsets], axis=0)
        outputs = evaluate(points)
        if not norms.all_finite(outputs, xp):
            bad = int(adapter.to_numpy(xp.argmax(xp.astype(~xp.isfinite(outputs), xp.int8))))
            raise ArgumentError(
                f"f: returned NaN or inf at a perturbed point (entry {start + bad % count} of "
                "x moved by a step); check at a point where f is finite around x, or pass "
                "a smaller epsilon"
            )
        values = {o: outputs[i * count : (i + 1) * count] for i, o in enumerate(stencil.offsets)}
        parts.append(apply_stencil(stencil, values) / steps[start : start + count])
    gradient = xp.reshape(xp.concat(parts), core_x.shape)
    return x, adapter, core_x, xp, gradient


def check_gradient(
    f: Callable[[Any], Any],
    x: Any = _MISSING,
    analytical_grad: Any = _MISSING,
    epsilon: float = 1e-7,
) -> tuple[Any, float]:
    """``(numerical_grad, relative_error)`` for a scalar ``f`` at ``x``.

    ``relative_error = ||num - ana|| / (||num|| + ||ana||)``, exactly 0.0
    when both are zero. ``x`` is never modified. ``analytical_grad`` is an
    array of the same framework as ``x`` (or a list of floats).
    """
    if not callable(f):
        raise ArgumentTypeError(f"f: expected a callable, got {type(f).__name__}")
    x, x_adapter = _as_array(x, "x")
    analytical, ana_adapter = _as_array(analytical_grad, "analytical_grad")
    if ana_adapter is not x_adapter and not isinstance(analytical_grad, (list, tuple)):
        raise ArgumentTypeError(
            f"analytical_grad: a {ana_adapter.name} array for a {x_adapter.name} x; pass it "
            f"as a {x_adapter.name} array (or a list of floats)"
        )
    if tuple(analytical.shape) != tuple(x.shape):
        raise ArgumentError(
            f"analytical_grad: shape {tuple(analytical.shape)} differs from x's "
            f"{tuple(x.shape)}; return one derivative per entry of x"
        )
    x, adapter, core_x, xp, gradient = _numerical_gradient(f, x, epsilon, 2)
    numerical = adapter.from_core(xp.astype(gradient, core_x.dtype), like=x)
    # The error of the gradient as computed (float64 when the step needed
    # it), before rounding it back to x's dtype.
    return numerical, relative_error(adapter.from_core(gradient, like=x), analytical)


def relative_error(a: Any = _MISSING, b: Any = _MISSING) -> float:
    """``||a - b|| / (||a|| + ||b||)`` for two arrays of any kinds; 0.0 when both are zero."""
    a_host = _host_float64(a, "a")
    b_host = _host_float64(b, "b")
    if a_host.shape != b_host.shape:
        raise ArgumentError(
            f"b: shape {b_host.shape} differs from a's {a_host.shape}; pass arrays of the "
            "same shape"
        )
    import array_api_compat.numpy as npx

    return norms.relative_error(a_host, b_host, npx)


# -- helpers ---------------------------------------------------------------


def _as_array(value: Any, name: str) -> tuple[Any, Adapter]:
    if value is _MISSING:
        raise ArgumentTypeError(f"{name}: missing; pass the array (or list of floats)")
    if isinstance(value, (list, tuple)) or isinstance(value, numbers.Number):
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ArgumentTypeError(
                f"{name}: could not read {type(value).__name__} as an array of floats ({exc}); "
                "pass a rectangular list of floats or an array"
            ) from exc
    layout = getattr(value, "layout", None)
    if layout is not None and "sparse" in str(layout):
        raise ArgumentTypeError(
            f"{name}: {layout} tensors are not supported; pass {name}.to_dense()"
        )
    adapter = adapter_for(value)
    if adapter is None:
        raise ArgumentTypeError(
            f"{name}: expected an array (NumPy, torch, JAX, TensorFlow, Array API) or a "
            f"list of floats, got {type(value).__name__}"
        )
    return value, adapter


def _host_float64(value: Any, name: str) -> np.ndarray:
    value, adapter = _as_array(value, name)
    host = np.asarray(adapter.to_numpy(adapter.to_core(value)))
    if not (np.issubdtype(host.dtype, np.number) or host.dtype == np.bool_):
        raise ArgumentTypeError(
            f"{name}: needs a floating (or integer) dtype, got {host.dtype}; pass numbers"
        )
    if np.iscomplexobj(host):
        return host.astype(np.complex128)
    return host.astype(np.float64)


def _check_epsilon(epsilon: Any) -> None:
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise ArgumentTypeError(f"epsilon: expected a positive float, got {type(epsilon).__name__}")
    if not math.isfinite(epsilon) or epsilon <= 0:
        raise ArgumentError(
            f"epsilon: must be positive and finite, got {epsilon!r}; "
            "try epsilon=None for steps chosen per entry"
        )


def _step_is_represented(x: Any, epsilon: float, xp: Any) -> bool:
    moved = (x + epsilon) - (x - epsilon)
    return bool(xp.all(xp.abs(moved - 2 * epsilon) <= _STEP_TOLERANCE * 2 * epsilon))


def _working_step(x: Any, xp: Any) -> float:
    """A step that works at every entry of x in its dtype."""
    largest = float(xp.max(xp.abs(x))) if math.prod(x.shape) else 1.0
    eps = float(xp.finfo(x.dtype).eps)
    return eps ** (1 / 3) * max(1.0, largest)


def _working_dtype(f: Any, x: Any, core_x: Any, adapter: Adapter, xp: Any, epsilon: Any) -> Any:
    """The dtype to evaluate in: x's own, unless the step vanishes there.

    In a dtype narrower than float64 a step below sqrt(eps) * max(1, |x|)
    leaves f's own rounding (of order eps * |f|) larger than the change it
    measures, even where x + epsilon is representable: such steps go to
    float64 as well.
    """
    if epsilon is None:
        return core_x.dtype
    narrow = core_x.dtype != xp.float64
    swamped = narrow and epsilon < float(xp.finfo(core_x.dtype).eps) ** 0.5 * max(
        1.0, float(xp.max(xp.abs(core_x)))
    )
    if not swamped and _step_is_represented(core_x, epsilon, xp):
        return core_x.dtype
    wide = xp.float64
    if core_x.dtype != wide and adapter.float64_available(x):
        x64 = xp.astype(core_x, wide)
        if _step_is_represented(x64, epsilon, xp):
            try:
                f(adapter.from_core(x64, like=x))
            except Exception:
                pass  # f refuses float64; fall through to the error below
            else:
                warnings.warn(
                    f"epsilon={epsilon:g} is too small for {core_x.dtype} at this x (lost to "
                    "rounding in x or in f); evaluating f in float64 instead",
                    PrecisionWarning,
                    stacklevel=4,
                )
                return wide
    raise PrecisionError(
        f"epsilon: {epsilon:g} is lost to rounding at this x in {core_x.dtype} "
        f"(x + epsilon - (x - epsilon) != 2*epsilon); use epsilon={_working_step(core_x, xp):.3g} "
        "or epsilon=None for a step chosen per entry"
    )


def _scalar_evaluator(
    f: Any, x: Any, adapter: Adapter, shape: tuple[int, ...], xp: Any, dtype: Any
) -> Callable[[Any], Any]:
    """``(k, n) points -> (k,) values of f`` through an :class:`Evaluator`."""

    def leaf_function(point: Any) -> list[Any]:
        value = f(point)
        if not adapter.owns(value):
            if (
                value is None
                or isinstance(value, (str, bytes, bool))
                or not (isinstance(value, numbers.Number) or hasattr(value, "__array__"))
            ):
                raise ArgumentTypeError(
                    f"f: returned {type(value).__name__}; it must return a scalar "
                    f"(a float or a 0-d {adapter.name} array)"
                )
            value = adapter.asarray_like(value, like=point)
        return [value]

    like = adapter.from_core(xp.astype(xp.reshape(adapter.to_core(x), shape), dtype), like=x)
    evaluator = Evaluator(adapter, leaf_function, [like])

    def evaluate(points: Any) -> Any:
        k = points.shape[0]
        try:
            (values,) = evaluator([xp.reshape(points, (k, *shape))])
        except GradguardError:
            raise
        except Exception as exc:
            if hasattr(exc, "add_note"):  # Python >= 3.11
                exc.add_note(
                    "gradguard: f raised this at a perturbed point (an entry of x moved by a step)"
                )
            raise
        if math.prod(values.shape) != k:
            raise ArgumentError(
                f"f: must return a scalar, got an output of shape {tuple(values.shape[1:])}; "
                "use gradguard.check for functions with array outputs"
            )
        return xp.astype(xp.reshape(values, (k,)), dtype)

    return evaluate
