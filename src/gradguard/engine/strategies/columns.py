"""Column by column: the full check, every Jacobian entry compared.

Each chunk of input coordinates gets the full central stencil (numerical
columns of J), compared entry by entry with the analytical Jacobian (reverse:
rows from one-hot cotangents, see :mod:`.reverse_jacobian`; forward: JVPs of
scaled one-hot tangents) through :meth:`~gradguard.engine.confirm.Confirmation.judge_entries`,
plus random dense cotangents (tangents) compared as products. Settlers
(:mod:`.settled`) may settle columns first; only what they leave open gets
the stencil here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...core.verdict import Entries, count_multiple
from ..confirm import Block
from ..ledger import entry_scale, row_scale
from ..numerical import Fields
from ..parts import Parts
from ..problem import _device, _to_xp
from ..spans import Ranges, chunks
from .reverse_jacobian import DENSE_PROBES, ONE_HOT_SCALES, ReverseSide, measure_reverse_side
from .settled import SettledBook, Settler

#: Makes a settler for a check (see settled.Settler).
SettlerKind = Callable[[Parts], Settler]


class ColumnByColumn:
    """The full check in ``direction`` ("rev", "fwd" or "both"); ``settlers``
    settle columns first, in order (reverse mode only)."""

    def __init__(self, parts: Parts, direction: str, settlers: Sequence[SettlerKind] = ()):
        self.parts = parts
        self.rev = direction in ("rev", "both")
        self.fwd = direction in ("fwd", "both")
        self.settler_kinds = settlers

    def measure(self) -> None:
        """Every Jacobian entry. Arrays here are ``(columns, outputs)``: one
        row per input coordinate, the orientation the differences come in."""
        parts = self.parts
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        n, m = p.in_layout.size, p.out_layout.size
        ledger.start_error_map()
        ledger.multiple = count_multiple(n * m * (2 if self.rev and self.fwd else 1))
        settlers = [make(parts) for make in self.settler_kinds]
        side = None
        if self.rev:
            side = measure_reverse_side(parts)
        forward = _ForwardProducts(parts) if self.fwd else None
        if ledger.keep:
            ledger.num_t = xp.empty((n, m), dtype=p.work_dtype, device=parts.device)
        ranges: Ranges = [(0, n)]
        if settlers and side is not None:
            book = SettledBook.of(parts, side)
            for settler in settlers:
                ranges = settler.settle(ranges, side, book)
            book.close(parts)
        for start, stop in chunks(ranges, parts.numerical.columns_per_chunk):
            self._measure_chunk(start, stop, side, forward)
        if forward is not None:
            forward.compare()
        if ledger.keep and n:
            ledger.jacobians["numerical"] = xp.matrix_transpose(ledger.num_t)
            if side is not None:
                ledger.jacobians["analytical"] = side.jac

    def _measure_chunk(
        self, start: int, stop: int, side: ReverseSide | None, forward: _ForwardProducts | None
    ) -> None:
        """The full stencil of columns ``start:stop``, judged in each direction."""
        parts = self.parts
        xp, ledger = parts.xp, parts.ledger
        dd = parts.numerical.partials(start, stop)
        fields = parts.numerical.with_noise(dd)
        if ledger.keep:
            ledger.num_t[start:stop, :] = fields[0]
        scale = entry_scale(fields[0], xp)
        if side is not None:
            fields = self._reverse_chunk(start, stop, side, scale, fields)
        if forward is not None:
            fields = forward.add_chunk(start, stop, scale, fields)

    def _reverse_chunk(
        self, start: int, stop: int, side: ReverseSide, scale: Any, fields: Fields
    ) -> Fields:
        """Entries of columns ``start:stop`` against the stored analytical
        rows, and the dense cotangents' products over them."""
        parts = self.parts
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        ana, ana_err = side.columns(start, stop, p.work_dtype, xp)
        block = Block(start, stop, ana, ana_err, scale)
        fields, entries = parts.confirmation.judge_entries(block, fields)
        num, trunc, rnd, rough, bad = fields
        if ledger.keep:  # the re-measures may have replaced entries
            ledger.num_t[start:stop, :] = num
        ledger.record("entry", entries, start, rows=True)
        # Random dense cotangents: u^T J for the columns of this chunk.
        weights = xp.abs(side.dense_cots)  # (probes, m)
        # The analytical side's rounding scales with the terms of the
        # whole product, not of this column alone (which may all be
        # zero by cancellation): the largest over the chunk.
        terms = weights @ xp.matrix_transpose(xp.abs(num))
        products = (
            side.dense_cots @ xp.matrix_transpose(num),
            weights @ xp.matrix_transpose(trunc),
            weights @ xp.matrix_transpose(rnd),
            weights @ xp.matrix_transpose(rough),
            xp.broadcast_to(xp.any(bad, axis=1)[None, :], (DENSE_PROBES, stop - start)),
        )
        dense_err = side.dense_err
        ledger.compare(
            "cotangent",
            side.dense_ana[:, start:stop],
            products,
            row_scale(terms, xp),
            start,
            analytical_error=None if dense_err is None else dense_err[:, start:stop],
            undecided=None if parts.numerical.wide_steps else undecided(entries, xp, axis=1),
        )
        return fields


class _ForwardProducts:
    """Forward mode: entries from JVPs of scaled one-hot tangents, chunk by
    chunk, and random dense tangents v whose J v the chunks add up to,
    compared with their JVPs at the end."""

    def __init__(self, parts: Parts):
        self.parts = parts
        xp, p = parts.xp, parts.problem
        m = p.out_layout.size
        self.tangents = parts.analytical.random_tangents(DENSE_PROBES)
        zeros = xp.zeros((DENSE_PROBES, m), dtype=p.work_dtype, device=parts.device)
        self.num, self.trunc, self.round, self.rough, self.terms = (zeros,) * 5
        # Outputs with an undecided entry in some column (see Ledger.compare).
        self.undecided = xp.zeros((1, m), dtype=xp.bool, device=parts.device)

    def add_chunk(self, start: int, stop: int, scale: Any, fields: Fields) -> Fields:
        """Entries of columns ``start:stop`` against their JVPs; their share of J v."""
        parts = self.parts
        xp, p = parts.xp, parts.problem
        c, n = stop - start, p.in_layout.size
        tscales = _to_xp(parts.rng.choice(ONE_HOT_SCALES, size=c), xp, p.x0)
        tangents = xp.eye(c, n, k=start, dtype=p.work_dtype, device=parts.device)
        tangents = tangents * tscales[:, None]
        columns, wide = parts.analytical.jvp(tangents)
        columns_err = None
        if wide is not None:
            columns_err = xp.abs(columns - wide) / xp.abs(tscales[:, None])
        block = Block(start, stop, columns / tscales[:, None], columns_err, scale)
        fields, entries = parts.confirmation.judge_entries(block, fields)
        num, trunc, rnd, rough, _ = fields
        parts.ledger.record("entry", entries, start, forward=True)
        if entries.exceeding and not parts.numerical.wide_steps:
            self.undecided = self.undecided | undecided(entries, xp, axis=0)
        v = self.tangents[:, start:stop]
        self.num = self.num + v @ num
        self.trunc = self.trunc + xp.abs(v) @ trunc
        self.round = self.round + xp.abs(v) @ rnd
        self.rough = self.rough + xp.abs(v) @ rough
        self.terms = self.terms + xp.abs(v) @ xp.abs(num)
        return fields

    def compare(self) -> None:
        """The dense tangents' JVPs against the J v the chunks added up."""
        parts = self.parts
        xp = parts.xp
        ana, wide = parts.analytical.jvp(self.tangents)
        nowhere = xp.zeros(self.num.shape, dtype=xp.bool, device=parts.device)
        # As for cotangents: the terms' scale, the largest over outputs.
        parts.ledger.compare(
            "tangent",
            ana,
            (self.num, self.trunc, self.round, self.rough, nowhere),
            row_scale(self.terms, xp),
            0,
            forward=True,
            analytical_error=None if wide is None else xp.abs(ana - wide),
            undecided=self.undecided,
        )


def undecided(entries: Entries, xp: Any, axis: int) -> Any:
    """Whether any entry is undecided along ``axis`` of a (columns, outputs)
    batch: per column (axis 1) as a (1, columns) row, per output (axis 0)
    as a (1, outputs) row."""
    if not entries.exceeding:
        shape = (1, entries.uncertain.shape[1 - axis])
        return xp.zeros(shape, dtype=xp.bool, device=_device(entries.uncertain))
    return xp.any(entries.uncertain, axis=axis)[None, :]
