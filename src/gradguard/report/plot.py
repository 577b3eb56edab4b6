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
evaluations of ``f`` than a check makes, so the engine measures it only when
asked (:mod:`gradguard.engine.step_curve`); this module only draws.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import ArgumentError

if TYPE_CHECKING:
    from .report import Report

__all__ = ["plot_report"]

#: Measures the error-versus-step curve of ``f`` into a report: set by
#: :mod:`gradguard.engine.step_curve` when the engine is imported (this
#: package sits below the engine and must not import it).
measure_step_curve: Callable[..., Report] | None = None


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
