"""The books of a check: every comparison goes through here.

:class:`Ledger` compares a batch of values with this check's options
(:meth:`~Ledger.entries`, :func:`gradguard.core.verdict.compare`) and
records it (:meth:`~Ledger.record`): the tallies (overall, per argument, per
direction), the worst entries, the counts of each kind of uncertain value,
the error map, and the evidence the diagnosis of a failed check reads.
:mod:`.report_writer` turns the books into the Report.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.numpy as host_xp

from ..core.norms import all_finite
from ..core.verdict import Entries, Tally, compare, doubt
from ..report.report import Mismatch
from .entry_map import undecided_cells
from .numerical import Fields
from .problem import _device, _Problem

#: Worst entries kept for the report.
WORST = 8
#: Jacobian entries up to which the report carries error / tolerance per entry.
ERROR_MAP_ENTRIES = 1 << 16
#: Sizes up to which the whole numerical Jacobian is kept for diagnosis.
KEEP_JACOBIAN_ENTRIES = 1 << 20
#: What a worst-list entry shows of its compared value.
_WORST_FIELDS = ("analytical", "numerical", "error", "tolerance", "wrong", "uncertain")
_RANK = {"wrong": 0, "uncertain": 1, "ok": 2}


class Ledger:
    """Comparisons of one check and what they add up to."""

    def __init__(
        self, problem: _Problem, *, rtol: Any, atol: Any, eps_values: float, floor_scale: float
    ):
        self.p = p = problem
        self.xp = problem.xp
        self.rtol = rtol
        self.atol = atol
        self.eps_values = eps_values
        self.floor_scale = floor_scale
        # Tolerances widen slowly with the number of entries compared (set by
        # each strategy; see count_multiple).
        self.multiple = 1.0
        self.eps_store = 0.0  # rounding of the stored analytical Jacobian, if any
        self.tally = Tally()
        self.entry_tally = Tally()
        self.by_argument = [Tally() for _ in p.in_layout.slots]
        self.directions: dict[str, Tally] = {}
        self.worst: list[Mismatch] = []
        self.uncertain_kinds: dict[str, int] = {}
        # Per kind of unresolved entry, the widest tolerance / |entry| seen.
        self.widest: dict[str, float] = {}
        self.dense_wrong = 0
        self.one_hot_wrong = 0
        # error / tolerance of every entry (inputs, outputs), kept for small checks.
        self.error_map_t: Any = None
        self.undecided_cells: list[tuple[int, int]] = []  # of the map: (output, input)
        # The numerical Jacobian, transposed (n, m), kept for diagnosis up to
        # KEEP_JACOBIAN_ENTRIES; and the Jacobians handed to the diagnosis.
        self.keep = p.in_layout.size * p.out_layout.size <= KEEP_JACOBIAN_ENTRIES
        self.num_t: Any = None
        self.jacobians: dict[str, Any] = {}
        # Per output of a full reverse check: its one-hot scale, and
        # <ana, num>, <num, num> over the inputs (for the diagnosis).
        self.row_scales: Any = None
        self.row_cross: Any = None
        self.row_num_sq: Any = None
        # The analytical Jacobian of a full reverse check, transposed (n, m).
        self.jac: Any = None
        # Settled columns whose nonzero entries are not counted yet:
        # (argument, first column, stop, threshold); see count_settled.
        self.uncounted: list[tuple[int, int, int, float]] = []
        # Arguments whose VJPs were all zero in a failing probe check.
        self.zero_arguments: list[str] = []

    def start_error_map(self) -> None:
        """Keep error / tolerance per entry, when the Jacobian is small enough."""
        n, m = self.p.in_layout.size, self.p.out_layout.size
        if n * m <= ERROR_MAP_ENTRIES:
            self.error_map_t = self.xp.zeros(
                (n, m), dtype=self.p.work_dtype, device=_device(self.p.x0)
            )

    # -- comparing -------------------------------------------------------------
    def compare(
        self,
        kind: str,
        ana: Any,
        numerical: Fields,
        scale: Any,
        start: int,
        rows: bool = False,
        forward: bool = False,
        analytical_error: Any = None,
        xp: Any = None,
        undecided: Any = None,
    ) -> None:
        """Compare and record a batch; ``numerical`` is (value, truncation,
        rounding, roughness, nonfinite), ``xp`` the namespace of its arrays
        (by default the check's). ``undecided`` (broadcast to the batch)
        marks products of entries some of which were undecided: a product
        is no more decisive than its terms (f quantised coarser than its
        dtype shows in them as in the entries), so it is undecided too. Not
        in low precision, where Confirmation.shorter_steps marks what it
        leaves unconfirmed as rough, and products of such entries are rough too."""
        entries = self.entries(kind, ana, numerical, scale, analytical_error, xp=xp)
        if undecided is not None:
            entries = doubt(entries, undecided)
        self.record(kind, entries, start, rows=rows, forward=forward, xp=xp)

    def entries(
        self,
        kind: str,
        ana: Any,
        numerical: Fields,
        scale: Any,
        analytical_error: Any,
        xp: Any = None,
    ) -> Entries:
        """compare() with this check's options. ``numerical`` is (value,
        truncation, rounding, roughness, nonfinite); one-hot entries carry
        the rounding of the stored analytical Jacobian too."""
        num, trunc, rnd, rough, bad = numerical
        eps_ana = max(self.p.eps_analytical, self.eps_store if kind == "entry" else 0.0)
        return compare(
            ana,
            num,
            trunc,
            rnd,
            rough,
            bad,
            scale,
            eps_ana,
            self.xp if xp is None else xp,
            self.rtol,
            self.atol,
            analytical_error=analytical_error,
            pool=kind == "entry",
            eps_numerical=self.eps_values,
            floor_scale=self.floor_scale,
            multiple=self.multiple,
        )

    # -- recording ---------------------------------------------------------------
    def record(
        self,
        kind: str,
        entries: Entries,
        start: int,
        rows: bool = False,
        forward: bool = False,
        xp: Any = None,
    ) -> None:
        """Add compared entries to the tallies, the worst list and the map.
        ``xp`` is the namespace of the entries, by default the check's."""
        xp = self.xp if xp is None else xp
        tally = Tally.of(entries, xp)
        self.add(tally, "fwd" if forward else "rev", entry=kind == "entry")
        if kind == "cotangent":
            self.dense_wrong += tally.wrong
        elif kind == "entry":
            self.one_hot_wrong += tally.wrong
        self.count_flags(entries, xp)
        if kind in ("entry", "cotangent") and entries.error.ndim == 2:
            if len(self.by_argument) == 1:
                self.by_argument[0].merge(tally)
            else:
                self._tally_arguments(entries, start, by_rows=kind == "entry")
        if rows and self.row_cross is not None and entries.exceeding:
            # Per output: <ana, num> and <num, num> over the inputs (rows here).
            ana, num = entries.analytical, entries.numerical
            a0 = xp.where(xp.isfinite(ana) & xp.isfinite(num), ana, xp.zeros_like(ana))
            n0 = xp.where(xp.isfinite(num), num, xp.zeros_like(num))
            self.row_cross = self.row_cross + xp.sum(a0 * n0, axis=0)
            self.row_num_sq = self.row_num_sq + xp.sum(n0 * n0, axis=0)
        self.keep_worst(kind, entries, start, xp=xp, forward=forward)
        if kind == "entry" and self.error_map_t is not None:
            ratio = error_ratio(entries, xp)
            stop = start + ratio.shape[0]
            self.error_map_t[start:stop, :] = xp.maximum(self.error_map_t[start:stop, :], ratio)
            self.undecided_cells += undecided_cells(entries, start, self.p.adapter.to_numpy)

    def add(self, tally: Tally, direction: str, entry: bool) -> None:
        """Add a tally to the check's, its direction's and (``entry``) the entries'."""
        self.tally.merge(tally)
        self.directions.setdefault(direction, Tally()).merge(tally)
        if entry:
            self.entry_tally.merge(tally)

    def count_flags(self, entries: Entries, xp: Any) -> None:
        """Count what the report explains: uncertain entries by kind, and
        entries that agree on a kink."""
        flags = [("rough_agreeing", entries.rough_agreeing)]
        if entries.exceeding:
            flags += [
                ("nonfinite", entries.nonfinite),
                ("rough", entries.rough),
                ("marginal", entries.marginal),
            ]
            flags += [
                ("steep", entries.steep),
                ("coarse", entries.coarse),
                ("faint", entries.faint),
            ]
            # "marginal" counts what the others do not explain.
            others = [f for f in (entries.coarse, entries.faint) if f is not None]
            if others:
                rest = entries.marginal
                for other in others:
                    rest = rest & ~other
                flags[3] = ("marginal", rest)
        for key, flag in flags:
            if flag is None:
                continue
            count = int(xp.sum(xp.astype(flag, xp.int64)))
            if count:
                self.uncertain_kinds[key] = self.uncertain_kinds.get(key, 0) + count
                if key in ("steep", "coarse"):
                    self._widest_tolerance(key, entries, flag, xp)

    def _widest_tolerance(self, key: str, entries: Entries, flag: Any, xp: Any) -> None:
        """Keep, for the report, the widest tolerance relative to the size of
        its entry among those flagged ``key``."""
        size = xp.abs(entries.analytical) + xp.abs(entries.numerical)
        positive = size > 0
        ratio = entries.tolerance / xp.where(positive, size, xp.ones_like(size))
        ratio = xp.where(flag & positive, ratio, xp.zeros_like(ratio))
        widest = float(xp.max(ratio))
        self.widest[key] = max(self.widest.get(key, 0.0), widest)

    def _tally_arguments(self, entries: Entries, start: int, by_rows: bool) -> None:
        """Split a batch by differentiated argument: input coordinates run
        along the rows (entries) or the columns (cotangent products)."""
        xp, p = self.xp, self.p
        width = entries.error.shape[0 if by_rows else 1]
        for slot, tally in zip(p.in_layout.slots, self.by_argument):
            lo = max(start, slot.offset) - start
            hi = min(start + width, slot.offset + slot.width) - start
            if lo >= hi:
                continue
            part = entries.map(lambda a, lo=lo, hi=hi: a[lo:hi, :] if by_rows else a[:, lo:hi])
            tally.merge(Tally.of(part, xp))

    def count_settled(self) -> None:
        """Nonzero entries of the columns booked by their norms (see
        strategies.settled.SettledBook), which only the diagnosis of a failed
        check needs. Counted on the stored analytical side: the two sides
        agree there far below the threshold (sqrt(eps) of the chunk's
        largest entry)."""
        xp = self.xp
        for i, lo, hi, threshold in self.uncounted:
            active = int(xp.count_nonzero(xp.abs(self.jac[:, lo:hi]) > threshold))
            for tally in (self.by_argument[i], self.tally, self.entry_tally):
                tally.active += active
            self.directions["rev"].active += active
        self.uncounted = []

    # -- the worst entries ---------------------------------------------------------
    def keep_worst(
        self,
        kind: str,
        entries: Entries,
        start: int,
        positions: list[int] | None = None,
        xp: Any = None,
        forward: bool = False,
        located: tuple[list[int], list[int]] | None = None,
    ) -> None:
        """Keep the entries with the largest error / tolerance. ``positions``,
        when given, are those (from ``start``) of the batch's rows;
        ``located``, the (input, output) of each entry of a one-row batch."""
        xp = self.xp if xp is None else xp
        ratio = error_ratio(entries, xp)
        if math.prod(ratio.shape) == 0:
            return
        if (
            not entries.exceeding
            and len(self.worst) >= WORST
            and float(xp.max(ratio)) <= min(m.ratio for m in self.worst)
        ):
            return  # nothing here would make the list
        for row, col in self._worst_places(ratio, xp):
            values = {
                name: getattr(entries, name)[row, col]
                if ratio.ndim == 2
                else getattr(entries, name)[row]
                for name in _WORST_FIELDS
            }
            ana, num, err, tol = (
                float(values[name]) for name in ("analytical", "numerical", "error", "tolerance")
            )
            status = (
                "wrong"
                if bool(values["wrong"])
                else "uncertain"
                if bool(values["uncertain"])
                else "ok"
            )
            place = row if positions is None else positions[row]
            if located is not None:
                place, col = located[0][col], located[1][col]
            self.worst.append(
                self._mismatch(kind, place, col, start, ana, num, err, tol, status, forward)
            )
        self.worst.sort(key=lambda m: (_RANK[m.status], -m.ratio))
        del self.worst[WORST:]

    def _worst_places(self, ratio: Any, xp: Any) -> list[tuple[int, int]]:
        """(row, column) of the WORST largest ``ratio``s, largest first."""
        host = (lambda a: a) if xp is host_xp else self.p.adapter.to_numpy
        if ratio.ndim != 2:
            order = xp.argsort(-ratio)[:WORST]
            return [(int(i), 0) for i in host(order)]
        # Best rows first, then the best entries among them: no full sort.
        # (Slices stay within the array: the Array API leaves others undefined.)
        rows = xp.argsort(-xp.max(ratio, axis=1))[: min(WORST, ratio.shape[0])]
        sub = xp.take(ratio, rows, axis=0)
        cols = sub.shape[1]
        order = xp.argsort(-xp.reshape(sub, (-1,)))[: min(WORST, math.prod(sub.shape))]
        row_ids = host(rows)
        return [(int(row_ids[int(i) // cols]), int(i) % cols) for i in host(order)]

    def _mismatch(
        self,
        kind: str,
        row: int,
        col: int,
        start: int,
        ana: float,
        num: float,
        err: float,
        tol: float,
        status: str,
        forward: bool = False,
    ) -> Mismatch:
        """Name a compared value. Entries are (input start + row, output col);
        cotangent products (probe row, input start + col); tangent products
        (probe row, output col); probes (probe row)."""
        p = self.p
        values = (ana, num, err, tol, status)
        if kind == "probe":
            # Forward probes come as (probe, output) arrays; reverse ones as
            # one value per cotangent, two per probe.
            name = f"probe {row}" if forward else f"probe {row // 2}, cotangent {row % 2 + 1}"
            return Mismatch(kind, name, (), "", (), *values)
        if kind == "tangent":
            o_slot, o_index, o_part = p.out_layout.owner(col)
            name = f"random tangent {row}"
            return Mismatch(kind, name, (), p.out_names[o_slot], o_index, *values, o_part)
        slot, index, part = p.in_layout.owner(start + (col if kind == "cotangent" else row))
        if kind == "cotangent":
            return Mismatch(kind, p.in_names[slot], index, str(row), (), *values, part)
        o_slot, o_index, _ = p.out_layout.owner(col)
        output = p.out_names[o_slot]
        return Mismatch(kind, p.in_names[slot], index, output, o_index, *values, part)

    def error_map(self) -> tuple[tuple[float, ...], ...]:
        """error / tolerance per Jacobian entry, (outputs, inputs), for pictures."""
        if self.error_map_t is None:
            return ()
        host = self.p.adapter.to_numpy(self.xp.matrix_transpose(self.error_map_t))
        return tuple(tuple(float(v) for v in row) for row in host)


def row_scale(terms: Any, xp: Any) -> Any:
    """Per row of ``terms`` (probes, width), its largest finite entry: the
    scale of the terms behind every product of that probe."""
    if math.prod(terms.shape) == 0:
        return terms
    finite = xp.where(xp.isfinite(terms), terms, xp.zeros_like(terms))
    return xp.max(finite, axis=1, keepdims=True)


def entry_scale(num: Any, xp: Any) -> Any:
    """Size of the terms behind an entry, which its rounding scales with:
    the largest numerical entry of its chunk. An entry that comes out
    small by cancellation carries the rounding of its terms."""
    magnitude = xp.abs(num)
    if not all_finite(magnitude, xp):
        magnitude = xp.where(xp.isfinite(magnitude), magnitude, xp.zeros_like(magnitude))
    return xp.max(magnitude) if math.prod(magnitude.shape) else xp.zeros_like(magnitude)


def error_ratio(entries: Entries, xp: Any) -> Any:
    """error / tolerance: 0 where both are 0, inf where only the tolerance is
    (or either is NaN); never a division warning."""
    tol = entries.tolerance
    error = entries.error
    positive = tol > 0
    ratio = error / xp.where(positive, tol, xp.ones_like(tol))
    undefined = (~positive & (error > 0)) | (error != error) | (tol != tol)
    return xp.where(undefined, xp.full_like(ratio, math.inf), xp.where(positive, ratio, 0 * ratio))
