"""The comparison: numerical and analytical derivatives, entry by entry.

Full mode compares every Jacobian entry (finite differences along each
coordinate, in chunks, or along all of an argument's coordinates at once
where each output depends on at most one of them; the analytical Jacobian
from scaled one-hot cotangents) plus random dense cotangents; probe mode
compares random projections u . J . v. Tolerances, verdicts and diagnosis come from
:mod:`gradguard.core`; this module keeps the books and writes the Report.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import array_api_compat.numpy as host_xp
import numpy as np
from array_api_compat import array_namespace

from .._errors import (
    ArgumentError,
    PrecisionError,
    UnsupportedError,
)
from .._numpy_errors import callers_settings
from ..core import diagnosis as core_diagnosis
from ..core.differences import (
    COMPLEX_STEP,
    DirectionalDerivatives,
    complex_step_derivatives,
    coordinate_points,
    directional_derivatives,
    partial_derivatives,
)
from ..core.layout import FlatLayout
from ..core.norms import all_finite, row_norms
from ..core.sparsity import SoleEntries
from ..core.steps import default_steps
from ..core.verdict import (
    ANALYTICAL,
    BAND,
    ROUGH,
    ROUNDING,
    SAFETY,
    Entries,
    Tally,
    compare,
    count_multiple,
    doubt,
)
from ..report.report import ArgumentSummary, Mismatch, Report, Verdict
from .entry_map import undecided_cells
from .evaluation import Evaluator
from .locate import locate
from .locate_forward import locate_forward
from .problem import (
    WrongGradientShape,
    _describe,
    _device,
    _note,
    _Problem,
    _real_dtype,
    _rng,
    _to_xp,
    _wide_dtype,
)

#: Random dense cotangents (tangents) compared besides the one-hot rows.
DENSE_PROBES = 2
#: Differences between two evaluations at the same point beyond this many
#: units of rounding make f "noisy": flagged, not judged.
NOISE_ULPS = 64
#: Worst entries kept for the report.
WORST = 8
#: Bytes of perturbed points and outputs held at once: a chunk's arrays
#: then stay in a 32 MB last-level cache shared with other processes. With
#: VJP_BATCH_BYTES, a full check of x.sin() * x took the same or less than
#: with 1 << 25 and 1 << 22: 2.95 s against 3.09 s at n = 10^4, 114 ms
#: against 134 ms at n = 1000, even at 3000 (1 << 26 measured 5-20% slower).
MEMORY_BUDGET = 1 << 24
#: Bytes of one-hot cotangents and VJP rows per batched VJP (43 rows at
#: n = m = 3000; 350 rows measured twice as slow there).
VJP_BATCH_BYTES = 1 << 21
#: Jacobian entries beyond which the analytical Jacobian is stored in float32
#: (800 MB in float64 at n = m = 10^4; half that in float32).
STORE_ENTRIES = 1 << 25
#: Jacobian entries up to which the report carries error / tolerance per entry.
ERROR_MAP_ENTRIES = 1 << 16
#: How much longer the second step of a low-precision full check is.
WIDE_STEP = 8.0
#: Steps (times the check's) at which entries that disagree are measured
#: again, in turn, in float64 (see _Run._second_opinion).
SECOND_STEPS = (WIDE_STEP, WIDE_STEP**2)
#: Low precision: entries that a step cannot decide (f not smooth or not
#: finite within the stencil, or a disagreement that the next step does not
#: confirm) are measured again at steps SHORTER_STEP times shorter, up to
#: SHORTER_STEPS times (down to 1/64 of the first step): a kink, jump or pole
#: farther from x than about 3 such steps no longer reaches the stencil.
SHORTER_STEP = 4.0
SHORTER_STEPS = 3
#: Low precision: a wrong entry's estimate must also agree with a smooth one
#: at a step this many times shorter than the first, where one is smooth
#: (see _finest).
FINEST_STEP = 1024.0
#: Inputs from which a full reverse check screens columns with two points
#: first (also past KEEP_JACOBIAN_ENTRIES entries): x.sin() * x at n = 1000
#: took 36 ms screened against 135 ms with every column's full stencil,
#: 22 against 65 ms at n = 600.
SCREEN_INPUTS = 512
#: Whether an argument whose every output depends on at most one of its
#: entries (as the analytical Jacobian has it) settles from one perturbation
#: of all of them (see _settle_together). Off, every column takes its own.
GROUP_COLUMNS = True
#: Largest ratio of two steps of one argument for which its columns settle
#: together: a second entry of a row, at column k, shows in the measurement
#: of column j scaled by step k / step j (see _settle_together).
STEP_SPREAD = 16.0
#: Sizes up to which the whole numerical Jacobian is kept for diagnosis.
KEEP_JACOBIAN_ENTRIES = 1 << 20
#: Exact scale factors for one-hot cotangents: powers of two, so scaling and
#: unscaling is exact in every dtype, and never +-1, so a rule that ignores
#: its incoming gradient can neither pass nor pass for a sign flip.
ONE_HOT_SCALES = (-2.0, -0.5, 0.5, 2.0)
#: What a worst-list entry shows of its compared value.
_WORST_FIELDS = ("analytical", "numerical", "error", "tolerance", "wrong", "uncertain")


class _Run:
    """The numerical and analytical sides of one check, and their comparison."""

    def __init__(
        self,
        problem: _Problem,
        *,
        seed: int,
        eps: float | None,
        accuracy: int | None,
        method: str,
        rtol: Any,
        atol: Any,
        vectorize: bool,
        executor: Executor | None,
        progress: bool | None,
    ):
        self.p = problem
        self.xp = problem.xp
        self.device = _device(problem.x0)
        self.seed = seed
        self.rng = _rng(seed)
        self.rtol = rtol
        self.atol = atol
        xp = self.xp
        p = problem
        n, m = p.in_layout.size, p.out_layout.size
        low_precision = float(xp.finfo(p.work_dtype).eps) > 1e-10
        self.accuracy = accuracy if accuracy is not None else 6 if low_precision else 4
        # Chunks sized to MEMORY_BUDGET: a column of a full check holds its
        # perturbed points and outputs plus some ten (columns, m) arrays of
        # bookkeeping; small chunks also stay in cache.
        per_column = 8 * (self.accuracy * (n + m) + 10 * m + 1)
        self.columns_per_chunk = max(1, MEMORY_BUDGET // per_column)
        self.rows_per_vjp = max(1, VJP_BATCH_BYTES // (8 * (n + m + 1)))
        k_rows = self.accuracy * self.columns_per_chunk
        self.evaluator = Evaluator(
            p.adapter,
            p.fn,
            p.eval_like,
            vectorize=vectorize,
            chunk_rows=k_rows,
            executor=executor,
            progress=progress,
        )
        # f at x: the setup's call when it ran in these dtypes. It also
        # validates the batched path (see Evaluator), and is compared with a
        # second evaluation for nondeterminism (see noise).
        if p.first_outputs is not None:
            self.f0 = p.out_layout.flatten_one(p.first_outputs, xp, p.work_dtype)
            # Same dtypes: the point is the primals themselves.
            point = [p.adapter.to_core(a) for a in p.eval_like]
            self.evaluator.reference = (point, p.first_outputs)
        else:
            self.f0 = self.evaluate_single(p.x0)
        self._noise: Any = None
        self.nondeterministic = self.noisy = False
        # The batched points a full check evaluates, for the progress bar.
        self.evaluator.expected = self.accuracy * p.in_layout.size
        self.complex_step = method == "complex-step"
        # The precision f's values actually have: an output narrower than the
        # numerical side's dtype (f computes in float64, returns float32)
        # rounds to its own dtype, and the step and rounding follow it.
        # (Evaluated in wider dtypes than the caller's, f was seen to return
        # them: see _choose_precision.)
        work_eps = float(xp.finfo(p.work_dtype).eps)
        out_eps = [float(xp.finfo(_real_dtype(xp, d)).eps) for d in p.out_dtypes]
        if p.eval_dtypes != p.in_dtypes:
            out_eps = [work_eps]
        self.eps_values = max([work_eps, *out_eps])
        self.output_eps: Any = None
        if self.eps_values > work_eps:
            per_output = [max(work_eps, e) for e in out_eps]
            widths = [s.width for s in p.out_layout.slots]
            host = np.repeat(np.asarray(per_output), widths)
            self.output_eps = _to_xp(host, xp, p.x0)
        # Tolerances widen slowly with the number of entries compared (set by
        # each strategy; see count_multiple).
        self.multiple = 1.0
        # The scale of a derivative where f does not move at all (a batch
        # of exact zeros): |f| / |x|, in units of 1 like the steps.
        f_size = float(xp.max(xp.abs(self.f0))) if self.f0.shape[0] else 0.0
        x_size = float(xp.max(xp.abs(p.x0))) if p.x0.shape[0] else 0.0
        if not math.isfinite(f_size):
            f_size = 0.0
        self.floor_scale = max(1.0, f_size) / max(1.0, x_size)
        # In low precision without a fixed step, a second, longer step per entry.
        # Float32 only: in float16 / bfloat16 the steps are already long.
        unit = float(xp.finfo(p.work_dtype).eps)
        self.wide_steps = 1e-10 < unit < 1e-5 and eps is None and not self.complex_step
        # Steps shortened where a kink or jump is within reach (see
        # _shorter_steps); a step the caller fixed stays as it is.
        self.shorter_steps = eps is None and not self.complex_step
        if self.wide_steps:
            self.evaluator.expected *= 2
        if self.complex_step:
            self._check_complex_step()
        if eps is not None:
            self.steps = xp.full(p.x0.shape, float(eps), dtype=p.work_dtype, device=self.device)
            moved = (p.x0 + self.steps) - (p.x0 - self.steps)
            if not bool(xp.all(xp.abs(moved - 2 * self.steps) <= 1e-3 * 2 * self.steps)):
                largest = float(xp.max(xp.abs(p.x0)))
                working = float(xp.finfo(p.work_dtype).eps) ** (1 / 3) * max(1.0, largest)
                raise PrecisionError(
                    f"eps: {eps:g} is lost to rounding at this x in {_describe([p.work_dtype])}; "
                    f"use eps={working:.3g} or leave eps=None for steps chosen per entry"
                )
        else:
            self.steps = self._default_steps()
        self.tally = Tally()
        self.eps_store = 0.0  # rounding of the stored analytical Jacobian, if any
        # error / tolerance of every entry (inputs, outputs), kept for small checks.
        self.error_map_t: Any = None
        self.undecided_cells: list[tuple[int, int]] = []  # of the map: (output, input)
        self.by_argument = [Tally() for _ in p.in_layout.slots]
        self.directions: dict[str, Tally] = {}
        self.worst: list[Mismatch] = []
        self.reasons: list[str] = []
        self.uncertain_kinds: dict[str, int] = {}
        # Per kind of unresolved entry, the widest tolerance / |entry| seen.
        self.widest: dict[str, float] = {}
        self.keep = p.in_layout.size * p.out_layout.size <= KEEP_JACOBIAN_ENTRIES
        self.jacobians: dict[str, Any] = {}
        self.row_scales: Any = None
        self.row_cross: Any = None
        self.row_num_sq: Any = None
        self.dense_wrong = 0
        # The first VJP seen, and whether every later one (for other
        # cotangents) came back the same: a rule that ignores its cotangent.
        self.first_vjp: Any = None
        self.vjps_identical = True
        self.entry_tally = Tally()
        # Settled columns whose nonzero entries are not counted yet:
        # (argument, first column, stop, threshold); see _count_settled.
        self.uncounted: list[tuple[int, int, int, float]] = []
        # Worst-list candidates of the screen: (errors, columns, rows of its arrays).
        self.candidates: tuple[list[float], list[int], tuple[Any, ...]] | None = None
        # The analytical Jacobian of a full reverse check, transposed (n, m).
        self.jac_t: Any = None
        self.one_hot_wrong = 0
        # Arguments whose VJPs were all zero in a failing probe check.
        self.zero_arguments: list[str] = []

    # -- evaluation ------------------------------------------------------
    def evaluate(self, points: Any) -> Any:
        p = self.p
        leaves = p.in_layout.unflatten(points, self.xp, p.eval_dtypes)
        try:
            outputs = self.evaluator(leaves)
        except Exception as exc:
            _note(exc, "gradguard: f raised this at a perturbed point near x (numerical side)")
            raise
        return p.out_layout.flatten(outputs, self.xp, p.work_dtype)

    def evaluate_single(self, x: Any) -> Any:
        p = self.p
        outputs = self.evaluator.single(self._point_leaves(x))
        return p.out_layout.flatten_one(outputs, self.xp, p.work_dtype)

    def _point_leaves(self, x: Any) -> list[Any]:
        p = self.p
        return [a[0, ...] for a in p.in_layout.unflatten(x[None, :], self.xp, p.eval_dtypes)]

    @property
    def noise(self) -> Any:
        """|f(x) - f(x) evaluated again| per output: nondeterminism. The
        second evaluation is f at x from the first batch, when that batch
        carried it (see Evaluator) and it came out the same. Else one plain
        call more; and where the batched one differed, which batching alone
        may do by rounding, two, so that a nondeterministic f has two
        chances to show it."""
        if self._noise is None:
            xp, p = self.xp, self.p
            identical = self.evaluator.reference_identical
            calls = 1 if identical is None else 0 if identical else 2
            self._noise = xp.zeros_like(self.f0)
            for _ in range(calls):
                difference = xp.abs(self.evaluate_single(p.x0) - self.f0)
                self._noise = xp.maximum(self._noise, difference)
            if calls:
                unit = float(xp.finfo(p.work_dtype).eps)
                self.nondeterministic = float(xp.max(self._noise)) > 0
                self.noisy = self.nondeterministic and bool(
                    xp.any(self._noise > NOISE_ULPS * unit * xp.abs(self.f0))
                )
        return self._noise

    def derivatives(self, directions: Any) -> DirectionalDerivatives:
        """Numerical ``J @ d`` along the rows of ``directions`` (scaled per entry)."""
        xp, p = self.xp, self.p
        if self.complex_step:
            small = directions * (self._scale() * COMPLEX_STEP)[None, :]
            return complex_step_derivatives(self.evaluate_complex, p.x0, small, xp)
        return directional_derivatives(
            self.evaluate,
            p.x0,
            directions * self.steps[None, :],
            self.f0,
            xp,
            self.accuracy,
            self.output_eps,
        )

    def _smooth_derivatives(self, directions: Any) -> DirectionalDerivatives:
        """:meth:`derivatives`; in low precision, a direction whose stencil
        is not smooth or not finite (a kink, jump or pole within its reach)
        is measured again along steps SHORTER_STEP times shorter, up to
        SHORTER_STEPS times, and the first smooth estimate stands."""
        dd = self.derivatives(directions)
        if not self.wide_steps:
            return dd
        xp = self.xp
        for level in range(1, SHORTER_STEPS + 1):
            rows = self._unsmooth_rows(dd)
            if not rows.any():
                break
            flagged = np.flatnonzero(rows)
            index = xp.asarray(flagged, device=self.device)
            shorter = xp.take(directions, index, axis=0) * (SHORTER_STEP**-level)
            short = self.derivatives(shorter)
            smooth = ~self._unsmooth_rows(short)
            # Row r of the result: row `at[r]` of the shorter measurement
            # where that row is flagged and came out smooth, else its own.
            take = np.zeros(rows.shape, dtype=bool)
            take[flagged[smooth]] = True
            at = np.zeros(rows.shape, dtype=np.int64)
            at[flagged] = np.arange(flagged.size)
            where = xp.asarray(take, device=self.device)[:, None]
            positions = xp.asarray(at, device=self.device)
            dd = DirectionalDerivatives(
                *(
                    xp.where(where, xp.take(getattr(short, f), positions, axis=0), getattr(dd, f))
                    for f in _DD_FIELDS
                )
            )
        return dd

    def _unsmooth_rows(self, dd: DirectionalDerivatives) -> Any:
        """Per direction (host booleans), whether some output's stencil is
        rough as compare() has it (the row's largest value as the scale) or
        not finite."""
        xp = self.xp
        value = dd.value
        magnitude = xp.abs(value) + xp.max(xp.abs(value), axis=1, keepdims=True)
        relative = float(xp.finfo(value.dtype).eps) ** 0.5
        rough = (dd.roughness > ROUGH * dd.rounding) & (dd.roughness > relative * magnitude)
        bad = rough | dd.nonfinite | ~xp.isfinite(value)
        return np.asarray(self.p.adapter.to_numpy(xp.any(bad, axis=1)), dtype=bool)

    def partials(self, start: int, stop: int) -> DirectionalDerivatives:
        """Numerical ``J[:, start:stop]``, transposed: ``(stop - start, m)``,
        every field per unit of the coordinate."""
        xp, p = self.xp, self.p
        if not self.complex_step:
            steps = self.steps[start:stop]
            dd = partial_derivatives(
                self.evaluate, p.x0, steps, start, self.f0, xp, self.accuracy, self.output_eps
            )
            if not self.wide_steps:
                return dd
            # Low precision: also a step WIDE_STEP times longer, and per entry
            # whichever estimate claims the smaller error. Where f is nearly
            # linear (small truncation) the longer step divides rounding.
            far = partial_derivatives(
                self.evaluate,
                p.x0,
                steps * WIDE_STEP,
                start,
                self.f0,
                xp,
                self.accuracy,
                self.output_eps,
            )
            better = (
                far.truncation + ROUNDING * far.rounding < dd.truncation + ROUNDING * dd.rounding
            )
            # Trust the long step only inside the asymptotic regime: its
            # truncation estimate grows no faster than the stencil's order says.
            regime = far.truncation <= dd.truncation * WIDE_STEP ** (self.accuracy - 2)
            better = better & regime & ~far.nonfinite & (far.roughness <= dd.roughness * WIDE_STEP)
            # And only where the shorter step is smooth and the two agree: a
            # staircase (floor, round) sampled at about its own period looks
            # linear to the long stencil, with no truncation and no roughness.
            smooth = dd.roughness <= ROUGH * dd.rounding
            better = better & smooth & _consistent(_fields(dd), _fields(far), xp)

            def pick(a: Any, b: Any) -> Any:
                return xp.where(better, b, a)

            return DirectionalDerivatives(
                value=pick(dd.value, far.value),
                truncation=pick(dd.truncation, far.truncation),
                rounding=pick(dd.rounding, far.rounding),
                roughness=pick(dd.roughness, far.roughness),
                nonfinite=dd.nonfinite,
                direction=dd.direction,
            )
        c = stop - start
        mask = xp.eye(c, p.in_layout.size, k=start, dtype=p.work_dtype, device=self.device)
        dd = self.derivatives(mask)
        step = xp.sum(dd.direction * mask, axis=1)[:, None]
        return DirectionalDerivatives(
            value=dd.value / step,
            truncation=dd.truncation,
            rounding=dd.rounding / xp.abs(step),
            roughness=dd.roughness,
            nonfinite=dd.nonfinite,
            direction=step[:, 0],
        )

    def evaluate_complex(self, points: Any) -> Any:
        """``(k, n)`` complex points -> ``(k, m)`` complex outputs (complex step)."""
        p, xp = self.p, self.xp
        k = points.shape[0]
        leaves = [
            xp.reshape(points[:, s.offset : s.offset + s.size], (k, *s.shape))
            for s in p.in_layout.slots
        ]
        try:
            outputs = self.evaluator(leaves)
        except Exception as exc:
            raise ArgumentError(
                f"method: 'complex-step' needs f to accept complex input; it raised "
                f"{type(exc).__name__}: {exc}. Use method='central'"
            ) from exc
        return xp.concat([xp.reshape(o, (k, -1)) for o in outputs], axis=1)

    def _scale(self) -> Any:
        xp = self.xp
        return xp.maximum(xp.abs(self.p.x0), xp.ones_like(self.p.x0))

    def _check_complex_step(self) -> None:
        """Complex step is exact only for analytic f: compare one random
        direction with central differences before trusting it."""
        xp, p = self.xp, self.p
        if any(s.is_complex for s in p.in_layout.slots + p.out_layout.slots):
            raise ArgumentError(
                "method: 'complex-step' needs real inputs and outputs; use method='central'"
            )
        v = self._random(1, p.in_layout.size)
        self.complex_step = False
        h = default_steps(p.x0, xp, order=2)
        central = directional_derivatives(self.evaluate, p.x0, v * h[None, :], self.f0, xp, 4)
        self.complex_step = True
        small = v * (self._scale() * COMPLEX_STEP)[None, :]
        exact = complex_step_derivatives(self.evaluate_complex, p.x0, small, xp)
        # Same direction, different lengths: compare per unit of length.
        ratio = xp.sum(small * v) / xp.sum((v * h[None, :]) * v)
        agree = compare(
            exact.value / ratio,
            central.value,
            central.truncation,
            central.rounding,
            central.roughness,
            central.nonfinite,
            xp.abs(central.value),
            p.eps_analytical,
            xp,
        )
        if bool(xp.any(agree.wrong | agree.uncertain)):
            raise ArgumentError(
                "method: 'complex-step' disagrees with central differences for this f, so f "
                "is not analytic in x (abs, max, comparisons, casts to real or .real); use "
                "method='central'"
            )

    def _default_steps(self) -> Any:
        xp, p = self.xp, self.p
        parts = []
        for slot, dtype in zip(p.in_layout.slots, p.eval_dtypes):
            x = p.x0[slot.offset : slot.offset + slot.width]
            real = _real_dtype(xp, dtype)
            # The error estimate is the order (accuracy - 2) stencil's: step for it.
            h = default_steps(
                xp.astype(x, real, copy=False), xp, order=self.accuracy - 2, eps=self.eps_values
            )
            parts.append(xp.astype(h, p.work_dtype, copy=False))
        if len(parts) == 1:
            return parts[0]
        return xp.concat(parts) if parts else xp.zeros((0,), dtype=p.work_dtype, device=self.device)

    def default_probes(self) -> int:
        # Low precision on either side hides a small error in any one probe:
        # more probes keep the chance of missing it negligible.
        eps = max(float(self.xp.finfo(self.p.work_dtype).eps), self.p.eps_analytical)
        return 8 if eps > 1e-10 else 1

    # -- analytical side ---------------------------------------------------
    def vjp(self, cotangents: Any) -> tuple[Any, Any]:
        """``(k, m)`` real cotangents -> ``(k, n)`` real VJPs via the framework,
        and the same rule's VJPs at the wider dtypes (None without them)."""
        p, xp = self.p, self.xp
        value = self._vjp(cotangents, p.primals, p.out_dtypes, p.analytical_vjp)
        if p.wide_primals is None:
            return value, None
        wide = p.wide_primals
        dtypes = [_wide_dtype(xp, d) for d in p.out_dtypes]

        def wide_vjp(cots: list[Any]) -> list[Any]:
            return p.adapter.vjp(p.fn, wide, cots, vectorize=p.vectorize)

        return value, self._vjp(cotangents, wide, dtypes, wide_vjp)

    def _vjp(self, cotangents: Any, primals: list[Any], out_dtypes: list[Any], rule: Any) -> Any:
        p, xp = self.p, self.xp
        cots = p.out_layout.unflatten(cotangents, xp, out_dtypes)
        framework = [p.adapter.from_core(c, like=o) for c, o in zip(cots, p.out_like)]
        try:
            with callers_settings():
                result = rule(framework)
            grads = [p.adapter.to_core(g) for g in result]
        except Exception as exc:
            if not isinstance(exc, UnsupportedError):
                _note(exc, "gradguard: raised by the derivative rule (reverse mode, VJP)")
            raise
        for g, like, name in zip(grads, primals, p.in_names):
            if tuple(g.shape[1:]) != tuple(like.shape):
                # A wrong gradient (tf.nn.silu's for a vector beta): fail.
                raise WrongGradientShape(name, tuple(g.shape[1:]), tuple(like.shape))
        return p.in_layout.flatten(grads, xp, p.work_dtype)

    def jvp(self, tangents: Any) -> tuple[Any, Any]:
        """``(k, n)`` real tangents -> ``(k, m)`` real JVPs, and the same at the
        wider dtypes (None without them)."""
        p, xp = self.p, self.xp
        value = self._jvp(tangents, p.primals, p.in_dtypes)
        if p.wide_primals is None:
            return value, None
        wide_dtypes = [_wide_dtype(xp, d) for d in p.in_dtypes]
        try:
            return value, self._jvp(tangents, p.wide_primals, wide_dtypes)
        except Exception:
            # No kernel for the wider dtypes (TensorFlow's dilated conv2d in
            # float64 on a CPU): the rounding estimate goes without it.
            return value, None

    def _jvp(self, tangents: Any, primals: list[Any], dtypes: list[Any]) -> Any:
        p, xp = self.p, self.xp
        tans = p.in_layout.unflatten(tangents, xp, dtypes)
        framework = [p.adapter.from_core(t, like=x) for t, x in zip(tans, primals)]
        try:
            with callers_settings():
                result = p.adapter.jvp(p.fn, primals, framework, vectorize=p.vectorize)
            outs = [p.adapter.to_core(o) for o in result]
        except Exception as exc:
            if not isinstance(exc, UnsupportedError):
                _note(exc, "gradguard: raised by the derivative rule (forward mode, JVP)")
            raise
        return p.out_layout.flatten(outs, xp, p.work_dtype)

    def _watch_vjps(self, rows: Any) -> None:
        """Keep track of whether every VJP so far is the same vector."""
        if not self.vjps_identical or rows.shape[0] == 0:
            return
        xp = self.xp
        if self.first_vjp is None:
            # A copy: the rows may be a cotangent buffer that is reused.
            self.first_vjp = xp.asarray(rows[0, :], copy=True)
        reference = self.first_vjp[None, :]
        spread = float(xp.max(xp.abs(rows - reference)))
        size = float(xp.max(xp.abs(self.first_vjp))) if self.first_vjp.shape[0] else 0.0
        self.vjps_identical = spread <= 1e-12 * size

    def _zero_arguments(self, rows: Any) -> list[str]:
        """Arguments whose every VJP in ``rows`` is exactly zero (for the
        diagnosis of random probes, which sum over the arguments)."""
        xp, p = self.xp, self.p
        return [
            name
            for name, slot in zip(p.in_names, p.in_layout.slots)
            if slot.width and not bool(xp.any(rows[:, slot.offset : slot.offset + slot.width]))
        ]

    def _round_to(self, values: Any, layout: FlatLayout, dtypes: list[Any]) -> Any:
        """Round real coordinates to what the analytical side actually receives."""
        xp = self.xp
        return layout.flatten(layout.unflatten(values, xp, dtypes), xp, self.p.work_dtype)

    def _random(self, rows: int, cols: int) -> Any:
        """Random directions or cotangents: either sign, magnitude uniform in
        [1, 3). Never near zero, so no entry's error is scaled down towards
        nothing: a wrong Jacobian entry shows in every projection at least
        at its own size (with normal numbers, a factor below 0.01 comes up in
        about one entry in a hundred). Wide, so a rule that clips its incoming
        cotangent anywhere below 3 (JAX's documented clip_gradient clips at
        1) is wrong on a share of the entries. And a uniform draw costs a
        quarter of a normal one, which dominates a probe of 10^4 entries."""
        host = self.rng.random((rows, cols))
        host *= 4.0
        host -= 2.0  # [-2, 2)
        host += np.copysign(1.0, host)  # [-3, -1) and [1, 3)
        return _to_xp(host, self.xp, self.p.x0)

    # -- full Jacobian -------------------------------------------------------
    def full(self, direction: str) -> None:
        """Every Jacobian entry. Arrays here are ``(columns, outputs)``: one
        row per input coordinate, the orientation the differences come in."""
        xp, p = self.xp, self.p
        n, m = p.in_layout.size, p.out_layout.size
        if n * m <= ERROR_MAP_ENTRIES:
            self.error_map_t = xp.zeros((n, m), dtype=p.work_dtype, device=self.device)
        rev = direction in ("rev", "both")
        fwd = direction in ("fwd", "both")
        self.multiple = count_multiple(n * m * (2 if rev and fwd else 1))
        # Large float64 reverse checks first settle what they can: a whole
        # argument from one stencil where each output depends on at most one
        # of its entries (see _settle_together), other columns from x +- h
        # alone (see _screen); only the rest get the full stencil.
        screening = (
            rev
            and not fwd
            and not self.complex_step
            and (n * m > KEEP_JACOBIAN_ENTRIES or n >= SCREEN_INPUTS)
            and self.accuracy == 4
            and float(xp.finfo(p.work_dtype).eps) < 1e-10
            and self.output_eps is None  # the screen's rounding is the work dtype's
        )
        if screening:
            # The represented 2h of every column, for the quotients.
            sizes = xp.abs((p.x0 + self.steps) - (p.x0 - self.steps))
            together = self._together_candidates() if self.error_map_t is None else []
            # Two points per column; columns that do not settle add their
            # stencil's points when they go on to it.
            self.evaluator.expected = 2 * n
        if rev:
            self.evaluator.expected += m  # the VJP rows count as work too
            scales = self.rng.choice(ONE_HOT_SCALES, size=m)
            self.row_scales = _to_xp(scales, xp, p.x0)
            # The analytical Jacobian, transposed: (n, m), filled block by block.
            # Past STORE_ENTRIES it is kept in float32, and its rounding joins
            # the analytical side's in the tolerances.
            storage = p.work_dtype
            if n * m > STORE_ENTRIES and float(xp.finfo(storage).eps) < 1e-10:
                storage = xp.float32
                self.eps_store = float(xp.finfo(storage).eps)
                p.notes.append(
                    f"the analytical Jacobian ({m} x {n}) was held in float32 to bound memory"
                )
            jac_t = self.jac_t = p.adapter.empty((n, m), storage, p.x0)
            # |analytical - the same rule in the wider dtypes|: its rounding.
            jac_err_t = None
            if p.wide_primals is not None:
                jac_err_t = p.adapter.empty((n, m), storage, p.x0)
            # The scales are powers of two: multiplying by their reciprocals
            # unscales exactly, and a product is several times cheaper than a
            # quotient.
            unscale = 1.0 / self.row_scales
            # One buffer of one-hot cotangents for every batch, its nonzeros
            # written before each VJP and cleared once the batch's rows are
            # copied out: a backward may return its incoming gradient itself
            # or a view of it (x + 1, reshape, sum, a straight-through
            # estimator), so the rows may be the buffer. A fresh (rows, m)
            # array of zeros per batch took a tenth of the VJP's time, 8 ms
            # of a check at n = 3000.
            onehot = xp.zeros(
                (min(m, self.rows_per_vjp) * m,), dtype=p.work_dtype, device=self.device
            )
            for start in range(0, m, self.rows_per_vjp):
                stop = min(m, start + self.rows_per_vjp)
                row_unscale = unscale[start:stop][:, None]
                ones = slice(start, start + (stop - start - 1) * (m + 1) + 1, m + 1)
                onehot[ones] = self.row_scales[start:stop]
                rows, wide = self.vjp(xp.reshape(onehot[: (stop - start) * m], (stop - start, m)))
                self.evaluator.advance(stop - start)
                self._watch_vjps(rows)
                if screening:
                    for t in together:
                        t.sole.add(rows[:, t.lo : t.hi], start)
                jac_t[:, start:stop] = xp.astype(
                    xp.matrix_transpose(rows * row_unscale), storage, copy=False
                )
                if jac_err_t is not None:
                    err = xp.abs(rows - wide) * xp.abs(row_unscale)
                    jac_err_t[:, start:stop] = xp.astype(
                        xp.matrix_transpose(err), storage, copy=False
                    )
                onehot[ones] = 0.0  # after the last use of rows, which may be onehot
            dense_cots = self._round_to(self._random(DENSE_PROBES, m), p.out_layout, p.out_dtypes)
            dense_ana, dense_wide = self.vjp(dense_cots)
            self._watch_vjps(dense_ana)
            dense_err = None if dense_wide is None else xp.abs(dense_ana - dense_wide)
            self.row_cross = xp.zeros((m,), dtype=p.work_dtype, device=self.device)
            self.row_num_sq = xp.zeros((m,), dtype=p.work_dtype, device=self.device)
        if fwd:
            dense_tans = self._round_to(self._random(DENSE_PROBES, n), p.in_layout, p.in_dtypes)
            zeros = xp.zeros((DENSE_PROBES, m), dtype=p.work_dtype, device=self.device)
            fwd_num, fwd_trunc, fwd_round, fwd_rough, fwd_terms = zeros, zeros, zeros, zeros, zeros
            # Outputs with an undecided entry in some column (see _compare).
            fwd_undecided = xp.zeros((1, m), dtype=xp.bool, device=self.device)
        if screening:
            # The numerical side's rounding in u . J, |u| . (eps (|f(x+h)| +
            # |f(x-h)|) + noise) as the entry-by-entry path has it (before the
            # division by 2h), with f at x+-h taken as f at x: it covers the
            # analytical side's rounding where u . J is zero by cancellation.
            eps = float(xp.finfo(p.work_dtype).eps)
            at_x = xp.abs(dense_cots) @ (2 * eps * xp.abs(self.f0) + self.noise)
            book = _ScreenBook(dense_cots, dense_ana, dense_err, n, at_x)
        if self.keep:
            self.num_t = xp.empty((n, m), dtype=p.work_dtype, device=self.device)
        spans = [(0, n)]
        if screening:
            settled = [t for t in together if self._settle_together(t, jac_t, jac_err_t, book)]
            spans = _complement([(t.lo, t.hi) for t in settled], n)
        ranges: list[tuple[int, int]] = []
        for first, last in spans:
            for start in range(first, last, self.columns_per_chunk):
                stop = min(last, start + self.columns_per_chunk)
                if screening:
                    ranges += self._screen(start, stop, sizes[start:stop], jac_t, jac_err_t, book)
                else:
                    ranges.append((start, stop))
        if screening:
            self._flush_candidates()
            book.close(self, m)
            self.evaluator.expected += self.accuracy * sum(b - a for a, b in ranges)
        for start, stop in ranges:
            dd = self.partials(start, stop)
            num, trunc, rough, bad = dd.value, dd.truncation, dd.roughness, dd.nonfinite
            rnd = dd.rounding + self.noise[None, :] / xp.abs(dd.direction)[:, None]
            if self.keep:
                self.num_t[start:stop, :] = num
            scale = self._entry_scale(num)
            if rev:
                ana = xp.astype(jac_t[start:stop, :], p.work_dtype, copy=False)
                ana_err = None
                if jac_err_t is not None:
                    ana_err = xp.astype(jac_err_t[start:stop, :], p.work_dtype, copy=False)
                fields, entries = self._judge_entries(
                    start, stop, ana, ana_err, scale, (num, trunc, rnd, rough, bad)
                )
                num, trunc, rnd, rough, bad = fields
                if self.keep:  # the re-measures may have replaced entries
                    self.num_t[start:stop, :] = num
                self._record("entry", entries, start, rows=True)
                # Random dense cotangents: u^T J for the columns of this chunk.
                weights = xp.abs(dense_cots)  # (probes, m)
                # The analytical side's rounding scales with the terms of the
                # whole product, not of this column alone (which may all be
                # zero by cancellation): the largest over the chunk.
                terms = weights @ xp.matrix_transpose(xp.abs(num))
                self._compare(
                    "cotangent",
                    dense_ana[:, start:stop],
                    dense_cots @ xp.matrix_transpose(num),
                    weights @ xp.matrix_transpose(trunc),
                    weights @ xp.matrix_transpose(rnd),
                    weights @ xp.matrix_transpose(rough),
                    xp.broadcast_to(xp.any(bad, axis=1)[None, :], (DENSE_PROBES, stop - start)),
                    self._row_scale(terms),
                    start,
                    analytical_error=None if dense_err is None else dense_err[:, start:stop],
                    undecided=None if self.wide_steps else _undecided(entries, xp, axis=1),
                )
            if fwd:
                c = stop - start
                tscales = _to_xp(self.rng.choice(ONE_HOT_SCALES, size=c), xp, p.x0)
                tangents = xp.eye(c, n, k=start, dtype=p.work_dtype, device=self.device)
                tangents = tangents * tscales[:, None]
                columns, wide = self.jvp(tangents)
                columns_err = None
                if wide is not None:
                    columns_err = xp.abs(columns - wide) / xp.abs(tscales[:, None])
                fields, entries = self._judge_entries(
                    start,
                    stop,
                    columns / tscales[:, None],
                    columns_err,
                    scale,
                    (num, trunc, rnd, rough, bad),
                )
                num, trunc, rnd, rough, bad = fields
                self._record("entry", entries, start, forward=True)
                if entries.exceeding and not self.wide_steps:
                    fwd_undecided = fwd_undecided | _undecided(entries, xp, axis=0)
                v = dense_tans[:, start:stop]
                fwd_num = fwd_num + v @ num
                fwd_trunc = fwd_trunc + xp.abs(v) @ trunc
                fwd_round = fwd_round + xp.abs(v) @ rnd
                fwd_rough = fwd_rough + xp.abs(v) @ rough
                fwd_terms = fwd_terms + xp.abs(v) @ xp.abs(num)
        if fwd:
            fwd_ana, fwd_wide = self.jvp(dense_tans)
            # As for cotangents: the terms' scale, the largest over outputs.
            self._compare(
                "tangent",
                fwd_ana,
                fwd_num,
                fwd_trunc,
                fwd_round,
                fwd_rough,
                xp.zeros(fwd_num.shape, dtype=xp.bool, device=self.device),
                self._row_scale(fwd_terms),
                0,
                forward=True,
                analytical_error=None if fwd_wide is None else xp.abs(fwd_ana - fwd_wide),
                undecided=fwd_undecided,
            )
        if self.keep and n:
            self.jacobians["numerical"] = xp.matrix_transpose(self.num_t)
            if rev:
                self.jacobians["analytical"] = xp.matrix_transpose(jac_t)

    def _judge_entries(
        self,
        start: int,
        stop: int,
        ana: Any,
        ana_err: Any,
        scale: Any,
        fields: tuple[Any, ...],
    ) -> tuple[tuple[Any, ...], Entries]:
        """Compare the entries of columns ``start:stop`` (either mode), with
        the re-measures that settle what the check's step cannot: in float64
        longer steps first (:meth:`_second_opinion`), then shorter ones
        (:meth:`_shorter_steps`). ``fields`` is (value, truncation,
        rounding, roughness, nonfinite); the same come back, entries
        replaced. Complex step is exact to rounding: compared as it is."""
        if self.complex_step:
            return fields, self._entries("entry", ana, fields, scale, ana_err)
        compared = None
        if not self.wide_steps:
            fields, compared = self._second_opinion(start, stop, ana, ana_err, scale, fields)
        return self._shorter_steps(start, stop, ana, ana_err, scale, fields, compared)

    def _second_opinion(
        self,
        start: int,
        stop: int,
        ana: Any,
        ana_err: Any,
        scale: Any,
        near: tuple[Any, ...],
    ) -> tuple[tuple[Any, ...], Entries]:
        """Entries of columns ``start:stop`` that disagree at the check's step
        get further estimates, at the steps SECOND_STEPS times longer in turn;
        where one agrees with the analytical value within its own tolerance,
        it stands. ``near`` is (value, truncation, rounding, roughness,
        nonfinite) at the check's step; the same comes back, entries replaced,
        with the compared entries. ``ana`` is the analytical side (either
        mode's) of the same entries.

        Rounding inside f that the model (a unit of |f(x)| per evaluation)
        misses, such as an output that is small by cancellation of large
        intermediate terms (a cumulative sum near zero) or the sine of a large
        sum, shrinks like 1/h and can be systematic, out of reach of the error
        estimates; a wrong derivative does not shrink. Each longer step's own
        tolerance (its truncation grows like h^2) still separates errors above
        about 1e-7 of the derivative's scale. Costs evaluations only for the
        columns where entries disagree.
        """
        xp, p = self.xp, self.p
        fields = near
        entries = self._entries("entry", ana, near, scale, ana_err)
        # Entries where f did not move beyond its rounding at the check's
        # step (every point gave f(x), up to an ulp) but moves at a longer
        # one: f is quantised
        # coarser than its dtype (a cancellation inside), by more than the
        # analytical side's change over the step. Its resolution, not the
        # derivative, is what cannot be told apart there.
        still = ROUNDING * near[2]
        flat = (xp.abs(near[0]) <= still) & (near[1] <= still) & (near[3] <= still)
        quantised = xp.zeros_like(flat)
        # The estimates at every step, with their truncation: where they
        # differ by more than that explains, the difference is f's noise
        # (a wrong derivative gives the same wrong value at every step).
        estimates = [(near[0], near[1])]
        for factor in SECOND_STEPS:
            if not entries.exceeding:
                break
            # NaN compares False: such entries keep the first estimate.
            disagree = entries.error > entries.tolerance
            columns = np.flatnonzero(p.adapter.to_numpy(xp.any(disagree, axis=1)))
            if not columns.size:
                break
            lo, hi = int(columns[0]), int(columns[-1]) + 1
            self.evaluator.expected += self.accuracy * (hi - lo)
            far = partial_derivatives(
                self.evaluate,
                p.x0,
                self.steps[start + lo : start + hi] * factor,
                start + lo,
                self.f0,
                xp,
                self.accuracy,
                self.output_eps,
            )
            far_rnd = far.rounding + self.noise[None, :] / xp.abs(far.direction)[:, None]
            wide = (far.value, far.truncation, far_rnd, far.roughness, far.nonfinite)
            second = self._entries(
                "entry", ana[lo:hi, :], wide, scale, None if ana_err is None else ana_err[lo:hi, :]
            )
            # Agreement at a longer step stands, and so does doubt (a noisy
            # or rough f there), where the error shrank as noise does (by
            # half at least): a wrong derivative's stays.
            shrunk = 2 * second.error <= entries.error[lo:hi, :]
            take = entries.wrong[lo:hi, :] & ~second.wrong & xp.isfinite(second.numerical)
            take = shrunk & (take | (disagree[lo:hi, :] & (second.error <= second.tolerance)))
            moved = flat[lo:hi, :] & (xp.abs(far.value) > ROUNDING * far_rnd)
            quantised = xp.concat([quantised[:lo, :], moved, quantised[hi:, :]], axis=0)
            estimates.append(
                tuple(
                    xp.concat([a[:lo, :], b, a[hi:, :]], axis=0)
                    for a, b in zip(estimates[0], (far.value, far.truncation))
                )
            )
            if not bool(xp.any(take)):
                continue
            fields = tuple(
                xp.concat([a[:lo, :], xp.where(take, b, a[lo:hi, :]), a[hi:, :]], axis=0)
                for a, b in zip(fields, wide)
            )
            entries = self._entries("entry", ana, fields, scale, ana_err)
        if entries.exceeding and len(estimates) > 1:
            noise = xp.zeros_like(near[0])
            for i, (a, ta) in enumerate(estimates):
                for b, tb in estimates[i + 1 :]:
                    excess = xp.abs(a - b) - SAFETY * (ta + tb)
                    noise = xp.maximum(noise, xp.where(xp.isfinite(excess), excess, noise))
            quantised = quantised | (entries.error <= BAND * SAFETY * noise)
        return fields, doubt(entries, quantised)

    def _shorter_steps(
        self,
        start: int,
        stop: int,
        ana: Any,
        ana_err: Any,
        scale: Any,
        near: tuple[Any, ...],
        entries: Entries | None = None,
    ) -> tuple[tuple[Any, ...], Entries]:
        """Entries of columns ``start:stop`` that the first step cannot
        decide are measured again at steps SHORTER_STEP times shorter, up to
        SHORTER_STEPS times. ``near`` is (value, truncation, rounding,
        roughness, nonfinite) at the first step, ``entries`` their
        comparison if already made; the same come back, entries replaced.

        The float32 steps are a few hundredths of max(1, |x|) and the stencil
        spans three of them, so kinks (abs, sort, cummax), jumps (floor,
        round, rem) and poles (tan, x**-2) come within its reach at ordinary
        points. Per entry, a shorter step's estimate replaces the current one
        where it is smooth and finite and the current one is not, where the
        two disagree beyond their error estimates (a jump that the longer
        stencil straddles yet looks smooth over: a staircase sampled near its
        own period), or where the current one is too close to call and the
        shorter one is more precise. A disagreement with the analytical side
        counts as wrong only once the next shorter step confirms the
        estimate (agrees with it); an entry that no step decides is
        undecided, marked rough. Entries that agree are never measured
        again, and only columns with an open entry are.

        In float64 (short steps, and disagreements already given a second
        opinion) only entries left undecided because f is not smooth or not
        finite within the stencil are measured again: a jump of round(x, 3)
        every 0.001.
        """
        xp, p = self.xp, self.p
        fields = near
        if entries is None:
            entries = self._entries("entry", ana, fields, scale, ana_err)
        if not self.shorter_steps:
            return fields, entries
        # Open: undecided, wrong but not yet confirmed, or agreeing only
        # within the wide tolerance of a stencil that a kink reaches. In
        # float64 only what is undecided for want of smoothness: an entry
        # that agrees stays agreed, and rounding inside f that the model
        # misses (a running sum near zero) only grows at shorter steps.
        if self.wide_steps:
            open_ = entries.rough_agreeing
            if entries.exceeding:
                open_ = open_ | entries.wrong | entries.uncertain
        elif entries.exceeding:
            open_ = entries.rough | entries.nonfinite
        else:
            return fields, entries
        # Float64: a shorter step may settle an undecided entry as agreeing,
        # never as wrong. Rounding inside f that the estimates miss (a
        # staircase (y + c) - c) grows as the step shrinks, and the shorter
        # steps lack the longer steps' measure of it (see _second_opinion).
        undecided = xp.zeros_like(open_) if self.wide_steps else open_
        # What _second_opinion found f's resolution cannot decide stays so
        # when the entries are compared again below.
        unresolved = None if self.wide_steps else entries.coarse
        # Low precision: a disagreement at the first step stands if a smooth
        # estimate at the finest step agrees with it, and is undecided if
        # one disagrees; only where that step is not smooth either does it
        # go down the steps in between.
        unconfirmed = xp.zeros_like(open_)
        first_wrong = entries.wrong
        if self.wide_steps and entries.exceeding:
            checked = self._finest(start, ana, ana_err, scale, fields, first_wrong)
            if checked is not None:
                confirmed, unconfirmed = checked
                open_ = open_ & ~confirmed & ~unconfirmed
        steps = self.steps[start:stop]
        for _ in range(SHORTER_STEPS):
            columns = [bool(c) for c in p.adapter.to_numpy(xp.any(open_, axis=1))]
            if not any(columns):
                break
            steps = steps / SHORTER_STEP
            short = self._remeasure(start, steps, columns, fields)
            new = self._entries("entry", ana, short, scale, ana_err)
            agree = _consistent(fields, short, xp)
            smooth = ~(new.rough | new.rough_agreeing | short[4]) & xp.isfinite(short[0])
            unsmooth = entries.rough | entries.nonfinite | entries.rough_agreeing
            sharper = entries.marginal & (new.tolerance < entries.tolerance)
            take = open_ & smooth & (unsmooth | ~agree | sharper)
            # Kept as they are: a disagreement that the shorter step, smooth
            # too, confirms, and an entry too close to call that it cannot
            # sharpen.
            settled = ~take & smooth & agree & (entries.wrong | entries.marginal)
            still = new.rough_agreeing | new.wrong | new.uncertain
            open_ = (take & still) | (open_ & ~take & ~settled)
            fields = tuple(xp.where(take, b, a) for a, b in zip(fields, short))
            entries = self._entries("entry", ana, fields, scale, ana_err)
        unconfirmed = unconfirmed | ((open_ | undecided) & entries.wrong)
        if self.wide_steps and entries.exceeding:
            # Wrong at a shorter step only: the finest step has its say too.
            checked = self._finest(
                start, ana, ana_err, scale, fields, entries.wrong & ~first_wrong & ~unconfirmed
            )
            if checked is not None:
                unconfirmed = unconfirmed | checked[1]
        if bool(xp.any(unconfirmed)):
            # Unconfirmed at every step: undecided. An infinite roughness
            # marks them rough here and in the dense cotangent products.
            value, truncation, rounding, roughness, nonfinite = fields
            roughness = xp.where(unconfirmed, xp.full_like(roughness, math.inf), roughness)
            fields = (value, truncation, rounding, roughness, nonfinite)
            entries = self._entries("entry", ana, fields, scale, ana_err)
        if unresolved is not None:
            entries = doubt(entries, unresolved)
        return fields, entries

    def _finest(
        self,
        start: int,
        ana: Any,
        ana_err: Any,
        scale: Any,
        fields: tuple[Any, ...],
        among: Any,
    ) -> tuple[Any, Any] | None:
        """Low precision: of the entries ``among`` (a mask), those whose
        estimate a smooth one at a step FINEST_STEP times shorter than the
        first confirms, and those it contradicts; None when ``among`` is
        empty. Entries where that step is not smooth are in neither.

        A staircase (round, floor, x mod c) seen from a point near the middle
        of a stair is odd about it at every scale above the stair's width:
        no even difference shows the jumps, and every longer step measures
        the slope of the staircase as a whole, consistently. Only a step
        shorter than the distance to the jumps sees the flat stair. A wrong
        derivative of a smooth f agrees there too, within that step's wider
        rounding; such an estimate is not compared itself (too imprecise to
        pass anything): a disagreement only makes the entry undecided.
        """
        xp, p = self.xp, self.p
        columns = [bool(c) for c in p.adapter.to_numpy(xp.any(among, axis=1))]
        if not any(columns):
            return None
        steps = self.steps[start : start + len(columns)] / FINEST_STEP
        finest = self._remeasure(start, steps, columns, fields)
        compared = self._entries("entry", ana, finest, scale, ana_err)
        smooth = ~(compared.rough | compared.rough_agreeing | finest[4]) & xp.isfinite(finest[0])
        agree = _consistent(fields, finest, xp)
        return among & smooth & agree, among & smooth & ~agree

    def _remeasure(
        self, start: int, steps: Any, columns: list[bool], fields: tuple[Any, ...]
    ) -> tuple[Any, ...]:
        """``fields`` with the flagged ``columns`` (of those from ``start``)
        measured again at ``steps``; the others as they are."""
        xp, p = self.xp, self.p
        pieces: list[tuple[Any, ...]] = []
        for a, b, flagged in _runs(columns):
            if not flagged:
                pieces.append(tuple(f[a:b, ...] for f in fields))
                continue
            self.evaluator.expected += self.accuracy * (b - a)
            dd = partial_derivatives(
                self.evaluate,
                p.x0,
                steps[a:b],
                start + a,
                self.f0,
                xp,
                self.accuracy,
                self.output_eps,
            )
            rounding = dd.rounding + self.noise[None, :] / xp.abs(dd.direction)[:, None]
            pieces.append((dd.value, dd.truncation, rounding, dd.roughness, dd.nonfinite))
        if len(pieces) == 1:
            return pieces[0]
        return tuple(xp.concat(list(parts), axis=0) for parts in zip(*pieces))

    def _together_candidates(self) -> list[_Together]:
        """Arguments whose columns may settle together (see
        :meth:`_settle_together`): two entries or more, steps within
        STEP_SPREAD of each other. Each entry's step is its own times a
        random weight in [1/sqrt(2), sqrt(2)): an entry of another column that
        the analytical side misses adds to a row's difference in proportion
        to its step, and with equal steps a missed x[k] - x[l] would cancel.
        (Within a factor sqrt(2), neither truncation nor rounding grows by
        more than 2.)"""
        xp, p = self.xp, self.p
        if not GROUP_COLUMNS or p.out_layout.size == 0:
            return []
        found = []
        for i, slot in enumerate(p.in_layout.slots):
            lo, hi = slot.offset, slot.offset + slot.width
            if hi - lo < 2:
                continue
            h = self.steps[lo:hi]
            if float(xp.max(h)) > STEP_SPREAD * float(xp.min(h)):
                continue
            weights = 2.0 ** (self.rng.random(hi - lo) - 0.5)
            step = h * _to_xp(weights, xp, p.x0)
            found.append(_Together(i, lo, hi, step, SoleEntries(step, p.out_layout.size, xp)))
        return found

    def _settle_together(self, t: _Together, jac_t: Any, jac_err_t: Any, book: _ScreenBook) -> bool:
        """Settle every column of one argument from one stencil along a step
        in all its entries at once (4 evaluations), when each output depends
        on at most one of its entries as the analytical Jacobian has it
        (elementwise functions, permutations, gathers). An output's
        derivative along that step is then its one entry's times the entry's
        step, and is compared with its own error estimates, like a column of
        the full stencil. Whatever the analytical side misses (an entry it
        has as zero) adds to some output's derivative and shows as a
        disagreement; so does anything else, and then nothing is settled
        here: every column goes on to the column-by-column screen, which
        locates what is wrong. True when the argument settled (and is
        booked)."""
        xp, p = self.xp, self.p
        column = t.sole.result()
        if column is None:
            return False
        n, m = p.in_layout.size, p.out_layout.size
        displacement = xp.zeros((1, n), dtype=p.work_dtype, device=self.device)
        displacement[0, t.lo : t.hi] = t.step
        self.evaluator.expected += self.accuracy
        dd = directional_derivatives(
            self.evaluate, p.x0, displacement, self.f0, xp, self.accuracy, self.output_eps
        )
        outputs = xp.arange(m, dtype=column.dtype, device=self.device)
        flat = (column + t.lo) * m + outputs

        def analytical(stored: Any) -> Any:
            taken = xp.take(xp.reshape(stored, (-1,)), flat)
            return xp.astype(taken, p.work_dtype, copy=False)[None, :]

        ana = analytical(jac_t)
        ana_err = None if jac_err_t is None else analytical(jac_err_t)
        # Per output, the step of its entry. A row of zeros (no entry of this
        # argument) is measured against the smallest: that makes its
        # difference largest.
        steps = xp.abs(dd.direction[0, t.lo : t.hi])
        owned = ana[0, :] != 0
        smallest = xp.full_like(ana[0, :], float(xp.min(steps)))
        size = xp.where(owned, xp.take(steps, column), smallest)[None, :]
        num = dd.value / size
        rnd = (dd.rounding + self.noise[None, :]) / size
        fields = (num, dd.truncation / size, rnd, dd.roughness / size, dd.nonfinite)
        scale = self._entry_scale(num)
        entries = self._entries("entry", ana, fields, scale, ana_err)
        if entries.exceeding:
            return False
        self.evaluator.expected -= 2 * (t.hi - t.lo)  # the screen's two points a column
        self.evaluator.advance(0)
        self._count_flags(entries, xp)
        # Per column of the argument, what the column screen books for it:
        # sums over its outputs, on the host (a few values per output). A row
        # of zeros counts under column 0, its value standing for whatever the
        # whole argument moved it by.
        host = p.adapter.to_numpy
        columns = host(column)
        num_h, ana_h, trunc_h, rnd_h, rough_h = (host(a)[0] for a in (num, ana, *fields[1:4]))

        def per_column(values: Any) -> Any:
            return np.bincount(columns, values, minlength=t.hi - t.lo)

        def to_xp(host_array: Any) -> Any:
            return _to_xp(host_array, xp, p.x0)

        norms = [per_column(v) ** 0.5 for v in ((num_h - ana_h) ** 2, num_h**2, ana_h**2)]
        diff_norms, num_norms, ana_norms = (to_xp(v) for v in norms)
        eps = float(xp.finfo(p.work_dtype).eps)
        threshold = float(scale) * eps**0.5
        book.add_agreeing(t.lo, diff_norms, num_norms, ana_norms, threshold)
        # Random dense cotangents u: u . J per column, with its error
        # estimates, as the full stencil gives them (roughness, a kink's
        # mark, counts as truncation: nothing here is rough).
        cots = host(book.cotangents)
        weights = np.abs(cots)
        # As in the column screen, rounding of f at x per unit of each
        # column's step joins in: it covers the analytical side's rounding
        # where u . J is zero by cancellation (a column that owns no output).
        at_x = book.rounding_at_x[:, None] / steps[None, :]

        def per_cotangent(rows: Any) -> Any:  # (probes, m) -> (probes, columns)
            return to_xp(np.stack([per_column(row) for row in rows]))

        book.add_dense(
            t.lo,
            per_cotangent(cots * num_h),
            per_cotangent(weights * (trunc_h + rough_h)),
            per_cotangent(weights * rnd_h) + at_x,
            per_cotangent(weights * np.abs(num_h)),
        )
        if self.keep:
            zero = xp.zeros_like(num)
            self.num_t[t.lo : t.hi, :] = xp.where(jac_t[t.lo : t.hi, :] != 0, num, zero)
        at = np.flatnonzero(host(owned))
        if at.size:
            index = xp.asarray(at, device=self.device)
            part = entries.map(lambda a: xp.take(a, index, axis=1))
            located = ([int(c) + t.lo for c in columns[at]], [int(i) for i in at])
            self._keep_worst("entry", part, 0, located=located)
        p.notes.append(
            f"{p.in_names[t.slot]}: every output depends on at most one of its entries (as "
            f"the analytical Jacobian has it), so its {t.hi - t.lo} columns were measured "
            f"together, by {self.accuracy} evaluations"
        )
        return True

    def _screen(
        self,
        start: int,
        stop: int,
        size: Any,
        jac_t: Any,
        jac_err_t: Any,
        book: _ScreenBook,
    ) -> list[tuple[int, int]]:
        """Settle the columns ``start:stop`` from the two points x +- h;
        ``size`` is their represented 2h.

        The second-order quotient is compared with the usual tolerance, its
        truncation term set to what it is for a well-scaled f at this step:
        an entry within that is settled. Settled columns are booked here; the
        ranges of columns with an entry that is not come back for the full
        stencil, which alone may call an entry wrong. Costs 2 evaluations per
        column instead of 4 when everything agrees.

        Every such tolerance is at least ``floor`` below, so a column whose
        largest error is within it is settled by a few reductions, without
        tolerances of its own: most columns, most of the time. Only the others
        get per-entry tolerances here.
        """
        xp, p = self.xp, self.p
        c = stop - start
        h = self.steps[start:stop]
        out = self.evaluate(coordinate_points(p.x0, h, start, (1, -1), xp))
        plus, minus = out[:c, :], out[c:, :]
        size = size[:, None]
        # In place: one (columns, m) temporary fewer, 368 -> 324 us a chunk
        # at n = 3000.
        num = plus - minus
        num /= size
        if self.keep:
            self.num_t[start:stop, :] = num  # stage 2 overwrites what it redoes
        ana = xp.astype(jac_t[start:stop, :], p.work_dtype, copy=False)
        ana_err = None
        if jac_err_t is not None:
            ana_err = xp.astype(jac_err_t[start:stop, :], p.work_dtype, copy=False)
        largest = float(xp.max(row_norms(num, xp, ord=math.inf)))
        if not math.isfinite(largest):
            # NaN or inf in f near x (or a quotient past the dtype's range):
            # the full stencil flags such entries; a screen would settle an
            # inf error against an inf floor.
            return [(start, stop)]
        diff = num - ana
        eps = float(xp.finfo(p.work_dtype).eps)
        eps_ana = max(p.eps_analytical, self.eps_store)
        # compare() below allows SAFETY * truncation + ANALYTICAL * eps_ana *
        # scale at least, both scaled by the chunk's largest entry.
        floor = (SAFETY * eps ** (2 / 3) + ANALYTICAL * eps_ana) * largest
        floor += float(self.atol or 0.0)
        # Per column, the 2-norm of the errors (which the tallies need anyway)
        # bounds the largest; the largest itself only where that is not enough.
        diff_norms = row_norms(diff, xp)
        column_error = diff_norms
        if self.error_map_t is not None:
            quick = np.zeros(c, dtype=bool)  # the map needs every entry's own ratio
        else:
            quick = p.adapter.to_numpy(diff_norms <= floor)
            if not quick.all():
                column_error = row_norms(diff, xp, ord=math.inf)
                quick = p.adapter.to_numpy(column_error <= floor)
        pieces = [(0, c, True)] if quick.all() else _runs(quick.tolist())
        if quick.any():
            num_norms = row_norms(num, xp)
            ana_norms = row_norms(ana, xp)
        # Entries below this are rounding noise of the chunk's largest: "zero".
        threshold = largest * eps**0.5
        sides = (plus, minus, num, ana, ana_err, size)
        open_ranges: list[tuple[int, int]] = []
        for a, b, settled in pieces:
            if not settled:
                open_ranges += self._screen_exactly(start, a, b, sides, largest, book)
                continue
            book.add_agreeing(start + a, diff_norms[a:b], num_norms[a:b], ana_norms[a:b], threshold)
            # Random dense cotangents u: |u . (num - ana)| <= |u| |num - ana|
            # (Cauchy-Schwarz) bounds what the settled entries' measured errors
            # carry into u . num; beyond that, dense VJPs must agree with the
            # one-hot rows: the rule is linear in its cotangent.
            book.add_dense(
                start + a,
                book.cotangents @ xp.matrix_transpose(num[a:b, :]),
                book.weights * diff_norms[None, a:b],
                book.rounding_at_x[:, None] / xp.matrix_transpose(size[a:b, :]),
                book.weights * num_norms[None, a:b],
            )
        if quick.any():
            errors = np.where(quick, p.adapter.to_numpy(column_error), -math.inf)
            self._worst_candidates(start, errors, sides, largest)
        return open_ranges

    def _worst_candidates(
        self, start: int, errors: Any, sides: tuple[Any, ...], largest: float
    ) -> None:
        """Keep, over the whole screen, the settled columns with the largest
        ``errors`` (host, -inf for the others), with their rows of ``sides``
        and their chunk's ``largest``; :meth:`_flush_candidates` gives them
        their tolerances, once, for the worst list. The largest error /
        tolerance is among them unless tolerances differ a lot between
        columns; all of them pass."""
        xp = self.xp
        held = self.candidates
        floor = min(held[0]) if held is not None and len(held[0]) >= WORST else -math.inf
        above = np.flatnonzero(errors > floor)
        if not above.size:
            return
        picked = [int(r) for r in above[np.argsort(-errors[above], kind="stable")][:WORST]]
        index = xp.asarray(picked, device=self.device)
        taken = tuple(None if t is None else xp.take(t, index, axis=0) for t in sides)
        scale = xp.full((len(picked), 1), largest, dtype=self.p.work_dtype, device=self.device)
        taken = (*taken, scale)
        new = ([float(errors[r]) for r in picked], [start + r for r in picked], taken)
        if held is not None:
            fields = tuple(
                None if a is None else xp.concat([a, b], axis=0) for a, b in zip(held[2], taken)
            )
            new = (held[0] + new[0], held[1] + new[1], fields)
            if len(new[0]) > WORST:
                keep = sorted(range(len(new[0])), key=lambda i: -new[0][i])[:WORST]
                at = xp.asarray(keep, device=self.device)
                new = (
                    [new[0][i] for i in keep],
                    [new[1][i] for i in keep],
                    tuple(None if t is None else xp.take(t, at, axis=0) for t in new[2]),
                )
        self.candidates = new

    def _flush_candidates(self) -> None:
        if self.candidates is not None:
            _, columns, sides = self.candidates
            self._keep_worst("entry", self._screen_entries(*sides), 0, positions=columns)
            self.candidates = None

    def _screen_entries(
        self, plus: Any, minus: Any, num: Any, ana: Any, ana_err: Any, size: Any, scale: Any
    ) -> Entries:
        """Entries of the two-point screen, with their own tolerances;
        ``scale`` is each row's chunk's largest entry, ``(k, 1)``."""
        xp = self.xp
        eps = float(xp.finfo(self.p.work_dtype).eps)
        rounding = (eps * (xp.abs(plus) + xp.abs(minus)) + self.noise[None, :]) / size
        zero = xp.zeros_like(num)
        # The quotient's truncation is not measured here; allow what it is at
        # this step for a well-scaled f, eps^(2/3) of the entry's scale
        # (4e-11 in float64). Larger truncation goes to the full stencil.
        truncation = eps ** (2 / 3) * (xp.abs(num) + scale)
        nowhere = xp.broadcast_to(xp.asarray(False, device=self.device), num.shape)
        return self._entries(
            "entry", ana, (num, truncation, rounding, zero, nowhere), scale, ana_err
        )

    def _screen_exactly(
        self,
        start: int,
        a: int,
        b: int,
        sides: tuple[Any, ...],
        largest: float,
        book: _ScreenBook,
    ) -> list[tuple[int, int]]:
        """Screen rows ``a:b`` of the chunk at ``start`` (its largest entry
        ``largest``) entry by entry: book the columns that settle, return the
        ranges that need the full stencil."""
        xp, p = self.xp, self.p
        rows: list[Any] = [None if t is None else t[a:b, ...] for t in sides]
        plus, minus, num, ana, ana_err, size = rows
        scale = xp.full((b - a, 1), largest, dtype=p.work_dtype, device=self.device)
        entries = self._screen_entries(plus, minus, num, ana, ana_err, size, scale)
        if entries.exceeding:
            settled = p.adapter.to_numpy(xp.all(entries.error <= entries.tolerance, axis=1))
        else:
            settled = [True] * (b - a)
        open_ranges = []
        weights = xp.abs(book.cotangents)  # (probes, m)
        eps = float(xp.finfo(p.work_dtype).eps)
        for lo, hi, ok in _runs([bool(s) for s in settled]):
            if not ok:
                open_ranges.append((start + a + lo, start + a + hi))
                continue
            part = (
                entries
                if (lo, hi) == (0, b - a)
                else entries.map(lambda t, lo=lo, hi=hi: t[lo:hi, :])
            )
            self._record("entry", part, start + a + lo, rows=True)
            first = start + a + lo
            sub = num[lo:hi, :]
            sub_round = (
                eps * (xp.abs(plus[lo:hi, :]) + xp.abs(minus[lo:hi, :])) + self.noise[None, :]
            ) / size[lo:hi, :]
            book.add_dense(
                first,
                book.cotangents @ xp.matrix_transpose(sub),
                xp.zeros((DENSE_PROBES, hi - lo), dtype=p.work_dtype, device=self.device),
                weights @ xp.matrix_transpose(sub_round),
                weights @ xp.matrix_transpose(xp.abs(sub)),
            )
        return open_ranges

    def _count_settled(self) -> None:
        """Nonzero entries of the columns booked by their norms (:class:`_ScreenBook`),
        which only the diagnosis of a failed check needs. Counted on the
        stored analytical side: the two sides agree there far below the
        threshold (sqrt(eps) of the chunk's largest entry)."""
        xp = self.xp
        for i, lo, hi, threshold in self.uncounted:
            active = int(xp.count_nonzero(xp.abs(self.jac_t[lo:hi, :]) > threshold))
            for tally in (self.by_argument[i], self.tally, self.entry_tally):
                tally.active += active
            self.directions["rev"].active += active
        self.uncounted = []

    def _row_scale(self, terms: Any) -> Any:
        """Per row of ``terms`` (probes, width), its largest finite entry: the
        scale of the terms behind every product of that probe."""
        xp = self.xp
        if math.prod(terms.shape) == 0:
            return terms
        finite = xp.where(xp.isfinite(terms), terms, xp.zeros_like(terms))
        return xp.max(finite, axis=1, keepdims=True)

    def _entry_scale(self, num: Any) -> Any:
        """Size of the terms behind an entry, which its rounding scales with:
        the largest numerical entry of its chunk. An entry that comes out
        small by cancellation carries the rounding of its terms."""
        xp = self.xp
        magnitude = xp.abs(num)
        if not all_finite(magnitude, xp):
            magnitude = xp.where(xp.isfinite(magnitude), magnitude, xp.zeros_like(magnitude))
        return xp.max(magnitude) if math.prod(magnitude.shape) else xp.zeros_like(magnitude)

    # -- random probes -------------------------------------------------------
    def probe(self, direction: str, count: int) -> None:
        """``count`` random directions v, each compared in reverse mode
        through two random cotangents (u1 . J v and u2 . J v: a second
        cotangent costs one more row of the batched VJP, a second direction
        four to six more evaluations of f) and in forward mode through its
        JVP. A probe is a handful of numbers: its arrays are reduced on the
        device and sent to the host in one transfer (one sync on a GPU), where
        a few dozen NumPy operations cost less than as many framework calls."""
        xp, p = self.xp, self.p
        n, m = p.in_layout.size, p.out_layout.size
        drawn = self._random(1, count * (n + 2 * m))[0, :]  # directions, then cotangents
        directions = xp.reshape(drawn[: count * n], (count, n))
        dd = self._smooth_derivatives(directions)
        noise = self.noise
        rnd = dd.rounding + noise[None, :] if self.nondeterministic else dd.rounding
        if direction in ("rev", "both"):
            cots = xp.reshape(drawn[count * n :], (2 * count, m))
            u = self._round_to(cots, p.out_layout, p.out_dtypes)
            grads, wide = self.vjp(u)  # (2 count, n)

            def pairs(a: Any) -> Any:  # (2 count, width) -> (count, 2, width)
                return xp.reshape(a, (count, 2, a.shape[1]))

            along = dd.direction[:, None, :]
            terms = pairs(grads) * along  # the analytical u.J.v, term by term
            over_inputs = [terms, terms * terms]
            if wide is not None:
                over_inputs.append(pairs(wide) * along)
            u = pairs(u)
            weighted = u * dd.value[:, None, :]
            size = xp.abs(u)
            over_outputs = [
                weighted,
                weighted * weighted,
                (u * dd.truncation[:, None, :]) ** 2,
                size * rnd[:, None, :],
                size * dd.roughness[:, None, :],
                xp.broadcast_to(xp.astype(dd.nonfinite, u.dtype)[:, None, :], u.shape),
            ]
            sums = xp.concat(
                [xp.sum(xp.stack(over_inputs), axis=3), xp.sum(xp.stack(over_outputs), axis=3)]
            )
            host = p.adapter.to_numpy(sums).reshape(sums.shape[0], 2 * count)
            ana, ana_sq = host[0], host[1]
            num, num_sq, trunc_sq, rounding, roughness, nonfinite = host[-6:]
            # Truncation errors of the terms are of either sign: they add like
            # a 2-norm. Rounding of the analytical side enters each term
            # independently too, so the scale is the terms' 2-norm, not their sum.
            self._compare(
                "probe",
                ana,
                num,
                trunc_sq**0.5,
                rounding,
                roughness,
                nonfinite > 0,
                ana_sq**0.5 + num_sq**0.5,
                0,
                analytical_error=None if wide is None else abs(ana - host[2]),
                xp=host_xp,
            )
            if self.tally.wrong:
                # Only a failing check is diagnosed (did the rule ignore its
                # cotangent?): a passing one skips looking at the VJP rows.
                self._watch_vjps(grads)
                self.zero_arguments = self._zero_arguments(grads)
            # Where the probes disagree, name the entries behind it.
            locate(self, directions, xp.reshape(u, (2 * count, m)), grads, wide, dd)
        if direction in ("fwd", "both"):
            tangents = self._round_to(dd.direction, p.in_layout, p.in_dtypes)
            ana, wide = self.jvp(tangents)  # (k, m)
            scale = xp.max(xp.abs(dd.value), axis=1, keepdims=True)
            columns = [ana, dd.value, dd.truncation, rnd, dd.roughness]
            columns += [xp.astype(dd.nonfinite, ana.dtype), xp.broadcast_to(scale, ana.shape)]
            if wide is not None:
                columns.append(xp.abs(ana - wide))
            host = p.adapter.to_numpy(xp.stack(columns))
            self._compare(
                "probe",
                host[0],
                host[1],
                host[2],
                host[3],
                host[4],
                host[5] != 0,
                host[6],
                0,
                forward=True,
                analytical_error=None if wide is None else host[7],
                xp=host_xp,
            )
            locate_forward(self, directions, dd)

    # -- comparison and bookkeeping -----------------------------------------
    def _compare(
        self,
        kind: str,
        ana: Any,
        num: Any,
        trunc: Any,
        rnd: Any,
        rough: Any,
        bad: Any,
        scale: Any,
        start: int,
        rows: bool = False,
        forward: bool = False,
        analytical_error: Any = None,
        xp: Any = None,
        undecided: Any = None,
    ) -> None:
        """Compare and record a batch; ``xp`` is the namespace of its arrays
        (by default the check's). ``undecided`` (broadcast to the batch)
        marks products of entries some of which were undecided: a product
        is no more decisive than its terms (f quantised coarser than its
        dtype shows in them as in the entries), so it is undecided too. Not
        in low precision, where _shorter_steps marks what it leaves
        unconfirmed as rough, and products of such entries are rough too."""
        entries = self._entries(
            kind, ana, (num, trunc, rnd, rough, bad), scale, analytical_error, xp=xp
        )
        if undecided is not None:
            entries = doubt(entries, undecided)
        self._record(kind, entries, start, rows=rows, forward=forward, xp=xp)

    def _entries(
        self,
        kind: str,
        ana: Any,
        numerical: tuple[Any, ...],
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

    def _record(
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
        ana, num = entries.analytical, entries.numerical
        tally = Tally.of(entries, xp)
        self.tally.merge(tally)
        self.directions.setdefault("fwd" if forward else "rev", Tally()).merge(tally)
        if kind == "entry":
            self.entry_tally.merge(tally)
        if kind == "cotangent":
            self.dense_wrong += tally.wrong
        elif kind == "entry":
            self.one_hot_wrong += tally.wrong
        self._count_flags(entries, xp)
        if kind in ("entry", "cotangent") and entries.error.ndim == 2:
            if len(self.by_argument) == 1:
                self.by_argument[0].merge(tally)
            else:
                self._tally_arguments(entries, start, by_rows=kind == "entry")
        if rows and self.row_cross is not None and entries.exceeding:
            # Per output: <ana, num> and <num, num> over the inputs (rows here).
            a0 = xp.where(xp.isfinite(ana) & xp.isfinite(num), ana, xp.zeros_like(ana))
            n0 = xp.where(xp.isfinite(num), num, xp.zeros_like(num))
            self.row_cross = self.row_cross + xp.sum(a0 * n0, axis=0)
            self.row_num_sq = self.row_num_sq + xp.sum(n0 * n0, axis=0)
        self._keep_worst(kind, entries, start, xp=xp, forward=forward)
        if kind == "entry" and self.error_map_t is not None:
            ratio = _ratio(entries, xp)
            stop = start + ratio.shape[0]
            self.error_map_t[start:stop, :] = xp.maximum(self.error_map_t[start:stop, :], ratio)
            self.undecided_cells += undecided_cells(entries, start, self.p.adapter.to_numpy)

    def _count_flags(self, entries: Entries, xp: Any) -> None:
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

    def _keep_worst(
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
        ratio = _ratio(entries, xp)
        if math.prod(ratio.shape) == 0:
            return
        host = (lambda a: a) if xp is host_xp else self.p.adapter.to_numpy
        if (
            not entries.exceeding
            and len(self.worst) >= WORST
            and float(xp.max(ratio)) <= min(m.ratio for m in self.worst)
        ):
            return  # nothing here would make the list
        if ratio.ndim == 2:
            # Best rows first, then the best entries among them: no full sort.
            # (Slices stay within the array: the Array API leaves others undefined.)
            rows = xp.argsort(-xp.max(ratio, axis=1))[: min(WORST, ratio.shape[0])]
            sub = xp.take(ratio, rows, axis=0)
            cols = sub.shape[1]
            order = xp.argsort(-xp.reshape(sub, (-1,)))[: min(WORST, math.prod(sub.shape))]
            row_ids = host(rows)
            places = [(int(row_ids[int(i) // cols]), int(i) % cols) for i in host(order)]
        else:
            order = xp.argsort(-ratio)[:WORST]
            places = [(int(i), 0) for i in host(order)]
        for row, col in places:
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
        rank = {"wrong": 0, "uncertain": 1, "ok": 2}
        self.worst.sort(key=lambda m: (rank[m.status], -m.ratio))
        del self.worst[WORST:]

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
        if kind == "probe":
            # Forward probes come as (probe, output) arrays; reverse ones as
            # one value per cotangent, two per probe.
            name = f"probe {row}" if forward else f"probe {row // 2}, cotangent {row % 2 + 1}"
            return Mismatch(kind, name, (), "", (), ana, num, err, tol, status)
        if kind == "tangent":
            o_slot, o_index, o_part = p.out_layout.owner(col)
            return Mismatch(
                kind,
                f"random tangent {row}",
                (),
                p.out_names[o_slot],
                o_index,
                ana,
                num,
                err,
                tol,
                status,
                o_part,
            )
        slot, index, part = p.in_layout.owner(start + (col if kind == "cotangent" else row))
        if kind == "cotangent":
            return Mismatch(
                kind, p.in_names[slot], index, str(row), (), ana, num, err, tol, status, part
            )
        o_slot, o_index, _ = p.out_layout.owner(col)
        return Mismatch(
            kind,
            p.in_names[slot],
            index,
            p.out_names[o_slot],
            o_index,
            ana,
            num,
            err,
            tol,
            status,
            part,
        )

    # -- the report ------------------------------------------------------------
    def report(self, mode: str, direction: str, order: int, seconds: float) -> Report:
        p, t = self.p, self.tally
        reasons = []
        if self.uncertain_kinds.get("rough"):
            reasons.append(
                f"{self.uncertain_kinds['rough']} compared value(s) sit where f is not smooth "
                "or not deterministic (one-sided differences disagree: a kink such as relu "
                "at 0, a max with ties, or noise); move x off the kink or check there by hand"
            )
        if self.uncertain_kinds.get("nonfinite"):
            reasons.append(
                f"{self.uncertain_kinds['nonfinite']} compared value(s) have NaN or inf in "
                "f near x; check at a point where f is finite"
            )
        if self.uncertain_kinds.get("marginal"):
            reasons.append(
                f"{self.uncertain_kinds['marginal']} compared value(s) differ by 1 to "
                f"{BAND:g} times the estimated precision, too close to call; "
                + (
                    "check at another point (or with another seed) to decide"
                    if float(self.xp.finfo(p.work_dtype).eps) < 1e-10
                    else "check with float64 inputs (or a float64-capable f) to decide"
                )
            )
        if self.uncertain_kinds.get("steep"):
            reasons.append(
                f"{self.uncertain_kinds['steep']} compared value(s) agree only within what "
                "the step resolves: the derivative changes faster than the step (truncation "
                f"estimate up to {self.widest.get('steep', 0.0):.3g} of the value), too wide "
                "to tell a wrong derivative; check nearer to where f is gentler, or with "
                "a smaller eps"
            )
        if self.uncertain_kinds.get("coarse"):
            reasons.append(
                f"{self.uncertain_kinds['coarse']} compared value(s) agree only within f's "
                "measured resolution (rounding and noise of f up to "
                f"{self.widest.get('coarse', 0.0):.3g} of the value): f does not resolve "
                "its derivative here (it is quantised, or the derivative is far below "
                "f's rounding); check where f resolves it"
            )
        if self.uncertain_kinds.get("faint"):
            reasons.append(
                f"{self.uncertain_kinds['faint']} compared value(s) differ by more than the "
                "estimated precision but by less than "
                f"{float(self.xp.finfo(self.p.work_dtype).eps) ** 0.5:.2g} of the "
                "derivative's scale: rounding inside f or its rule that the estimates do not "
                "see, or a derivative wrong by that little; finite differences cannot tell"
            )
        if self.uncertain_kinds.get("rough_agreeing"):
            p.notes.append(
                f"{self.uncertain_kinds['rough_agreeing']} compared value(s) sit on a kink "
                "(f is not differentiable there) and agree with the mean of the one-sided "
                "slopes"
            )
        noise = self.noise  # settles nondeterministic and noisy
        if self.nondeterministic:
            noise_text = (
                "f is not deterministic: two evaluations at the same x differ by up to "
                f"{float(self.xp.max(noise)):.3g} (random dropout, unseeded noise, or "
                "nondeterministic reductions); seed or disable the randomness"
            )
            if self.noisy:
                reasons.insert(0, noise_text)
            else:
                p.notes.append(noise_text)
        if self.noisy:
            verdict: Verdict = "inconclusive"
        else:
            verdict = "fail" if t.wrong else "inconclusive" if t.uncertain else "pass"
        arguments = tuple(
            ArgumentSummary(
                name=p.in_names[i],
                shape=p.in_shapes[i],
                dtype=_describe([p.in_dtypes[i]]),
                relative_error=tally.relative_error,
                checked=tally.checked,
                wrong=tally.wrong,
                uncertain=tally.uncertain,
            )
            for i, tally in enumerate(self.by_argument)
        )
        diagnosis: tuple[str, ...] = ()
        if verdict == "fail":
            self._count_settled()
            diagnosis = core_diagnosis.diagnose(
                core_diagnosis.Evidence(
                    tally=t,
                    arguments=list(zip(p.in_names, self.by_argument)),
                    mode=mode,
                    directions=self.directions,
                    one_hot_wrong=self.one_hot_wrong,
                    dense_wrong=self.dense_wrong,
                    cotangent_ignored=self.vjps_identical
                    and self.first_vjp is not None
                    and bool(self.xp.any(self.first_vjp != 0)),
                    entries=self.entry_tally if self.entry_tally.checked else None,
                    row_scales=self.row_scales,
                    row_cross=self.row_cross,
                    row_num_sq=self.row_num_sq,
                    jacobians=self.jacobians,
                    in_widths=[s.width for s in p.in_layout.slots],
                    out_widths=[s.width for s in p.out_layout.slots],
                    in_names=list(p.in_names),
                    in_shapes=[s.shape for s in p.in_layout.slots],
                    zero_arguments=self.zero_arguments,
                ),
                self.xp,
            )
        notes = list(p.notes)
        located = any(w.kind in ("entry", "cotangent") for w in self.worst)
        if mode == "probe" and verdict == "fail" and not located:
            notes.append("probe mode cannot locate entries; rerun with mode='full' to see which")
        return Report(
            verdict=verdict,
            relative_error=t.relative_error,
            framework=p.adapter.name,
            mode=mode,
            direction=direction,
            order=order,
            precision=p.precision,
            path=self.evaluator.path or "vectorized",
            evaluations=self.evaluator.evaluations,
            seconds=seconds,
            seed=self.seed,
            num_inputs=p.in_layout.size,
            num_outputs=p.out_layout.size,
            checked=t.checked,
            wrong=t.wrong,
            uncertain=t.uncertain,
            worst=tuple(self.worst),
            arguments=arguments,
            diagnosis=diagnosis,
            reasons=tuple(reasons),
            notes=tuple(notes),
            error_map=self._error_map(),
            undecided_entries=tuple(sorted(set(self.undecided_cells))),
        )

    def _error_map(self) -> tuple[tuple[float, ...], ...]:
        """error / tolerance per Jacobian entry, (outputs, inputs), for pictures."""
        if self.error_map_t is None:
            return ()
        host = self.p.adapter.to_numpy(self.xp.matrix_transpose(self.error_map_t))
        return tuple(tuple(float(v) for v in row) for row in host)


class _ScreenBook:
    """What the screen books for settled columns, gathered over the whole
    check and tallied once at :meth:`close` (no per-chunk host round trips):
    per column, the 2-norms of the two sides and of their difference; and
    for random dense cotangents u, their VJPs against the numerical u . J
    with the pieces of its tolerance."""

    def __init__(
        self,
        cotangents: Any,
        analytical: Any,
        analytical_error: Any,
        n: int,
        rounding_at_x: Any,
    ):
        xp = array_namespace(analytical)
        dtype, where = analytical.dtype, _device(analytical)
        self.cotangents = cotangents  # (probes, m)
        self.weights = row_norms(cotangents, xp)[:, None]  # (probes, 1)
        self.rounding_at_x = rounding_at_x  # (probes,)
        self.analytical = analytical  # (probes, n)
        self.analytical_error = analytical_error
        shape = (cotangents.shape[0], n)
        zeros = [xp.zeros(shape, dtype=dtype, device=where) for _ in range(4)]
        self.numerical, self.truncation, self.rounding, self.scale = zeros
        self.dense_columns: list[tuple[int, int]] = []
        self.norms = [xp.zeros((n,), dtype=dtype, device=where) for _ in range(3)]
        #: Columns booked by their norms: (first, stop, nonzero threshold).
        self.agreeing: list[tuple[int, int, float]] = []

    def add_dense(
        self, first: int, numerical: Any, truncation: Any, rounding: Any, scale: Any
    ) -> None:
        last = first + numerical.shape[1]
        self.numerical[:, first:last] = numerical
        self.truncation[:, first:last] = truncation
        self.rounding[:, first:last] = rounding
        self.scale[:, first:last] = scale
        _extend(self.dense_columns, first, last)

    def add_agreeing(
        self, first: int, diff: Any, numerical: Any, analytical: Any, threshold: float
    ) -> None:
        """Columns from ``first`` whose every entry agrees; their norms."""
        last = first + diff.shape[0]
        for book, norms in zip(self.norms, (diff, numerical, analytical)):
            book[first:last] = norms
        self.agreeing.append((first, last, threshold))

    def close(self, run: _Run, outputs: int) -> None:
        xp, p = run.xp, run.p
        for first, last in self.dense_columns:
            zero = xp.zeros_like(self.numerical[:, first:last])
            error = self.analytical_error
            run._compare(
                "cotangent",
                self.analytical[:, first:last],
                self.numerical[:, first:last],
                self.truncation[:, first:last],
                self.rounding[:, first:last],
                zero,
                xp.broadcast_to(xp.asarray(False, device=_device(zero)), zero.shape),
                self.scale[:, first:last],
                first,
                analytical_error=None if error is None else error[:, first:last],
            )
        spans: list[tuple[int, int]] = []
        for first, last, _ in self.agreeing:
            _extend(spans, first, last)
        for first, last in spans:
            for slot, by_argument in zip(p.in_layout.slots, run.by_argument):
                lo, hi = max(first, slot.offset), min(last, slot.offset + slot.width)
                if lo >= hi:
                    continue
                diff_sq, num_sq, ana_sq = (float(xp.sum(b[lo:hi] ** 2)) for b in self.norms)
                tally = Tally(
                    checked=(hi - lo) * outputs,
                    diff_sq=diff_sq,
                    num_sq=num_sq,
                    ana_sq=ana_sq,
                    cross=(num_sq + ana_sq - diff_sq) / 2,  # <a, n> by polarisation
                )
                for total in (by_argument, run.tally, run.entry_tally):
                    total.merge(tally)
                run.directions.setdefault("rev", Tally()).merge(tally)
        # Their nonzero entries are counted only if the check fails.
        for first, last, threshold in self.agreeing:
            for i, slot in enumerate(p.in_layout.slots):
                lo, hi = max(first, slot.offset), min(last, slot.offset + slot.width)
                if lo < hi:
                    run.uncounted.append((i, lo, hi, threshold))


@dataclass
class _Together:
    """An argument whose columns may settle together: its inputs ``lo:hi``,
    the step of each entry, and what the analytical rows say of which entry
    each output depends on."""

    slot: int
    lo: int
    hi: int
    step: Any
    sole: SoleEntries


_DD_FIELDS = ("value", "truncation", "rounding", "roughness", "nonfinite", "direction")


def _fields(dd: DirectionalDerivatives) -> tuple[Any, ...]:
    """(value, truncation, rounding, roughness, nonfinite), as compared."""
    return (dd.value, dd.truncation, dd.rounding, dd.roughness, dd.nonfinite)


def _consistent(a: tuple[Any, ...], b: tuple[Any, ...], xp: Any) -> Any:
    """Whether two estimates of the same entries (``_fields`` tuples, at
    different steps) agree within what their error estimates allow: for a
    smooth f they do; a jump or kink that one stencil reaches and the other
    does not shows as a disagreement even where neither stencil looks rough."""

    def spread(fields: tuple[Any, ...]) -> Any:
        _, truncation, rounding, roughness, _ = fields
        return SAFETY * (truncation + ROUNDING * rounding + roughness)

    # NaN compares False: never consistent.
    return xp.abs(a[0] - b[0]) <= spread(a) + spread(b)


def _complement(spans: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """The ranges of ``0:n`` outside the sorted, disjoint ``spans``."""
    gaps, at = [], 0
    for lo, hi in spans:
        if at < lo:
            gaps.append((at, lo))
        at = hi
    if at < n:
        gaps.append((at, n))
    return gaps


def _extend(ranges: list[tuple[int, int]], first: int, last: int) -> None:
    """Append ``first:last`` to sorted ``ranges``, merging with the last if adjacent."""
    if ranges and ranges[-1][1] == first:
        ranges[-1] = (ranges[-1][0], last)
    else:
        ranges.append((first, last))


def _undecided(entries: Entries, xp: Any, axis: int) -> Any:
    """Whether any entry is undecided along ``axis`` of a (columns, outputs)
    batch: per column (axis 1) as a (1, columns) row, per output (axis 0)
    as a (1, outputs) row."""
    if not entries.exceeding:
        shape = (1, entries.uncertain.shape[1 - axis])
        return xp.zeros(shape, dtype=xp.bool, device=_device(entries.uncertain))
    return xp.any(entries.uncertain, axis=axis)[None, :]


def _runs(flags: list[bool]) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal flags: ``(first, stop, flag)``."""
    runs: list[tuple[int, int, bool]] = []
    for i, flag in enumerate(flags):
        if runs and runs[-1][2] == flag:
            runs[-1] = (runs[-1][0], i + 1, flag)
        else:
            runs.append((i, i + 1, flag))
    return runs


def _ratio(entries: Entries, xp: Any) -> Any:
    """error / tolerance: 0 where both are 0, inf where only the tolerance is
    (or either is NaN); never a division warning."""
    tol = entries.tolerance
    error = entries.error
    positive = tol > 0
    ratio = error / xp.where(positive, tol, xp.ones_like(tol))
    undefined = (~positive & (error > 0)) | (error != error) | (tol != tol)
    return xp.where(undefined, xp.full_like(ratio, math.inf), xp.where(positive, ratio, 0 * ratio))
