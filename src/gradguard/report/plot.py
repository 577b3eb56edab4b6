"""Pictures of a check (matplotlib, the optional ``plot`` extra).

Two panels, each drawn when the report carries its data:

- **error versus step size**: one random probe ``u . J . v`` compared at
  steps from the rounding floor to far too large. Rounding makes the error
  grow like ``eps / h`` to the left, truncation like ``h**4`` to the right:
  a V whose bottom is where finite differences are trustworthy. The steps
  the check used are marked. A wrong gradient lifts the bottom of the V
  above the tolerance.
- **error / tolerance of every Jacobian entry** (full checks): below 1
  agrees, above 1 is wrong where the check decided (red), and entries it
  left undecided (a kink, noise) are orange, whatever their ratio.

A report without either shows its worst entries instead.

:func:`gradguard.check` records the entry map; the curve needs more
evaluations of ``f`` than a check makes, so the engine measures it only when
asked (:mod:`gradguard.engine.step_curve`); this module only draws.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._errors import ArgumentError

if TYPE_CHECKING:
    from .report import Report

__all__ = ["draw_report", "plot_report"]

#: Measures the error-versus-step curve of ``f`` into a report: set by
#: :mod:`gradguard.engine.step_curve` when the engine is imported (this
#: package sits below the engine and must not import it).
measure_step_curve: Callable[..., Report] | None = None


# -- drawing -----------------------------------------------------------------

#: The verdict's colour, in the title and the marks that stand for it.
COLOURS = {"pass": "tab:green", "fail": "tab:red", "inconclusive": "tab:orange"}
#: Below this a value is drawn at it (a log axis has no zero).
FLOOR = 1e-18


def plot_report(report: Report, path: str | os.PathLike[str]) -> Path:
    """Draw ``report``'s panels into ``path``; returns the path."""
    figure = draw_report(report)
    path = Path(path)
    figure.savefig(path, dpi=110)
    return path


