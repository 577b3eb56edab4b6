"""Pictures of a check (matplotlib, the optional ``plot`` extra).

Two panels, each drawn when the report carries its data:

- **error versus step size**: one random probe ``u . J . v`` compared at
  steps from the rounding floor to far too large. Rounding makes the error
  grow like ``eps / h`` to the left, truncation like ``h**4`` to the right:
  a V whose bottom is where finite differences are trustworthy. The steps
  the check used are marked. A wrong gradient lifts the bottom of the V
  above the tolerance.
- **error / tolerance of every Jacobian entry** (full checks): below 1
  agrees, above 1 is wrong; the wrong entries stand out in red.

A report without either shows its worst entries instead.

:func:`gradguard.check` records the entry map; the curve needs more
evaluations of ``f`` than a check makes, so :func:`add_plot_data` computes
it from ``f``: one probe along a fixed random direction at a range of steps
(:func:`gradguard.core.differences.directional_derivatives`).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _tree
from ._errors import ArgumentError, GradguardError

if TYPE_CHECKING:
    from ._report import Report

__all__ = ["add_plot_data", "plot_report"]

#: Steps per decade of the error-versus-step curve.
PER_DECADE = 2


# -- data ----------------------------------------------------------------------


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
    from ._compare import _float64, _vjp
    from ._frameworks import framework
    from .adapters import adapter_for
    from .core.differences import directional_derivatives

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
        return [_float64(fw.to_numpy(o)).ravel() for o in outs]

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
            grads = _vjp(fw, f, rule, tuple(args), selected, out_tree, cotangents)
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
    from .core import verdict

    return (
        verdict.SAFETY * (truncation + verdict.ROUNDING * rounding)
        + verdict.ANALYTICAL * eps * 2 * scale
    )


# -- drawing -----------------------------------------------------------------


def plot_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """Draw ``report``'s panels into ``path``; returns the path."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ArgumentError(
            "plot: matplotlib is not installed; pip install 'gradguard[plot]'"
        ) from None
    panels: list[Callable[[Any, Report], None]] = []
    if report.step_curve:
        panels.append(_draw_step_curve)
    panels.append(_draw_error_map if report.error_map else _draw_worst)
    fig = Figure(figsize=(6.4 * len(panels), 4.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, draw in zip(axes, panels):
        draw(ax, report)
    colour = {"pass": "tab:green", "fail": "tab:red", "inconclusive": "tab:orange"}
    # One line across two panels, two lines over one.
    sep = ", " if len(panels) > 1 else "\n"
    fig.suptitle(
        f"gradguard {report.verdict.upper()}: {report.framework}, {report.mode} check{sep}"
        f"relative error {report.relative_error:.3g}, {report.wrong} wrong / "
        f"{report.uncertain} undecided of {report.checked}",
        color=colour.get(report.verdict, "black"),
        fontweight="bold",
    )
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path


def _draw_step_curve(ax: Any, report: Report) -> None:
    steps, errors, tolerances = (np.array(c) for c in zip(*report.step_curve))
    floor = 1e-18
    ax.loglog(
        steps,
        np.maximum(errors, floor),
        "o-",
        color="tab:blue",
        label="relative error of the probe",
    )
    ax.loglog(steps, np.maximum(tolerances, floor), "--", color="gray", label="tolerance")
    if report.chosen_step:
        h, e, _ = report.chosen_step[:3]
        ax.axvline(h, color="tab:green", alpha=0.5, linewidth=4)
        ax.loglog(
            [h],
            [max(e, floor)],
            "*",
            color="tab:red" if report.verdict == "fail" else "tab:green",
            markersize=16,
            label=f"the check's step, h = {h:.2g}",
            zorder=5,
        )
    ax.set_xlabel("step h (entry i moves by h · max(1, |xᵢ|) · vᵢ)")
    ax.set_ylabel("|analytical - numerical|, relative to the terms' size")
    ax.set_title("error versus step size (one random probe u·J·v)")
    ax.grid(True, which="major", alpha=0.3)
    ymin = max(floor, float(np.min(np.maximum(errors, floor))) / 10)
    ax.set_ylim(bottom=ymin)
    ax.text(0.02, 0.03, "rounding ~ eps/h", transform=ax.transAxes, fontsize=9, color="dimgray")
    ax.text(
        0.98,
        0.03,
        "truncation ~ h⁴",
        transform=ax.transAxes,
        fontsize=9,
        color="dimgray",
        ha="right",
    )
    ax.legend(fontsize=8, loc="best")


def _draw_error_map(ax: Any, report: Report) -> None:
    from matplotlib.colors import TwoSlopeNorm

    ratios = np.array(report.error_map, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logs = np.log10(np.maximum(ratios, 1e-6))
    logs = np.where(np.isinf(logs) & (logs > 0), 8.0, logs)
    top = max(2.0, float(np.max(logs)))
    norm = TwoSlopeNorm(vmin=-6.0, vcenter=0.0, vmax=top)
    grid, xlabel, ylabel, ticks = _layout(report, logs)
    image = ax.imshow(grid, cmap="RdYlGn_r", norm=norm, aspect="auto", interpolation="nearest")
    cbar = ax.figure.colorbar(image, ax=ax)
    cbar.set_label("log10(|error| / tolerance): above 0 is wrong")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    rows, cols = grid.shape
    if ticks:  # several arguments: name each one's block of columns
        edges = [start for start, _ in ticks] + [cols]
        ax.set_xticks(
            [(a + b - 1) / 2 for a, b in itertools.pairwise(edges)], [n for _, n in ticks]
        )
        for start in edges[1:-1]:
            ax.axvline(start - 0.5, color="black", linewidth=1.5)
    elif cols <= 24:
        ax.set_xticks(range(cols))
    if rows <= 24:
        ax.set_yticks(range(rows))
    wrong = int(np.sum(ratios > 1))
    ax.set_title(f"error / tolerance per Jacobian entry ({wrong} of {ratios.size} above 1)")


def _layout(report: Report, logs: np.ndarray) -> tuple[np.ndarray, str, str, list[tuple[int, str]]]:
    """A scalar function of one matrix is drawn in the matrix's own shape;
    anything else as outputs x inputs with the arguments side by side."""
    args = report.arguments
    if logs.shape[0] == 1 and len(args) == 1 and len(args[0].shape) == 2:
        return logs.reshape(args[0].shape), f"{args[0].name}: column", f"{args[0].name}: row", []
    ticks = []
    offset = 0
    for a in args:
        if len(args) > 1:
            ticks.append((offset, a.name))
        offset += int(np.prod(a.shape)) if a.shape else 1
    names = ", ".join(a.name for a in args)
    return logs, f"input entry ({names}, flattened)", "output entry (flattened)", ticks


def _draw_worst(ax: Any, report: Report) -> None:
    worst = list(report.worst)
    if not worst:
        ax.text(0.5, 0.5, "nothing compared", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ratios = np.array([min(m.ratio, 1e12) for m in worst])
    colours = [
        {"wrong": "tab:red", "uncertain": "tab:orange"}.get(m.status, "tab:green") for m in worst
    ]
    labels = [m.where() for m in worst]
    y = np.arange(len(worst))[::-1]
    ax.barh(y, np.maximum(ratios, 1e-6), color=colours, log=True)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("|error| / tolerance (above 1 is wrong)")
    ax.set_title("worst compared entries")


# -- helpers -------------------------------------------------------------------


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
