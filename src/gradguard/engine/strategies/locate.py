"""Locate the wrong entries behind a disagreeing probe: adaptive group testing.

A reverse probe compares ``u . J . v``. Restricted to a group S of input
coordinates (``v_S``: v with the entries outside S set to zero) its
analytical side is ``(u^T J) . v_S``, the probe's own VJP masked: free for
every group. Its numerical side is one directional difference along
``v_S`` (``accuracy`` evaluations of f, batched), whose own error estimate
makes the group's tolerance. A wrong entry shows in every group that holds
it at its full size while the tolerance does not grow as the group shrinks
(its truncation falls with the entries moved; its rounding stays that of
f's values), so it is not lost in a larger group's noise; and a group of
right entries is judged by its own precision, so a right model is not
called wrong. The split starts only from a probe that is wrong.

Groups that disagree are split, argument by argument first, then into
halves of their entries, until single entries remain: about 2 log2(n)
differences for one wrong entry among n, O(k log n) for k. At most PATHS
groups are followed per level: an error spread over many entries (a factor
on a whole tensor) has its worst few named and is said to be spread.

A located input entry i is then traced to an output the other way round:
the column ``J[:, i]`` is already measured (the single entry's difference),
and the analytical side of ``u_T . J[:, i]`` for a group T of outputs is
the VJP of u masked to T: one VJP per group, no evaluation of f.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import array_api_compat.numpy as host_xp
import numpy as np

from ...core.differences import DirectionalDerivatives, directional_derivatives
from ...core.verdict import ARRAY_FIELDS, Entries, Tally
from .reverse_jacobian import vjp_rows_per_batch

if TYPE_CHECKING:
    from ..parts import Parts

__all__ = ["PATHS", "locate"]

#: Disagreeing groups followed per level, and entries named at most.
PATHS = 3

#: Bytes of perturbed points that one batch of restricted probes takes: at
#: 64 MB each new batch costs page faults (tiling 10^6 float64 entries 8 times
#: took 26 ms against 2.6 ms for 4 times).
BATCH_BYTES = 1 << 25

#: One range of flat coordinates, [lo, hi).
Group = tuple[int, int]


@dataclass
class _Leaf:
    """A single input entry that disagrees, with its measured column."""

    index: int
    #: The random cotangent (0 or 1 of the probe) it disagrees most under.
    cotangent: int
    #: The input-side comparison, per cotangent: (1, 2) entries, per unit.
    entries: Entries
    #: J[:, index] times the displacement, and its error estimates, (m,) each.
    column: tuple[Any, ...]
    #: The displacement along the entry (the column's unit).
    step: float


@dataclass
class _Costs:
    differences: int = 0
    vjps: int = 0


def locate(parts: Parts, directions: Any, cotangents: Any, grads: Any, wide: Any, dd: Any) -> None:
    """After the reverse probes of a check are compared: when some are
    wrong, name the input entries behind it, and an output each, as
    Jacobian entries in the check's books. (Not when they are only marginal:
    the split then could only turn a check that cannot decide into a
    failure, where rounding inside f that no estimate sees shows larger in
    a smaller group; within the split, marginal groups are followed, so
    that a wrong entry is not lost where its group's precision is coarse.)

    ``directions`` (count, n) are the probes' random directions,
    ``cotangents`` (2 count, m) their cotangents as the rule received them,
    ``grads`` / ``wide`` their VJPs (``wide``: at the wider dtypes, or
    None), ``dd`` the probes' differences."""
    if not parts.ledger.tally.wrong:
        return
    p = parts.problem
    row = _worst_probe(parts, directions.shape[0], cotangents, grads, wide, dd)
    pair = slice(2 * row, 2 * row + 2)
    probe = _Probe(
        parts, directions[row, :], cotangents[pair, :], grads[pair, :], _rows(wide, pair), _Costs()
    )
    slots = [(name, s) for name, s in zip(p.in_names, p.in_layout.slots) if s.width]
    groups = [(s.offset, s.offset + s.width) for _, s in slots]
    leaves, spread, first = _bisect(probe.measure_inputs, groups)
    traced = [(leaf, _trace_output(probe, leaf)) for leaf in leaves]
    _book(parts, traced)
    named = len(leaves)
    p.notes.append(
        f"probe {row} split to locate its disagreement: {named} input entr"
        f"{'y' if named == 1 else 'ies'} named among {p.in_layout.size} "
        f"({probe.costs.differences} restricted probes, {probe.costs.vjps} VJPs)"
    )
    if len(slots) > 1:
        p.notes.append(_by_argument([name for name, _ in slots], first))
    if spread > PATHS:
        p.notes.append(
            f"up to {spread} groups of entries disagreed at one level of the split: the error "
            f"is spread over many entries; the {PATHS} worst were followed"
        )


def _by_argument(names: list[str], disagree: Any) -> str:
    """What the probe restricted to each argument showed."""
    wrong = [name for name, flag in zip(names, disagree) if flag]
    right = [name for name, flag in zip(names, disagree) if not flag]
    if not wrong:
        return "restricted to each argument in turn, the probe shows no error in any"
    text = f"restricted to each argument in turn, the probe disagrees in {', '.join(wrong)}"
    if right:
        shown = ", ".join(right[:4]) + (f" and {len(right) - 4} more" if len(right) > 4 else "")
        text += f" and shows no error in the other {len(right)} ({shown})"
    return text


def _rows(a: Any, rows: slice) -> Any:
    return None if a is None else a[rows, :]


def _worst_probe(parts: Parts, count: int, cots: Any, grads: Any, wide: Any, dd: Any) -> int:
    """The probe whose comparison disagrees most (from what is measured)."""
    if count == 1:
        return 0
    ratios = []
    for row in range(count):
        pair = slice(2 * row, 2 * row + 2)
        probe = _Probe(parts, None, cots[pair, :], grads[pair, :], _rows(wide, pair), _Costs())
        entries = probe.compare_inputs(_row_of(dd, row), 0, parts.problem.in_layout.size)
        ratios.append(float(np.max(_ratios(entries))))
    return int(np.argmax(ratios))


def _row_of(dd: Any, row: int) -> Any:
    """Row ``row`` of DirectionalDerivatives, kept two-dimensional."""
    fields = ("value", "truncation", "rounding", "roughness", "nonfinite", "direction")
    return DirectionalDerivatives(*(getattr(dd, f)[row : row + 1, ...] for f in fields))


def _disagrees(entries: Entries) -> Any:
    """Per row, whether some cotangent's comparison is wrong or marginal
    (beyond the tolerance, within what the precision cannot decide)."""
    if not entries.exceeding:
        return np.zeros(entries.error.shape[0], dtype=bool)
    return np.any(entries.wrong | entries.marginal, axis=1)


def _ratios(entries: Entries) -> Any:
    """Per row, the largest error / tolerance."""
    tolerance = np.where(entries.tolerance > 0, entries.tolerance, np.inf)
    ratio = np.where(entries.error > 0, entries.error / tolerance, 0.0)
    return np.max(np.nan_to_num(ratio, nan=np.inf), axis=1)


Measure = Callable[[list[Group]], tuple[Any, Any, list[Any]]]


def _bisect(measure: Measure, groups: list[Group]) -> tuple[list[Any], int, Any]:
    """Adaptive group testing: measure ``groups``; split those that
    disagree (the PATHS worst) into halves; stop at single coordinates.
    ``measure`` returns per group whether it disagrees, its ratio, and what
    a single coordinate's group leaves (its leaf). Returns the leaves that
    disagree, the most groups that disagreed at one level, and which of
    the first ``groups`` disagreed."""
    leaves: list[Any] = []
    spread = 0
    first = None
    while groups:
        disagree, ratio, payload = measure(groups)
        first = disagree if first is None else first
        order = [j for j in np.argsort(-ratio, kind="stable") if disagree[j]]
        spread = max(spread, len(order))
        following: list[Group] = []
        for j in order[: PATHS - len(leaves)]:
            lo, hi = groups[j]
            if hi - lo == 1:
                leaves.append(payload[j])
                continue
            middle = (lo + hi) // 2
            following += [(lo, middle), (middle, hi)]
        groups = following if len(leaves) < PATHS else []
    return leaves, spread, first


def _batches(groups: list[Group], row_bytes: int) -> list[tuple[int, int, list[Group]]]:
    """Runs of adjacent groups (the halves of a group lie side by side),
    each with the span [lo, hi) it covers, within BATCH_BYTES of points
    (``row_bytes`` a group)."""
    batches: list[tuple[int, int, list[Group]]] = []
    for first, stop in groups:
        if batches:
            lo, hi, batch = batches[-1]
            if first == hi and (len(batch) + 1) * row_bytes <= BATCH_BYTES:
                batches[-1] = (lo, stop, [*batch, (first, stop)])
                continue
        batches.append((first, stop, [(first, stop)]))
    return batches


class _Probe:
    """One probe (direction v, two cotangents u and their VJPs), restricted
    to groups of inputs or outputs and compared."""

    def __init__(self, parts: Parts, v: Any, u: Any, g: Any, wide: Any, costs: _Costs):
        self.parts, self.v, self.u, self.g, self.wide, self.costs = parts, v, u, g, wide, costs

    def measure_inputs(self, groups: list[Group]) -> tuple[Any, Any, list[Any]]:
        """Restricted probes over input ``groups``: one difference each,
        adjacent groups (two halves of a group) in one batch."""
        disagree, ratio, leaves = [], [], []
        parts = self.parts
        # Each group's points are whole points of f: accuracy of them.
        row_bytes = 8 * parts.numerical.accuracy * parts.problem.in_layout.size
        for lo, hi, batch in _batches(groups, row_bytes):
            dd, lo, hi = self._differences(lo, hi, batch)
            entries = self.compare_inputs(dd, lo, hi)
            disagree.append(_disagrees(entries))
            ratio.append(_ratios(entries))
            for j, (first, stop) in enumerate(batch):
                single = stop - first == 1
                leaves.append(self._leaf(dd, entries, j, first, first - lo) if single else None)
        return np.concatenate(disagree), np.concatenate(ratio), leaves

    def _differences(
        self, lo: int, hi: int, groups: list[Group]
    ) -> tuple[DirectionalDerivatives, int, int]:
        """f's derivatives along v restricted to each of ``groups``, which
        lie in [lo, hi), with their error estimates, and the coordinates
        that ``direction`` holds the displacements of: [lo, hi) itself, or
        all of them in low precision or with complex steps. Central differences move only those
        coordinates, so the stencil is taken in them alone and the rest of x
        filled in at evaluation: at 10^6 inputs that is most of the cost."""
        parts, xp, p = self.parts, self.parts.xp, self.parts.problem
        self.costs.differences += len(groups)
        if parts.numerical.complex_step or parts.numerical.wide_steps:
            # Shorter steps or complex steps: the check's own path, in full.
            width = p.in_layout.size
            lo, hi = 0, width
        else:
            width = hi - lo
        directions = xp.zeros((len(groups), width), dtype=self.v.dtype, device=parts.device)
        for j, (first, stop) in enumerate(groups):
            directions[j, first - lo : stop - lo] = self.v[first:stop]
        if width == p.in_layout.size:
            return parts.numerical.smooth_derivatives(directions), lo, hi

        def evaluate(points: Any) -> Any:
            full = xp.tile(p.x0[None, :], (points.shape[0], 1))
            full[:, lo:hi] = points
            return parts.numerical.evaluate(full)

        displacements = directions * parts.numerical.steps[None, lo:hi]
        dd = directional_derivatives(
            evaluate,
            p.x0[lo:hi],
            displacements,
            parts.numerical.f0,
            xp,
            parts.numerical.accuracy,
            parts.numerical.output_eps,
        )
        return dd, lo, hi

    def compare_inputs(self, dd: Any, lo: int, hi: int) -> Entries:
        """(k, 2) comparisons of u_c . J . d_r for the k directions d_r of
        ``dd`` (displacements of the coordinates [lo, hi))."""
        parts, xp = self.parts, self.parts.xp
        d, u, g = dd.direction, self.u, self.g[:, lo:hi]
        u_t, size_t = xp.matrix_transpose(u), xp.matrix_transpose(xp.abs(u))
        rnd = parts.numerical.rounding_with_noise(dd)
        columns = [
            d @ xp.matrix_transpose(g),  # the analytical side, its terms summed
            (d * d) @ xp.matrix_transpose(g * g),
            dd.value @ u_t,
            (dd.value * dd.value) @ (u_t * u_t),
            (dd.truncation * dd.truncation) @ (u_t * u_t),
            rnd @ size_t,
            dd.roughness @ size_t,
            xp.astype(dd.nonfinite, u.dtype) @ size_t,
        ]
        if self.wide is not None:
            columns.append(xp.abs(d @ xp.matrix_transpose(g - self.wide[:, lo:hi])))
        host = parts.problem.adapter.to_numpy(xp.stack(columns))
        ana, ana_sq, num, num_sq, trunc_sq, rounding, roughness, nonfinite = host[:8]
        # As the probe itself: truncation errors add like a 2-norm, and the
        # scale is the 2-norm of the terms on either side.
        return parts.ledger.entries(
            "probe",
            ana,
            (num, trunc_sq**0.5, rounding, roughness, nonfinite > 0),
            ana_sq**0.5 + num_sq**0.5,
            host[8] if self.wide is not None else None,
            xp=host_xp,
        )

    def _leaf(self, dd: Any, entries: Entries, row: int, index: int, at: int) -> _Leaf:
        """A single entry's group (row ``row`` of ``dd``, the entry at
        ``at`` in its directions): its column J[:, index], times its step."""
        parts = self.parts
        rnd = parts.numerical.rounding_with_noise(dd)
        fields = (dd.value, dd.truncation, rnd, dd.roughness, dd.nonfinite)
        column = tuple(parts.problem.adapter.to_numpy(a[row, :]) for a in fields)
        step = float(parts.problem.adapter.to_numpy(dd.direction[row, at]))
        own = entries.map(lambda a: a[row : row + 1, :])
        # The cotangent under which it disagrees most.
        cotangent = int(np.argmax(_ratios(own.map(lambda a: a.T))))
        return _Leaf(index, cotangent, own, column, step)

    def measure_outputs(self, leaf: _Leaf, groups: list[Group]) -> tuple[Any, Any, list[Any]]:
        """``u_T . J[:, i]`` for output ``groups`` T: one VJP each (u masked
        to T), against the measured column."""
        parts, xp = self.parts, self.parts.xp
        m = parts.problem.out_layout.size
        u = parts.problem.adapter.to_numpy(self.u[leaf.cotangent, :])
        masks = np.zeros((len(groups), m))
        for j, (lo, hi) in enumerate(groups):
            masks[j, lo:hi] = 1.0
        cots = masks * u[None, :]
        disagree, ratio, leaves = [], [], []
        rows_per_vjp = vjp_rows_per_batch(parts)
        for first in range(0, len(groups), rows_per_vjp):
            block = cots[first : first + rows_per_vjp]
            rows, wide = parts.analytical.vjp(
                xp.asarray(block, dtype=self.u.dtype, device=parts.device)
            )
            self.costs.vjps += block.shape[0]
            ana = parts.problem.adapter.to_numpy(rows[:, leaf.index]) * leaf.step
            error = None
            if wide is not None:
                error = np.abs(
                    parts.problem.adapter.to_numpy(wide[:, leaf.index]) * leaf.step - ana
                )
            entries = _compare_column(parts, ana, block, leaf.column, error)
            disagree.append(_disagrees(entries))
            ratio.append(_ratios(entries))
            leaves += [None] * block.shape[0]
        return np.concatenate(disagree), np.concatenate(ratio), leaves


def _compare_column(parts: Parts, ana: Any, cots: Any, column: tuple[Any, ...], error: Any) -> Any:
    """(k, 1) comparisons of VJP(c_r)_i with c_r . J[:, i] for masked
    cotangents c_r (host arrays)."""
    value, trunc, rnd, rough, bad = column
    size = np.abs(cots)
    weighted = cots * value[None, :]
    num = np.sum(weighted, axis=1)
    scale = np.abs(ana) + np.sqrt(np.sum(weighted * weighted, axis=1))
    return parts.ledger.entries(
        "probe",
        ana[:, None],
        (
            num[:, None],
            np.sqrt(np.sum((cots * trunc[None, :]) ** 2, axis=1))[:, None],
            (size @ rnd)[:, None],
            (size @ rough)[:, None],
            (size @ bad.astype(size.dtype))[:, None] > 0,
        ),
        scale[:, None],
        None if error is None else error[:, None],
        xp=host_xp,
    )


def _trace_output(probe: _Probe, leaf: _Leaf) -> int | None:
    """An output ``o`` at which the located input entry's derivative
    disagrees, by splitting the probe's cotangent; None where none does
    (the entry is then named with its cotangent)."""
    slots = probe.parts.problem.out_layout.slots
    groups = [(s.offset, s.offset + s.width) for s in slots if s.width]
    outputs, _, _ = _bisect(lambda g: _single_output(probe, leaf, g), groups)
    return outputs[0] if outputs else None


def _single_output(probe: _Probe, leaf: _Leaf, groups: list[Group]) -> tuple[Any, Any, list[Any]]:
    """measure_outputs, following one path only (the worst group) and
    naming a single output's group by its index."""
    disagree, ratio, _ = probe.measure_outputs(leaf, groups)
    best = int(np.argmax(np.where(disagree, ratio, -np.inf))) if disagree.any() else -1
    keep = np.zeros_like(disagree)
    if best >= 0:
        keep[best] = True
    return keep, ratio, [lo for lo, _ in groups]


def _book(parts: Parts, traced: list[tuple[_Leaf, int | None]]) -> None:
    """Put the located entries in the check's tallies and worst list: a
    Jacobian entry d out[o] / d in[i] where an output was traced, else the
    input entry under its random cotangent."""
    entries_at = [(leaf, o) for leaf, o in traced if o is not None]
    cotangent_at = [leaf for leaf, o in traced if o is None]
    if entries_at:
        entries = _jacobian_entries(parts, entries_at)
        inputs = [leaf.index for leaf, _ in entries_at]
        outputs = [o for _, o in entries_at]
        _merge(parts, entries, inputs)
        parts.ledger.keep_worst("entry", entries, 0, xp=host_xp, located=(inputs, outputs))
    if cotangent_at:
        entries = _per_unit(cotangent_at)
        inputs = [leaf.index for leaf in cotangent_at]
        _merge(parts, entries, inputs)
        cots = [leaf.cotangent for leaf in cotangent_at]
        parts.ledger.keep_worst("cotangent", entries, 0, xp=host_xp, located=(cots, inputs))


def _jacobian_entries(parts: Parts, at: list[tuple[_Leaf, int]]) -> Entries:
    """(1, L) comparisons of J[o, i] from the rule (a one-hot VJP) with the
    measured column, per unit of the coordinate."""
    xp, p = parts.xp, parts.problem
    one_hot = np.zeros((len(at), p.out_layout.size))
    for j, (_, o) in enumerate(at):
        one_hot[j, o] = 1.0
    rows, wide = parts.analytical.vjp(xp.asarray(one_hot, dtype=p.x0.dtype, device=parts.device))
    rows_host = p.adapter.to_numpy(rows)
    wide_host = None if wide is None else p.adapter.to_numpy(wide)
    values: list[tuple[float, ...]] = []
    for j, (leaf, o) in enumerate(at):
        value, trunc, rnd, rough, bad = leaf.column
        unit = abs(leaf.step)
        ana = float(rows_host[j, leaf.index])
        error = 0.0 if wide_host is None else abs(float(wide_host[j, leaf.index]) - ana)
        # The column's largest entry: the scale of the terms behind it.
        scale = float(np.max(np.abs(value))) / unit
        numerical = (value[o] / leaf.step, trunc[o] / unit, rnd[o] / unit, rough[o] / unit)
        values.append((ana, *numerical, float(bad[o]), scale, error))
    ana, num, trunc, rnd, rough, bad, scale, error = np.asarray(values).T[:, None, :]
    return parts.ledger.entries(
        "entry",
        ana,
        (num, trunc, rnd, rough, bad > 0),
        scale,
        None if wide_host is None else error,
        xp=host_xp,
    )


def _per_unit(leaves: list[_Leaf]) -> Entries:
    """The leaves' own comparisons under their cotangent, per unit of the
    coordinate: (1, L)."""
    parts = []
    for leaf in leaves:
        one = leaf.entries.map(lambda a, c=leaf.cotangent: a[:, c : c + 1])
        step = leaf.step
        parts.append(
            replace(
                one,
                analytical=one.analytical / step,
                numerical=one.numerical / step,
                error=one.error / abs(step),
                tolerance=one.tolerance / abs(step),
            )
        )
    return _concatenate(parts)


def _concatenate(parts: list[Entries]) -> Entries:
    """Entries side by side (along the second axis)."""
    arrays: dict[str, Any] = {}
    for name in ARRAY_FIELDS:
        present = [getattr(e, name) for e in parts]
        if all(a is None for a in present):
            arrays[name] = None
            continue
        filled = [
            np.zeros(e.error.shape, dtype=bool) if a is None else a for e, a in zip(parts, present)
        ]
        arrays[name] = np.concatenate(filled, axis=1)
    return Entries(**arrays, exceeding=any(e.exceeding for e in parts))


def _merge(parts: Parts, entries: Entries, inputs: list[int], direction: str = "rev") -> None:
    """Count located entries like a full check's: in the totals, the
    direction's, the entries' and their argument's."""
    tally = Tally.of(entries, host_xp)
    parts.ledger.add(tally, direction, entry=True)
    parts.ledger.count_flags(entries, host_xp)
    for j, index in enumerate(inputs):
        slot, _, _ = parts.problem.in_layout.owner(index)
        parts.ledger.by_argument[slot].merge(
            Tally.of(entries.map(lambda a, j=j: a[:, j : j + 1]), host_xp)
        )
