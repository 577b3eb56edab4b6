"""Recognise the shapes of common mistakes in a failing comparison.

Works on aggregates that the comparison keeps anyway (inner products, per-row
sums, the per-argument tallies) and, for small problems, the two Jacobians.
Each finding is one plain sentence, and claims only what the evidence shows:

- a constant factor is read off everything compared, one-hot and random
  dense cotangents together, so a linear rule off by 2 is never mistaken for
  a cotangent applied twice (the one-hot rows are scaled by +-2 or +-0.5:
  with one output row, a factor of 2 and a squared cotangent of scale 2 look
  alike there; the dense cotangents tell them apart);
- a pattern in the cotangent (ignored, squared) is named only where no
  constant factor explains the data;
- random probes see a few projections of the Jacobian: they name a factor
  only where it explains the error itself (not merely the values) in every
  projection, and otherwise say that the error is somewhere, to be located
  in full mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .verdict import Tally

__all__ = ["Evidence", "diagnose"]

#: Relative residual under which a pattern (factor, transpose) "explains" the data.
FIT = 1e-3
#: Fewest compared values from which probes may read a constant factor: with
#: one value, any error is "a factor".
PROBE_VALUES = 2
#: The fallback that full mode gives when no shape explains the error.
NO_PATTERN = (
    "the analytical derivative differs from finite differences with no simple "
    "pattern (a missing term, e.g. of the product or chain rule)"
)


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
    #: Shape of each differentiated argument (for a gradient returned
    #: transposed); empty when unknown.
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)
    #: Arguments whose analytical gradient was exactly zero in every probe
    #: (probe mode, whose comparisons sum over the arguments).
    zero_arguments: list[str] = field(default_factory=list)


def diagnose(evidence: Evidence, xp: Any) -> tuple[str, ...]:
    t = evidence.tally
    probe = evidence.mode == "probe"
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
    if probe:
        return tuple(found + _probe_findings(evidence, t))
    wrong_args = [(name, tally) for name, tally in evidence.arguments if tally.wrong]
    right_args = [name for name, tally in evidence.arguments if not tally.wrong and tally.checked]
    # A factor over everything compared, one-hot and dense cotangents alike,
    # makes the rule linear in its cotangent: no cotangent pattern then.
    factor = None if evidence.cotangent_ignored else _constant_factor(t)
    cotangent = "" if factor is not None else _cotangent_pattern(evidence, xp)
    if cotangent:
        found.append(cotangent)
    elif factor is not None:
        found.append(_factor_text(factor, ""))
    elif len(evidence.arguments) > 1:
        found.extend(_argument_findings(wrong_args))
    found.extend(_transposed(evidence, xp))
    found.extend(_argument_transposed(evidence, xp))
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
            f"{_some(right_args)} {'agrees' if len(right_args) == 1 else 'agree'}"
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
        found.append(NO_PATTERN)
    return tuple(found)


def _argument_findings(wrong_args: list[tuple[str, Tally]]) -> list[str]:
    """Per wrong argument, a zero gradient or a constant factor (the
    argument's own one-hot and dense comparisons, which split by argument)."""
    found = []
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
    return found


def _probe_findings(e: Evidence, t: Tally) -> list[str]:
    """What random probes show: a few projections u . J . v of the Jacobian,
    summed over every argument, and the entries that splitting a
    disagreeing probe located (``e.entries``). A factor is named only where
    it explains the error itself in every value compared, of which at least
    PROBE_VALUES are independent (a single wrong entry makes the error a
    random multiple of each projection: it fits a factor only by chance,
    and with the error's own precision hardly ever; but the two cotangents
    of a probe of a scalar f are one projection scaled, so they fit any
    error). Otherwise the error is somewhere, or at the entries located."""
    found = []
    if e.cotangent_ignored:
        found.append(_IGNORED)
    if e.zero_arguments:
        names = ", ".join(e.zero_arguments)
        found.append(
            f"the gradient for {names} is exactly zero in every probe: if f depends on "
            f"{'it' if len(e.zero_arguments) == 1 else 'them'}, the gradient does not flow"
        )
    if found:
        return found
    located = e.entries if e.entries is not None and e.entries.checked else None
    probes = _less(t, located) if located is not None else t
    compared = f"the {probes.checked} random projections compared"
    independent = _independent_projections(e, probes.checked) + (located.checked if located else 0)
    if independent >= PROBE_VALUES:
        factor = _probe_factor(probes, located)
        if factor is not None:
            with_entries = ""
            if located is not None:
                count = located.checked
                with_entries = f" and at the {count} entr{'y' if count == 1 else 'ies'} located"
            return [
                f"{_factor_text(factor, '')} in each of {compared}{with_entries} (probe "
                "mode; mode='full' checks every entry)"
            ]
    if located is not None and located.wrong:
        return [_located_text(e, probes, located)]
    locate = "rerun with mode='full' to locate it"
    loose = _constant_factor(probes) if independent >= PROBE_VALUES else None
    if loose is not None:
        return [
            f"the analytical derivative is wrong somewhere (relative error "
            f"{probes.relative_error:.3g}): {compared} are about {loose:.4g} times the "
            "numerical ones, as a constant factor or a few wrong entries would make "
            f"them; {locate}"
        ]
    return [
        f"the analytical derivative is wrong somewhere (relative error "
        f"{probes.relative_error:.3g} in {compared}; probes cannot locate it): {locate}"
    ]


def _located_text(e: Evidence, probes: Tally, located: Tally) -> str:
    """The entries that splitting the probe located, by argument."""
    names = [name for name, tally in e.arguments if tally.wrong]
    count = located.wrong
    where = f", in {', '.join(names)}" if names else ""
    return (
        f"the analytical derivative is wrong somewhere (relative error "
        f"{probes.relative_error:.3g} in the {probes.checked} random projections compared): "
        f"splitting the probe located {count} wrong entr{'y' if count == 1 else 'ies'}{where} "
        "(see the worst entries); other entries were not compared one by one: "
        "mode='full' checks every entry"
    )


def _probe_factor(probes: Tally, located: Tally | None) -> float | None:
    """A factor that explains the error of the projections and, where
    entries were located, theirs too, the same: the entries' values are far
    larger than a projection's error, so one fit over both would hide the
    projections' misfit."""
    factor = _constant_factor(probes, explains_error=True)
    if factor is None or located is None:
        return factor
    own = _constant_factor(located, explains_error=True)
    if own is None or abs(own - factor) > FIT * abs(factor):
        return None
    return factor


def _less(t: Tally, part: Tally) -> Tally:
    """The totals of ``t`` without those of ``part`` (counted in it)."""
    fields = ("checked", "wrong", "uncertain", "nonfinite", "diff_sq", "num_sq", "ana_sq")
    rest = Tally(**{name: getattr(t, name) - getattr(part, name) for name in fields})
    rest.cross = t.cross - part.cross
    rest.active = max(0, t.active - part.active)
    return rest


def _independent_projections(e: Evidence, checked: int) -> int:
    """How many of the ``checked`` probe values are projections of the
    Jacobian on different directions: a reverse probe's two cotangents of
    a single output are the same projection scaled."""
    outputs = sum(e.out_widths) if e.out_widths else 2
    if outputs >= 2:
        return checked
    forward = e.directions.get("fwd")
    # (Its tally holds the entries located from forward probes too.)
    forward_checked = min(forward.checked, checked) if forward is not None else 0
    return forward_checked + (checked - forward_checked) // 2


def _factor_text(factor: float, name: str) -> str:
    subject = f"the derivative for {name}" if name else "the analytical derivative"
    if abs(factor + 1.0) < FIT:
        return f"sign flipped: {subject} is minus the numerical one"
    return f"off by a constant factor: {subject} is {factor:.4g} times the numerical one"


def _constant_factor(t: Tally, explains_error: bool = False) -> float | None:
    """``r`` if analytical ~ r * numerical over everything compared: what
    ``r`` leaves unexplained is within FIT of the analytical values (and,
    with ``explains_error``, within FIT of the error itself)."""
    if t.num_sq == 0.0 or t.ana_sq == 0.0:
        return None
    if not all(math.isfinite(v) for v in (t.num_sq, t.ana_sq, t.cross, t.diff_sq)):
        return None  # sums past the top of float64: no factor to read off
    r = t.cross / t.num_sq
    # The error a - n less its projection on n: (a - n) . n = cross - num_sq.
    along = t.cross - t.num_sq
    residual = math.sqrt(max(0.0, t.diff_sq - along * along / t.num_sq))
    if abs(r - 1.0) <= FIT or residual > FIT * math.sqrt(t.ana_sq):
        return None
    if explains_error and residual > FIT * math.sqrt(t.diff_sq):
        return None
    return r


_IGNORED = (
    "ignores the incoming gradient: the backward returns the same result whatever "
    "cotangent (grad_output) it is given; multiply by it"
)


def _cotangent_pattern(e: Evidence, xp: Any) -> str:
    """The rule returns the same whatever the cotangent, or rows scaled by c_j
    come back scaled by 1/c_j (ignored) or c_j (squared). Only asked where
    no constant factor explains everything compared: with one output row,
    a factor of 2 or 0.5 looks like either pattern on its one-hot row."""
    if e.cotangent_ignored:
        return _IGNORED
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
        return _IGNORED
    squared = xp.where(used, xp.abs(ratio / c - 1.0), xp.zeros_like(ratio))
    if float(xp.max(squared)) < FIT:
        return (
            "not linear in the incoming gradient: the result scales with the square of "
            "the cotangent (it is applied twice)"
        )
    return ""


def _matches(a: Any, n: Any, pattern: Any, xp: Any) -> bool:
    """``a`` is ``pattern`` (within FIT, relative to both sides' size) and
    ``n`` is not."""
    scale = float(xp.sum(xp.abs(a))) + float(xp.sum(xp.abs(n)))
    if scale == 0.0:
        return False
    straight = float(xp.sum(xp.abs(a - n))) / scale
    swapped = float(xp.sum(xp.abs(a - pattern))) / scale
    return swapped < FIT < straight


def _transposed(e: Evidence, xp: Any) -> list[str]:
    """A square Jacobian block whose analytical side is the transpose of the
    numerical one: ``W g`` for ``W^T g`` in the VJP of ``W x``."""
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
            if _matches(a, n, xp.matrix_transpose(n), xp):
                found.append(
                    f"transposed: the derivative for {name} matches the transpose of the "
                    "numerical Jacobian (a missing or extra transpose in the rule)"
                )
        col += width
    return found


def _argument_transposed(e: Evidence, xp: Any) -> list[str]:
    """A gradient returned transposed: for an argument whose last two axes
    are square, every row of the analytical Jacobian, laid out in the
    argument's shape, is the numerical one with those axes swapped
    (``return grad.T`` in a custom backward)."""
    ana = e.jacobians.get("analytical")
    num = e.jacobians.get("numerical")
    if ana is None or num is None or len(e.in_shapes) != len(e.in_widths):
        return []
    m = ana.shape[0]
    found = []
    col = 0
    for name, width, shape in zip(e.in_names, e.in_widths, e.in_shapes):
        square = len(shape) >= 2 and shape[-1] == shape[-2] >= 2
        # Real arguments only: a complex one takes two coordinates an entry.
        if square and width == math.prod(shape) and m:
            a = xp.reshape(ana[:, col : col + width], (m, *shape))
            n = xp.reshape(num[:, col : col + width], (m, *shape))
            if _matches(a, n, xp.matrix_transpose(n), xp):
                found.append(
                    f"transposed: the gradient for {name} is the transpose of the right one "
                    f"(its last two axes swapped: a .T too many or missing where the rule "
                    f"returns it)"
                )
        col += width
    return found


#: Agreeing arguments named in a diagnosis, at most (a model has dozens of tensors).
AGREEING_SHOWN = 6


def _some(names: list[str]) -> str:
    """``names`` for a sentence, the first AGREEING_SHOWN of them and a count."""
    shown = ", ".join(names[:AGREEING_SHOWN])
    rest = len(names) - AGREEING_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown
