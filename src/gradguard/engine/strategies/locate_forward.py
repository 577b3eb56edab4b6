"""Locate the wrong entries behind a disagreeing forward probe.

A forward probe compares the rule's ``J v`` (its JVP) with the difference
along v, output by output. Restricted to a group S of inputs, the analytical
side ``J v_S`` takes a JVP of its own (one per group, batched like the
groups' differences), the numerical side one difference along ``v_S`` with
its own error estimate, as in :mod:`.locate`, whose splitting this shares.
A single entry's group compares the whole column ``J[:, i]``: the output
where it disagrees most is named with it, at no further cost.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import array_api_compat.numpy as host_xp
import numpy as np

from ...core.verdict import Entries
from .locate import (
    Group,
    _batches,
    _bisect,
    _by_argument,
    _concatenate,
    _Costs,
    _disagrees,
    _merge,
    _Probe,
    _ratios,
    _row_of,
)

if TYPE_CHECKING:
    from ..parts import Parts

__all__ = ["locate_forward"]


def locate_forward(parts: Parts, directions: Any, dd: Any) -> None:
    """After the forward probes of ``parts`` are compared: when some are
    wrong, name the entries behind it (input and output) in the check's
    books. ``directions`` (count, n) are the probes' random directions,
    ``dd`` their differences."""
    forward = parts.ledger.directions.get("fwd")
    if forward is None or not forward.wrong:
        return
    p = parts.problem
    row = _worst_probe(parts, directions.shape[0], dd)
    search = _Forward(parts, directions[row, :])
    slots = [(name, s) for name, s in zip(p.in_names, p.in_layout.slots) if s.width]
    groups = [(s.offset, s.offset + s.width) for _, s in slots]
    leaves, _, first = _bisect(search.measure, groups)
    if leaves:
        entries = _concatenate([entries for _, _, entries in leaves])
        inputs = [index for index, _, _ in leaves]
        outputs = [output for _, output, _ in leaves]
        _merge(parts, entries, inputs, "fwd")
        parts.ledger.keep_worst("entry", entries, 0, xp=host_xp, located=(inputs, outputs))
    count = len(leaves)
    p.notes.append(
        f"forward probe {row} split to locate its disagreement: {count} input entr"
        f"{'y' if count == 1 else 'ies'} named among {p.in_layout.size} "
        f"({search.costs.differences} restricted probes, as many JVPs)"
    )
    if len(slots) > 1:
        p.notes.append(_by_argument([name for name, _ in slots], first))


def _worst_probe(parts: Parts, count: int, dd: Any) -> int:
    """The forward probe whose comparison disagrees most."""
    if count == 1:
        return 0
    every = _Forward(parts, None)
    n = parts.problem.in_layout.size
    ratios = [float(np.max(_ratios(every.compare(_row_of(dd, r), 0, n)))) for r in range(count)]
    return int(np.argmax(ratios))


class _Forward:
    """One forward probe (direction v) restricted to groups of inputs."""

    def __init__(self, parts: Parts, v: Any):
        self.parts = parts
        self.costs = _Costs()
        self.probe = _Probe(parts, v, None, None, None, self.costs)

    def measure(self, groups: list[Group]) -> tuple[Any, Any, list[Any]]:
        """Restricted forward probes: a difference and a JVP per group."""
        parts = self.parts
        row_bytes = 8 * parts.numerical.accuracy * parts.problem.in_layout.size
        disagree, ratio, leaves = [], [], []
        for lo, hi, batch in _batches(groups, row_bytes):
            dd, lo, hi = self.probe._differences(lo, hi, batch)
            entries = self.compare(dd, lo, hi)
            disagree.append(_disagrees(entries))
            ratio.append(_ratios(entries))
            for j, (first, stop) in enumerate(batch):
                single = stop - first == 1
                leaves.append(_leaf(parts, dd, entries, j, first, first - lo) if single else None)
        return np.concatenate(disagree), np.concatenate(ratio), leaves

    def compare(self, dd: Any, lo: int, hi: int) -> Entries:
        """(k, m) comparisons of the rule's J d_r with the differences along
        the k displacements d_r of ``dd`` (coordinates [lo, hi))."""
        parts, xp, p = self.parts, self.parts.xp, self.parts.problem
        k = dd.direction.shape[0]
        tangents = xp.zeros((k, p.in_layout.size), dtype=dd.direction.dtype, device=parts.device)
        tangents[:, lo:hi] = dd.direction
        ana, wide = parts.analytical.jvp(
            parts.analytical.round_to(tangents, p.in_layout, p.in_dtypes)
        )
        rnd = parts.numerical.rounding_with_noise(dd)
        scale = xp.max(xp.abs(dd.value), axis=1, keepdims=True)
        columns = [ana, dd.value, dd.truncation, rnd, dd.roughness]
        columns += [xp.astype(dd.nonfinite, ana.dtype), xp.broadcast_to(scale, ana.shape)]
        if wide is not None:
            columns.append(xp.abs(ana - wide))
        host = p.adapter.to_numpy(xp.stack(columns))
        return parts.ledger.entries(
            "probe",
            host[0],
            (host[1], host[2], host[3], host[4], host[5] != 0),
            host[6],
            host[7] if wide is not None else None,
            xp=host_xp,
        )


def _leaf(parts: Parts, dd: Any, entries: Entries, row: int, index: int, at: int) -> Any:
    """A single entry's group: its column J[:, index] per unit of the
    coordinate, and the output where it disagrees most: (index, output,
    (1, 1) entries)."""
    step = float(parts.problem.adapter.to_numpy(dd.direction[row, at]))
    column = entries.map(lambda a: a[row : row + 1, :])
    column = replace(
        column,
        analytical=column.analytical / step,
        numerical=column.numerical / step,
        error=column.error / abs(step),
        tolerance=column.tolerance / abs(step),
    )
    flags = _disagrees(column.map(lambda a: a.T))
    ratio = _ratios(column.map(lambda a: a.T))
    output = int(np.argmax(np.where(flags, ratio, -np.inf)))
    return index, output, column.map(lambda a, o=output: a[:, o : o + 1])
