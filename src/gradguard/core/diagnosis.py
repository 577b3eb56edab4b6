"""Recognise the shapes of common mistakes in a failing comparison.

Works on aggregates that the comparison keeps anyway (inner products, per-row
sums, the per-argument tallies) and, for small problems, the two Jacobians.
Each finding is one plain sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .verdict import Tally

__all__ = ["Evidence", "diagnose"]

#: Relative residual under which a pattern (factor, transpose) "explains" the data.
FIT = 1e-3


@dataclass
class Evidence:
    tally: Tally
    #: (name, tally) per differentiated argument.
    arguments: list[tuple[str, Tally]]
    mode: str
    #: Tallies of the reverse ("rev") and forward ("fwd") comparisons run.
    directions: dict[str, Tally] = field(default_factory=dict)
    one_hot_wrong: int = 0
    dense_wrong: int = 0
    #: Every VJP came back the same (and nonzero) whatever cotangent it got.
    cotangent_ignored: bool = False
    #: Tally of the Jacobian entries alone (full mode), for counting.
    entries: Tally | None = None
    #: Scale of each one-hot cotangent, and per output row <ana, num> and
    #: <num, num> (full reverse mode only).
    row_scales: Any = None
    row_cross: Any = None
    row_num_sq: Any = None
    #: "numerical" / "analytical" Jacobians (m, n), when small enough to keep.
    jacobians: dict[str, Any] = field(default_factory=dict)
    in_widths: list[int] = field(default_factory=list)
    out_widths: list[int] = field(default_factory=list)
    in_names: list[str] = field(default_factory=list)


def diagnose(evidence: Evidence, xp: Any) -> tuple[str, ...]:
    t = evidence.tally
    found: list[str] = []
    failing = [d for d, tally in evidence.directions.items() if tally.wrong]
    if len(evidence.directions) == 2 and len(failing) == 1:
        good = "reverse-mode (VJP)" if failing[0] == "fwd" else "forward-mode (JVP)"
        bad = "forward-mode (JVP)" if failing[0] == "fwd" else "reverse-mode (VJP)"
        found.append(f"the {bad} rule disagrees while the {good} one agrees")
        t = evidence.directions[failing[0]]
    if t.analytical_nonfinite:
        found.append(
            f"the analytical derivative is NaN or inf in {t.analytical_nonfinite} compared "
            "value(s) where f is finite nearby (a division by zero, a log of 0 or an overflow "
            "in the rule)"
        )
        return tuple(found)
    if t.ana_sq == 0.0 and t.num_sq > 0.0:
        found.append(
            "the analytical derivative is zero everywhere while finite differences are "
            "not: the gradient does not flow (a detached tensor, stop_gradient, or a rule "
            "that returns zeros)"
        )
        return tuple(found)
    cotangent = _cotangent_pattern(evidence, xp)
    if cotangent:
        found.append(cotangent)
    wrong_args = [(name, tally) for name, tally in evidence.arguments if tally.wrong]
    right_args = [name for name, tally in evidence.arguments if not tally.wrong and tally.checked]
    if not cotangent:
        factor = _constant_factor(t)
        if factor is not None:
            found.append(_factor_text(factor, ""))
        elif right_args:
            for name, tally in wrong_args:
                if tally.ana_sq == 0.0 and tally.num_sq > 0.0:
                    found.append(
                        f"the derivative for {name} is zero everywhere while finite "
                        "differences are not: its gradient does not flow"
                    )
                    continue
                factor = _constant_factor(tally)
                if factor is not None:
                    found.append(_factor_text(factor, name))
    found.extend(_transposed(evidence, xp))
    if evidence.dense_wrong and not evidence.one_hot_wrong and not cotangent:
        found.append(
            "one-hot cotangents agree but random ones do not: the backward is not linear "
            "in the incoming gradient (it uses only part of it, e.g. its first entry or "
            "its sum)"
        )
    # A shape explains the whole error; otherwise say how much is wrong.
    shaped = bool(found)
    if wrong_args and right_args:
        names = ", ".join(name for name, _ in wrong_args)
        found.append(
            f"only {names} {'is' if len(wrong_args) == 1 else 'are'} wrong; "
            f"{', '.join(right_args)} {'agrees' if len(right_args) == 1 else 'agree'}"
        )
    counted = evidence.entries or t
    if 0 < counted.wrong < counted.active and evidence.mode == "full" and not shaped:
        found.append(
            f"only some entries are wrong: {counted.wrong} of the {counted.active} nonzero "
            "Jacobian entries "
            "(see the worst entries: a branch, a term or an index missing for part of "
            "the input)"
        )
    if not found:
        found.append(
            "the analytical derivative differs from finite differences with no simple "
            "pattern (a missing term, e.g. of the product or chain rule)"
        )
    return tuple(found)


def _factor_text(factor: float, name: str) -> str:
    subject = f"the derivative for {name}" if name else "the analytical derivative"
    if abs(factor + 1.0) < FIT:
        return f"sign flipped: {subject} is minus the numerical one"
    return f"off by a constant factor: {subject} is {factor:.4g} times the numerical one"


def _constant_factor(t: Tally) -> float | None:
    """``r`` if analytical ~ r * numerical over everything compared."""
    if t.num_sq == 0.0 or t.ana_sq == 0.0:
        return None
    if not all(math.isfinite(v) for v in (t.num_sq, t.ana_sq, t.cross)):
        return None  # sums past the top of float64: no factor to read off
    r = t.cross / t.num_sq
    residual_sq = max(0.0, t.ana_sq - t.cross * t.cross / t.num_sq)
    if math.sqrt(residual_sq) <= FIT * math.sqrt(t.ana_sq) and abs(r - 1.0) > FIT:
        return r
    return None


def _cotangent_pattern(e: Evidence, xp: Any) -> str:
    """The rule returns the same whatever the cotangent, or rows scaled by c_j
    come back scaled by 1/c_j (ignored) or c_j (squared)."""
    ignored = (
        "ignores the incoming gradient: the backward returns the same result whatever "
        "cotangent (grad_output) it is given; multiply by it"
    )
    if e.cotangent_ignored:
        return ignored
    if e.row_scales is None or e.row_cross is None:
        return ""
    used = e.row_num_sq > 0
    if not bool(xp.any(used)):
        return ""
    ones = xp.ones_like(e.row_cross)
    ratio = xp.where(used, e.row_cross / xp.where(used, e.row_num_sq, ones), ones)
    c = e.row_scales
    inverse = xp.where(used, xp.abs(ratio * c - 1.0), xp.zeros_like(ratio))
    if float(xp.max(inverse)) < FIT:
        return ignored
    squared = xp.where(used, xp.abs(ratio / c - 1.0), xp.zeros_like(ratio))
    if float(xp.max(squared)) < FIT:
        return (
            "not linear in the incoming gradient: the result scales with the square of "
            "the cotangent (it is applied twice)"
        )
    return ""


def _transposed(e: Evidence, xp: Any) -> list[str]:
    ana = e.jacobians.get("analytical")
    num = e.jacobians.get("numerical")
    if ana is None or num is None:
        return []
    found = []
    row = 0
    out_ranges = []
    for width in e.out_widths:
        out_ranges.append((row, row + width))
        row += width
    col = 0
    for name, width in zip(e.in_names, e.in_widths):
        for lo, hi in out_ranges:
            if hi - lo != width or width < 2:
                continue
            a = ana[lo:hi, col : col + width]
            n = num[lo:hi, col : col + width]
            scale = float(xp.sum(xp.abs(a))) + float(xp.sum(xp.abs(n)))
            if scale == 0.0:
                continue
            straight = float(xp.sum(xp.abs(a - n))) / scale
            swapped = float(xp.sum(xp.abs(a - xp.matrix_transpose(n)))) / scale
            if swapped < FIT < straight:
                found.append(
                    f"transposed: the derivative for {name} matches the transpose of the "
                    "numerical Jacobian (a missing or extra transpose in the rule)"
                )
        col += width
    return found
