"""The error-versus-step curve of a check: one random probe ``u . J . v``
measured at steps from the rounding floor to far too large.

Rounding makes the error grow like ``eps / h`` to the left, truncation like
``h**4`` to the right: a V whose bottom is where finite differences are
trustworthy, and a wrong gradient lifts that bottom above the tolerance. It
needs more evaluations of ``f`` than a check makes, so it is measured only
when a picture is asked for (:meth:`gradguard.Report.plot` with ``f``, or
``gradguard check --plot``); :mod:`gradguard.report.plot` draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .. import _tree
from .._errors import GradguardError
from .._frameworks import framework
from ..adapters import adapter_for
from ..core import verdict
from ..core.differences import directional_derivatives
from ..report import plot as report_plot
from ..report.report import Report
from .host_vjp import as_float64, host_vjp

__all__ = ["add_plot_data", "step_curve"]

#: Steps per decade of the error-versus-step curve.
PER_DECADE = 2


def add_plot_data(report: Report, f: Callable[..., Any], *args: Any, **options: Any) -> Report:
    """``report`` with its picture fields filled from ``f`` at ``args`` (the
    same function, arguments and options as given to the check)."""
    values: dict[str, Any] = {}
    if not report.step_curve:
        curve = step_curve(report, f, *args, **options)
        if curve is not None:
            values.update(curve)
    return replace(report, **values) if values else report


def step_curve(
    report: Report, f: Callable[..., Any], *args: Any, **options: Any
) -> dict[str, Any] | None:
    """The error-versus-step curve of one random probe, or None when ``f``'s
    arrays are of no framework gradguard can convert from NumPy."""
    wrt = options.get("wrt")
    selected = _selected(wrt, len(args))
    leaves, positions, treedef = _leaves(args)
    adapters = [adapter_for(leaf) for leaf in leaves]
    kinds = {a.name for a in adapters if a is not None}
    if len(kinds) != 1 or next(iter(kinds)) not in ("numpy", "torch", "jax", "tensorflow"):
        return None
    fw = framework(next(iter(kinds)))
    adapter = next(a for a in adapters if a is not None)
    host = {i: fw.to_numpy(leaf) for i, leaf in enumerate(leaves) if adapters[i] is not None}
    diff = [i for i, a in host.items() if positions[i] in selected and a.dtype.kind == "f"]
    if not diff:
        return None
    wide = "float64" in report.precision
    dtypes = [np.float64 if wide else host[i].dtype for i in diff]
    eps = max(float(np.finfo(d).eps) for d in dtypes)
    x0 = np.concatenate([host[i].astype(np.float64).ravel() for i in diff])
    sizes = [host[i].size for i in diff]
    shapes = [host[i].shape for i in diff]
    rng = np.random.default_rng(report.seed + 15485863)
    v = rng.standard_normal(x0.shape)

    rule = {k: options[k] for k in ("grad", "vjp") if options.get(k) is not None}

    def call(flat: np.ndarray) -> list[np.ndarray]:
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        full = list(leaves)
        for i, part, shape, dtype in zip(diff, parts, shapes, dtypes):
            # On the original's device: f may combine it with arrays of its
            # own there (a CUDA weight, say).
            rebuilt = fw._asarray(part.reshape(shape).astype(dtype))
            full[i] = adapter.from_core(rebuilt, like=leaves[i])
        with fw.float64() if wide else _null():
            out = f(*_tree.unflatten(treedef, full))
        outs = _tree.leaves(out)
        return [as_float64(fw.to_numpy(o)).ravel() for o in outs]

    with fw.float64() if wide else _null():
        outputs = call(x0)
        out_leaves, _, out_tree = _tree.flatten(f(*_tree.unflatten(treedef, leaves)))
        shapes_out = [np.shape(fw.to_numpy(o)) for o in out_leaves]
        m = sum(o.size for o in outputs)
        cot_host = rng.standard_normal(m) if m > 1 else np.ones(1)
        splits = np.split(cot_host, np.cumsum([o.size for o in outputs])[:-1])
        cotangents = {
            str(j): c.reshape(shape) for j, (c, shape) in enumerate(zip(splits, shapes_out))
        }
        try:
            grads = host_vjp(fw, f, rule, tuple(args), selected, out_tree, cotangents)
        except GradguardError:
            return None
    g = np.concatenate([np.asarray(a).real.ravel() for a in grads.values()])
    if g.shape != x0.shape:
        return None

    def evaluate(points: np.ndarray) -> np.ndarray:
        return np.stack([np.concatenate(call(p)) for p in points])

    exponents = np.arange(
        math.floor(math.log10(eps)) + 1, 0.5 / PER_DECADE, 1.0 / PER_DECADE, dtype=np.float64
    )
    steps = 10.0**exponents
    # The check's steps are h * max(1, |x_i|) with h = eps**(1/3): the curve
    # scales the same direction by every h, so the check's point lies on it.
    chosen = eps ** (1.0 / 3.0)
    direction = v * np.maximum(np.abs(x0), 1.0)
    displacements = np.concatenate([steps, [chosen]])[:, None] * direction[None, :]
    f0 = np.concatenate(outputs)
    dd = directional_derivatives(evaluate, x0, displacements, f0, _numpy_namespace())
    numerical = dd.value @ cot_host
    analytical = dd.direction @ g
    # Relative to the size of the terms summed (as the check's probes do):
    # unlike |analytical| + |numerical| it does not saturate at 1 when the
    # two differ in sign, nor blow up when the sum cancels.
    scale = np.sqrt(((dd.direction * g) ** 2).sum(axis=1)) + np.sqrt(
        ((dd.value * cot_host) ** 2).sum(axis=1)
    )
    truncation = np.sqrt(((dd.truncation * cot_host) ** 2).sum(axis=1))
    rounding = (np.abs(cot_host) * dd.rounding).sum(axis=1)
    tolerance = _tolerance(truncation, rounding, scale, eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_error = np.where(scale > 0, np.abs(numerical - analytical) / scale, 0.0)
        rel_tol = np.where(scale > 0, tolerance / scale, 0.0)
    points = tuple((float(h), float(e), float(t)) for h, e, t in zip(steps, rel_error, rel_tol))
    return {
        "step_curve": points,
        "chosen_step": (chosen, float(rel_error[-1]), float(rel_tol[-1])),
    }


def _tolerance(truncation: Any, rounding: Any, scale: Any, eps: float) -> Any:
    """The check's tolerance for one probe (see :mod:`gradguard.core.verdict`)."""
    return (
        verdict.SAFETY * (truncation + verdict.ROUNDING * rounding)
        + verdict.ANALYTICAL * eps * 2 * scale
    )


def _selected(wrt: Any, count: int) -> set[int]:
    if wrt is None:
        return set(range(count))
    items = [wrt] if isinstance(wrt, int) else list(wrt)
    return {int(p) % count for p in items}


def _leaves(args: tuple[Any, ...]) -> tuple[list[Any], list[int], Any]:
    leaves: list[Any] = []
    positions: list[int] = []
    for p, arg in enumerate(args):
        arg_leaves = _tree.leaves(arg)
        leaves += arg_leaves
        positions += [p] * len(arg_leaves)
    _, _, treedef = _tree.flatten(tuple(args))
    return leaves, positions, treedef


def _numpy_namespace() -> Any:
    import array_api_compat.numpy

    return array_api_compat.numpy


def _null() -> Any:
    import contextlib

    return contextlib.nullcontext()


# The report draws; the engine measures. Report.plot(path, f, *args) reaches
# this through the report package's hook, since report/ must not import the engine.
report_plot.measure_step_curve = add_plot_data
