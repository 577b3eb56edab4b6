"""The analytical side of a full reverse check, built once for every strategy
that compares it column by column: the Jacobian from one-hot cotangents
(batched VJPs through a reused buffer), and VJPs of random dense cotangents."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..parts import Parts
from ..problem import _to_xp

#: Random dense cotangents (tangents) compared besides the one-hot rows.
DENSE_PROBES = 2
#: Exact scale factors for one-hot cotangents: powers of two, so scaling and
#: unscaling is exact in every dtype, and never +-1, so a rule that ignores
#: its incoming gradient can neither pass nor pass for a sign flip.
ONE_HOT_SCALES = (-2.0, -0.5, 0.5, 2.0)
#: Jacobian entries beyond which the analytical Jacobian is stored in float32
#: (800 MB in float64 at n = m = 10^4; half that in float32).
STORE_ENTRIES = 1 << 25


@dataclass
class ReverseSide:
    """The analytical Jacobian ``(m, n)`` as its VJP rows came (in float32
    past STORE_ENTRIES), with its rounding against the wider dtypes (or None);
    and DENSE_PROBES random cotangents ``(probes, m)`` with their VJPs
    ``(probes, n)`` and those VJPs' rounding (or None)."""

    jac: Any
    jac_err: Any
    dense_cots: Any
    dense_ana: Any
    dense_err: Any

    def columns(self, start: int, stop: int, dtype: Any, xp: Any) -> tuple[Any, Any]:
        """Columns ``start:stop`` of the stored Jacobian and of its rounding,
        in ``dtype``, as rows ``(columns, m)`` (copies: strided reads of a
        few columns, once each)."""
        ana = _transposed_copy(self.jac[:, start:stop], dtype, xp)
        if self.jac_err is None:
            return ana, None
        return ana, _transposed_copy(self.jac_err[:, start:stop], dtype, xp)


def _transposed_copy(block: Any, dtype: Any, xp: Any) -> Any:
    return xp.astype(xp.matrix_transpose(block), dtype, copy=True)


def measure_reverse_side(parts: Parts) -> ReverseSide:
    """Every VJP of a full reverse check: one-hot cotangents scaled by
    ONE_HOT_SCALES (drawn per output, kept in the ledger for the diagnosis),
    then the random dense cotangents."""
    xp, p, ledger = parts.xp, parts.problem, parts.ledger
    n, m = p.in_layout.size, p.out_layout.size
    parts.evaluator.expected += m  # the VJP rows count as work too
    scales = parts.rng.choice(ONE_HOT_SCALES, size=m)
    ledger.row_scales = _to_xp(scales, xp, p.x0)
    storage = _storage_dtype(parts, n, m)
    jac = ledger.jac = p.adapter.empty((m, n), storage, p.x0)
    # |analytical - the same rule in the wider dtypes|: its rounding.
    jac_err = None
    if p.wide_primals is not None:
        jac_err = p.adapter.empty((m, n), storage, p.x0)
    _one_hot_rows_through_one_buffer(parts, jac, jac_err, storage)
    dense_cots = parts.analytical.random_cotangents(DENSE_PROBES)
    dense_ana, dense_wide = parts.analytical.vjp(dense_cots)
    parts.analytical.watch_vjps(dense_ana)
    dense_err = None if dense_wide is None else xp.abs(dense_ana - dense_wide)
    ledger.row_cross = xp.zeros((m,), dtype=p.work_dtype, device=parts.device)
    ledger.row_num_sq = xp.zeros((m,), dtype=p.work_dtype, device=parts.device)
    return ReverseSide(jac, jac_err, dense_cots, dense_ana, dense_err)


def _storage_dtype(parts: Parts, n: int, m: int) -> Any:
    """The dtype the analytical Jacobian is kept in: the work dtype, or
    float32 past STORE_ENTRIES, whose rounding then joins the analytical
    side's in the tolerances (the ledger's ``eps_store``)."""
    xp, p = parts.xp, parts.problem
    storage = p.work_dtype
    if n * m > STORE_ENTRIES and float(xp.finfo(storage).eps) < 1e-10:
        storage = xp.float32
        parts.ledger.eps_store = float(xp.finfo(storage).eps)
        p.notes.append(f"the analytical Jacobian ({m} x {n}) was held in float32 to bound memory")
    return storage


def _one_hot_rows_through_one_buffer(parts: Parts, jac: Any, jac_err: Any, storage: Any) -> None:
    """Fill ``jac`` (and ``jac_err``) from batched VJPs of scaled
    one-hot cotangents.

    One buffer of one-hot cotangents serves every batch, its nonzeros
    written before each VJP and cleared once the batch's rows are copied
    out. It assumes nothing keeps the rows past their batch: a backward may
    return its incoming gradient itself or a view of it (x + 1, reshape,
    sum, a straight-through estimator), so the rows may be the buffer. A
    fresh (rows, m) array of zeros per batch took a tenth of the VJP's time,
    8 ms of a check at n = 3000."""
    xp, p, ledger = parts.xp, parts.problem, parts.ledger
    m = p.out_layout.size
    rows_per_vjp = vjp_rows_per_batch(parts)
    # The scales are powers of two: multiplying by their reciprocals
    # unscales exactly, and a product is several times cheaper than a
    # quotient.
    unscale = 1.0 / ledger.row_scales
    onehot = xp.zeros((min(m, rows_per_vjp) * m,), dtype=p.work_dtype, device=parts.device)
    for start in range(0, m, rows_per_vjp):
        stop = min(m, start + rows_per_vjp)
        row_unscale = unscale[start:stop][:, None]
        ones = slice(start, start + (stop - start - 1) * (m + 1) + 1, m + 1)
        onehot[ones] = ledger.row_scales[start:stop]
        cotangents = xp.reshape(onehot[: (stop - start) * m], (stop - start, m))
        rows, wide = parts.analytical.vjp(cotangents)
        parts.evaluator.advance(stop - start)
        parts.analytical.watch_vjps(rows)
        # Rows in place, contiguous: stored transposed, the strided writes
        # took 0.43 s of a 1.8 s check at n = m = 10^4.
        jac[start:stop, :] = xp.astype(rows * row_unscale, storage, copy=False)
        if jac_err is not None:
            err = xp.abs(rows - wide) * xp.abs(row_unscale)
            jac_err[start:stop, :] = xp.astype(err, storage, copy=False)
        onehot[ones] = 0.0  # after the last use of rows, which may be onehot


def vjp_rows_per_batch(parts: Parts) -> int:
    """Cotangents per batched VJP: as many as fit the framework's
    ``vjp_batch_bytes`` with their VJP rows."""
    p = parts.problem
    n, m = p.in_layout.size, p.out_layout.size
    return max(1, p.adapter.vjp_batch_bytes // (8 * (n + m + 1)))