def draw_report(report: Report) -> Any:
    """``report``'s panels as a matplotlib Figure (not attached to pyplot)."""
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
    fig = Figure(figsize=(6.8 * len(panels), 5.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, draw in zip(axes, panels):
        draw(ax, report)
    fig.suptitle(
        headline(report) + "\n" + counts_line(report),
        color=COLOURS.get(report.verdict, "black"),
        fontweight="bold",
        fontsize=11,
    )
    return fig


def headline(report: Report) -> str:
    return (
        f"gradguard {report.verdict.upper()}: {report.framework}, {report.mode} check, "
        f"relative error {report.relative_error:.3g}"
    )


def counts_line(report: Report) -> str:
    """The report's counts, and how the map's share of them adds up to them."""
    line = f"{report.wrong} wrong, {report.uncertain} undecided of {report.checked} compared"
    if not report.error_map:
        return line
    cells = map_counts(report)
    line += (
        f" = {cells['size']} Jacobian entries, the map ({cells['wrong']} wrong, "
        f"{cells['undecided']} undecided)"
    )
    rest = report.checked - cells["size"]
    rest_wrong = report.wrong - cells["wrong"]
    rest_undecided = report.uncertain - cells["undecided"]
    if report.direction == "rev" and rest > 0 and rest_wrong >= 0 and rest_undecided >= 0:
        line += (
            f"\n+ {rest} products with random cotangents u·J ({rest_wrong} wrong, "
            f"{rest_undecided} undecided)"
        )
    return line


def map_counts(report: Report) -> dict[str, int]:
    """Cells of the error map: wrong (above their tolerance and decided),
    undecided, agreeing, and all of them."""
    ratios = np.array(report.error_map, dtype=np.float64)
    undecided = _undecided_mask(report, ratios.shape)
    wrong = int(np.sum((ratios > 1) & ~undecided))
    count = int(np.sum(undecided))
    return {
        "size": int(ratios.size),
        "wrong": wrong,
        "undecided": count,
        "agree": int(ratios.size) - wrong - count,
    }


def _undecided_mask(report: Report, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for output, column in report.undecided_entries:
        if output < shape[0] and column < shape[1]:
            mask[output, column] = True
    return mask


def _draw_step_curve(ax: Any, report: Report) -> None:
    steps, errors, tolerances = _curve_with_chosen(report)
    ax.loglog(steps, np.maximum(errors, FLOOR), "o-", color="tab:blue", markersize=4,
              label="|error| of the probe")  # fmt: skip
    ax.loglog(steps, np.maximum(tolerances, FLOOR), "--", color="gray", label="its tolerance")
    marks = list(np.maximum(errors, FLOOR))
    if report.chosen_step:
        h, e, t = report.chosen_step[:3]
        colour = COLOURS.get(report.verdict, "black")
        ax.axvline(h, color=colour, alpha=0.3, linewidth=6, label=f"the check's step, h = {h:.2g}")
        ax.loglog([h], [max(t, FLOOR)], "_", color="black", markersize=18, markeredgewidth=2,
                  label=f"tolerance there: {t:.2g}", zorder=5)  # fmt: skip
        ax.loglog([h], [max(e, FLOOR)], "*", color=colour, markersize=16, zorder=6,
                  markeredgecolor="black", label=f"error there: {e:.2g}")  # fmt: skip
        marks += [max(e, FLOOR), max(t, FLOOR)]
    ax.set_xlabel("step h (entry i moves by h · max(1, |xᵢ|) · vᵢ)")
    ax.set_ylabel("|analytical - numerical|, relative to the terms' size")
    ax.set_title("error versus step size (one random probe u·J·v)")
    ax.grid(True, which="major", alpha=0.3)
    # Room for every error and for the tolerance at the check's step: the two
    # are what the picture compares.
    ax.set_ylim(max(FLOOR, min(marks) / 30), max(marks) * 30)
    ax.text(0.02, 0.03, "rounding ~ eps/h", transform=ax.transAxes, fontsize=9, color="dimgray")
    ax.text(0.98, 0.03, "truncation ~ h⁴", transform=ax.transAxes, fontsize=9, color="dimgray",
            ha="right")  # fmt: skip
    if report.verdict == "inconclusive" and report.reasons:
        ax.text(0.5, 0.97, "undecided: " + _short(report.reasons[0]), transform=ax.transAxes,
                fontsize=8, color="tab:orange", ha="center", va="top", wrap=True)  # fmt: skip
    # Below the panels: inside, it would cover the curve or the corner labels.
    ax.figure.legend(*ax.get_legend_handles_labels(), fontsize=8, loc="outside lower left", ncol=3)


def _curve_with_chosen(report: Report) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The curve's points with the check's own step among them, so that the
    line passes through the point marked at that step."""
    points = list(report.step_curve)
    if report.chosen_step:
        points.append(tuple(report.chosen_step[:3]))  # type: ignore[arg-type]
    points.sort(key=lambda p: p[0])
    steps, errors, tolerances = (np.array(c, dtype=np.float64) for c in zip(*points))
    return steps, errors, tolerances


def _short(text: str, width: int = 70) -> str:
    head = text.split(" (", 1)[0].split(": ", 1)[0]
    return head if len(head) <= width else head[: width - 3] + "..."


def _draw_error_map(ax: Any, report: Report) -> None:
    from matplotlib.colors import ListedColormap, TwoSlopeNorm
    from matplotlib.patches import Patch

    ratios = np.array(report.error_map, dtype=np.float64)
    with np.errstate(divide="ignore"):
        logs = np.log10(np.maximum(ratios, 1e-6))
    logs = np.where(np.isinf(logs) & (logs > 0), 8.0, logs)
    top = max(2.0, float(np.max(logs)))
    norm = TwoSlopeNorm(vmin=-6.0, vcenter=0.0, vmax=top)
    undecided = _undecided_mask(report, ratios.shape)
    grid, xlabel, ylabel, columns = _layout(report, logs)
    held = _layout(report, undecided.astype(np.float64))[0] > 0
    image = ax.imshow(grid, cmap="RdYlGn_r", norm=norm, aspect="auto", interpolation="nearest")
    # Undecided cells in the verdict's undecided colour, over whatever ratio they have.
    overlay = np.ma.masked_array(np.ones_like(grid), mask=~held)
    ax.imshow(overlay, cmap=ListedColormap(["tab:orange"]), aspect="auto",
              interpolation="nearest", vmin=0, vmax=1)  # fmt: skip
    cbar = ax.figure.colorbar(image, ax=ax)
    cbar.set_label("log10(|error| / tolerance): above 0 exceeds it")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _entry_ticks(ax, grid.shape, columns)
    counts = map_counts(report)
    ax.set_title(
        f"error / tolerance per Jacobian entry: {counts['wrong']} wrong, "
        f"{counts['undecided']} undecided of {counts['size']}",
        fontsize=10,
    )
    legend = [
        Patch(color=_colour_of(norm, top), label=f"wrong: above tolerance ({counts['wrong']})"),
        Patch(color="tab:orange", label=f"undecided ({counts['undecided']})"),
        Patch(color=_colour_of(norm, -3.0), label=f"agrees ({counts['agree']})"),
    ]
    ax.figure.legend(handles=legend, fontsize=8, loc="outside lower right", ncol=3)


def _colour_of(norm: Any, value: float) -> Any:
    from matplotlib import colormaps

    return colormaps["RdYlGn_r"](norm(value))


def _entry_ticks(ax: Any, shape: tuple[int, ...], columns: list[str] | None) -> None:
    """Every entry's index when there is room; the arguments' names at their blocks."""
    rows, cols = shape
    if rows <= 24:
        ax.set_yticks(range(rows))
    if columns is None:  # a matrix drawn in its own shape
        if cols <= 24:
            ax.set_xticks(range(cols))
        return
    if cols <= 30:
        ax.set_xticks(range(cols), columns, rotation=0 if cols <= 8 else 90, fontsize=7)
    edges = [i for i, name in enumerate(columns) if i == 0 or _base(name) != _base(columns[i - 1])]
    for start in edges[1:]:
        ax.axvline(start - 0.5, color="black", linewidth=1.5)
    if cols > 30:  # too many to name one by one: each argument's first entry
        ax.set_xticks(edges, [columns[i] for i in edges], rotation=90, fontsize=7)


def _base(name: str) -> str:
    return name.split("[", 1)[0]


def _layout(report: Report, logs: np.ndarray) -> tuple[np.ndarray, str, str, list[str] | None]:
    """A scalar function of one matrix is drawn in the matrix's own shape;
    anything else as outputs x inputs, each column named by its entry."""
    args = report.arguments
    if logs.shape[0] == 1 and len(args) == 1 and len(args[0].shape) == 2:
        name = args[0].name
        return logs.reshape(args[0].shape), f"{name}: column", f"{name}: row", None
    columns = []
    for a in args:
        shape = tuple(a.shape)
        size = int(np.prod(shape)) if shape else 1
        for flat in range(size):
            index = np.unravel_index(flat, shape) if shape else ()
            columns.append(a.name + ("[" + ", ".join(str(int(i)) for i in index) + "]"))
    if len(columns) != logs.shape[1]:  # complex entries, or arguments not all drawn
        columns = [str(i) for i in range(logs.shape[1])]
    names = ", ".join(a.name for a in args)
    return logs, f"input entry ({names})", "output entry (flattened index)", columns


def _draw_worst(ax: Any, report: Report) -> None:
    from matplotlib.patches import Patch

    worst = list(report.worst)
    if not worst:
        ax.text(0.5, 0.5, "nothing compared", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    ratios = np.array([min(m.ratio, 1e12) for m in worst])
    status = {"wrong": "tab:red", "uncertain": "tab:orange"}
    colours = [status.get(m.status, "tab:green") for m in worst]
    labels = [m.where() for m in worst]
    y = np.arange(len(worst))[::-1]
    ax.barh(y, np.maximum(ratios, 1e-6), color=colours, log=True)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("|error| / tolerance (above 1 exceeds it)")
    ax.set_title("worst compared entries")
    shown = [("wrong", "tab:red"), ("undecided", "tab:orange"), ("agrees", "tab:green")]
    kinds = {"wrong": "wrong", "uncertain": "undecided"}
    present = {kinds.get(m.status, "agrees") for m in worst}
    ax.legend(
        handles=[Patch(color=c, label=k) for k, c in shown if k in present],
        fontsize=8,
        loc="lower right",
    )
