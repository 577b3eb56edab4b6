"""The numerical side: f near x, and finite differences with their error estimates.

:class:`Numerical` evaluates f (through the :class:`~.evaluation.Evaluator`),
measures its noise, chooses the steps, and turns stencils into derivatives:
along directions (:meth:`~Numerical.derivatives`, smoothed in low precision
by :meth:`~Numerical.smooth_derivatives`), per coordinate
(:meth:`~Numerical.partials`, :meth:`~Numerical.stencil`), or by complex step.
Every estimate comes with its truncation, rounding and roughness, as
:mod:`gradguard.core.differences` measures them.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from typing import Any

import numpy as np

from .._errors import ArgumentError, PrecisionError
from ..core.differences import (
    COMPLEX_STEP,
    DirectionalDerivatives,
    complex_step_derivatives,
    directional_derivatives,
    partial_derivatives,
)
from ..core.steps import default_steps
from ..core.verdict import ROUGH, ROUNDING, SAFETY, compare
from .draws import random_entries
from .evaluation import Evaluator
from .problem import _describe, _device, _note, _Problem, _real_dtype, _to_xp

#: Differences between two evaluations at the same point beyond this many
#: units of rounding make f "noisy": flagged, not judged.
NOISE_ULPS = 64
#: Bytes of perturbed points and outputs held at once: a chunk's arrays
#: then stay in a 32 MB last-level cache shared with other processes. With
#: torch's VJP batches (Adapter.vjp_batch_bytes), a full check of x.sin() * x
#: took the same or less than
#: with 1 << 25 and 1 << 22: 2.95 s against 3.09 s at n = 10^4, 114 ms
#: against 134 ms at n = 1000, even at 3000 (1 << 26 measured 5-20% slower).
MEMORY_BUDGET = 1 << 24
#: How much longer the second step of a low-precision full check is.
WIDE_STEP = 8.0
#: Low precision: entries that a step cannot decide (f not smooth or not
#: finite within the stencil, or a disagreement that the next step does not
#: confirm) are measured again at steps SHORTER_STEP times shorter, up to
#: SHORTER_STEPS times (down to 1/64 of the first step): a kink, jump or pole
#: farther from x than about 3 such steps no longer reaches the stencil.
SHORTER_STEP = 4.0
SHORTER_STEPS = 3

#: An estimate as compared: (value, truncation, rounding, roughness, nonfinite).
Fields = tuple[Any, ...]

_DD_FIELDS = ("value", "truncation", "rounding", "roughness", "nonfinite", "direction")


class Numerical:
    """f near x and its finite differences, for one check."""

    def __init__(
        self,
        problem: _Problem,
        rng: np.random.Generator,
        *,
        eps: float | None,
        accuracy: int | None,
        method: str,
        vectorize: bool,
        executor: Executor | None,
        progress: bool | None,
    ):
        self.p = p = problem
        self.xp = xp = problem.xp
        self.device = _device(problem.x0)
        n, m = p.in_layout.size, p.out_layout.size
        low_precision = float(xp.finfo(p.work_dtype).eps) > 1e-10
        self.accuracy = accuracy if accuracy is not None else 6 if low_precision else 4
        # Chunks sized to MEMORY_BUDGET: a column of a full check holds its
        # perturbed points and outputs plus some ten (columns, m) arrays of
        # bookkeeping; small chunks also stay in cache.
        per_column = 8 * (self.accuracy * (n + m) + 10 * m + 1)
        self.columns_per_chunk = max(1, MEMORY_BUDGET // per_column)
        self.evaluator = Evaluator(
            p.adapter,
            p.fn,
            p.eval_like,
            vectorize=vectorize,
            chunk_rows=self.accuracy * self.columns_per_chunk,
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
        self._set_precision()
        self._set_step_kinds(eps)
        if self.complex_step:
            self._check_complex_step(rng)
        self.steps = self._default_steps() if eps is None else self._fixed_steps(eps)

    def _set_precision(self) -> None:
        """The precision f's values actually have (``eps_values``, and per
        output ``output_eps`` where some output is narrower), and the scale
        of a derivative where f does not move (``floor_scale``)."""
        xp, p = self.xp, self.p
        # An output narrower than the numerical side's dtype (f computes in
        # float64, returns float32) rounds to its own dtype, and the step and
        # rounding follow it. (Evaluated in wider dtypes than the caller's, f
        # was seen to return them: see _choose_precision.)
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
        # The scale of a derivative where f does not move at all (a batch
        # of exact zeros): |f| / |x|, in units of 1 like the steps.
        f_size = float(xp.max(xp.abs(self.f0))) if self.f0.shape[0] else 0.0
        x_size = float(xp.max(xp.abs(p.x0))) if p.x0.shape[0] else 0.0
        if not math.isfinite(f_size):
            f_size = 0.0
        self.floor_scale = max(1.0, f_size) / max(1.0, x_size)

    def _set_step_kinds(self, eps: float | None) -> None:
        """Which further steps the check may take besides its own."""
        unit = float(self.xp.finfo(self.p.work_dtype).eps)
        # In low precision without a fixed step, a second, longer step per entry.
        # Float32 only: in float16 / bfloat16 the steps are already long.
        self.wide_steps = 1e-10 < unit < 1e-5 and eps is None and not self.complex_step
        # Steps shortened where a kink or jump is within reach (see
        # confirm.Confirmation.shorter_steps); a step the caller fixed stays as it is.
        self.shorter_steps = eps is None and not self.complex_step
        if self.wide_steps:
            self.evaluator.expected *= 2

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

    def rounding_with_noise(self, dd: Any) -> Any:
        """The rounding of differences ``dd``, with f's own noise added where
        f is nondeterministic (the noise measured first: it tells)."""
        noise = self.noise
        return dd.rounding + noise[None, :] if self.nondeterministic else dd.rounding

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

    # -- steps -------------------------------------------------------------
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

    def _fixed_steps(self, eps: float) -> Any:
        """The caller's step for every entry, refused where x + eps rounds it away."""
        xp, p = self.xp, self.p
        steps = xp.full(p.x0.shape, float(eps), dtype=p.work_dtype, device=self.device)
        moved = (p.x0 + steps) - (p.x0 - steps)
        if not bool(xp.all(xp.abs(moved - 2 * steps) <= 1e-3 * 2 * steps)):
            largest = float(xp.max(xp.abs(p.x0)))
            working = float(xp.finfo(p.work_dtype).eps) ** (1 / 3) * max(1.0, largest)
            raise PrecisionError(
                f"eps: {eps:g} is lost to rounding at this x in {_describe([p.work_dtype])}; "
                f"use eps={working:.3g} or leave eps=None for steps chosen per entry"
            )
        return steps

    # -- derivatives along directions ---------------------------------------
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

    def smooth_derivatives(self, directions: Any) -> DirectionalDerivatives:
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

    # -- derivatives per coordinate -------------------------------------------
    def partials(self, start: int, stop: int) -> DirectionalDerivatives:
        """Numerical ``J[:, start:stop]``, transposed: ``(stop - start, m)``,
        every field per unit of the coordinate."""
        if self.complex_step:
            return self._complex_partials(start, stop)
        steps = self.steps[start:stop]
        dd = self.stencil(steps, start)
        if not self.wide_steps:
            return dd
        # Low precision: also a step WIDE_STEP times longer, and per entry
        # whichever estimate claims the smaller error. Where f is nearly
        # linear (small truncation) the longer step divides rounding.
        return self._better_of(dd, self.stencil(steps * WIDE_STEP, start))

    def stencil(self, steps: Any, start: int) -> DirectionalDerivatives:
        """The central stencil of the columns from ``start``, one per step in ``steps``."""
        p = self.p
        return partial_derivatives(
            self.evaluate, p.x0, steps, start, self.f0, self.xp, self.accuracy, self.output_eps
        )

    def with_noise(self, dd: DirectionalDerivatives) -> Fields:
        """A stencil's :data:`Fields`, f's noise per unit of its step joining its rounding."""
        rounding = dd.rounding + self.noise[None, :] / self.xp.abs(dd.direction)[:, None]
        return (dd.value, dd.truncation, rounding, dd.roughness, dd.nonfinite)

    def _better_of(
        self, dd: DirectionalDerivatives, far: DirectionalDerivatives
    ) -> DirectionalDerivatives:
        """Per entry, the estimate at the step WIDE_STEP times longer
        (``far``) where it claims the smaller error and can be trusted, else
        the one at the check's step (``dd``)."""
        xp = self.xp
        better = far.truncation + ROUNDING * far.rounding < dd.truncation + ROUNDING * dd.rounding
        # Trust the long step only inside the asymptotic regime: its
        # truncation estimate grows no faster than the stencil's order says.
        regime = far.truncation <= dd.truncation * WIDE_STEP ** (self.accuracy - 2)
        better = better & regime & ~far.nonfinite & (far.roughness <= dd.roughness * WIDE_STEP)
        # And only where the shorter step is smooth and the two agree: a
        # staircase (floor, round) sampled at about its own period looks
        # linear to the long stencil, with no truncation and no roughness.
        smooth = dd.roughness <= ROUGH * dd.rounding
        better = better & smooth & consistent(fields(dd), fields(far), xp)

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

    # -- complex step ----------------------------------------------------------
    def _complex_partials(self, start: int, stop: int) -> DirectionalDerivatives:
        xp, p = self.xp, self.p
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

    def _scale(self) -> Any:
        xp = self.xp
        return xp.maximum(xp.abs(self.p.x0), xp.ones_like(self.p.x0))

    def _check_complex_step(self, rng: np.random.Generator) -> None:
        """Complex step is exact only for analytic f: compare one random
        direction with central differences before trusting it."""
        xp, p = self.xp, self.p
        if any(s.is_complex for s in p.in_layout.slots + p.out_layout.slots):
            raise ArgumentError(
                "method: 'complex-step' needs real inputs and outputs; use method='central'"
            )
        v = random_entries(rng, 1, p.in_layout.size, xp, p.x0)
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


def fields(dd: DirectionalDerivatives) -> Fields:
    """(value, truncation, rounding, roughness, nonfinite), as compared."""
    return (dd.value, dd.truncation, dd.rounding, dd.roughness, dd.nonfinite)


def consistent(a: Fields, b: Fields, xp: Any) -> Any:
    """Whether two estimates of the same entries (at different steps) agree
    within what their error estimates allow: for a smooth f they do; a jump
    or kink that one stencil reaches and the other does not shows as a
    disagreement even where neither stencil looks rough."""

    def spread(fields: Fields) -> Any:
        _, truncation, rounding, roughness, _ = fields
        return SAFETY * (truncation + ROUNDING * rounding + roughness)

    # NaN compares False: never consistent.
    return xp.abs(a[0] - b[0]) <= spread(a) + spread(b)
