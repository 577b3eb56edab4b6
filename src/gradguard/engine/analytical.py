"""The analytical side: the rule under check, through the framework.

:class:`Analytical` turns core arrays of cotangents into VJP rows and
tangents into JVP columns (and the same rule's at wider dtypes, for its
rounding), rounds random cotangents and tangents to what the rule actually
receives, and watches whether the rule ignores its cotangent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import UnsupportedError
from .._numpy_errors import callers_settings
from ..core.layout import FlatLayout
from .draws import random_entries
from .problem import WrongGradientShape, _note, _Problem, _wide_dtype


class Analytical:
    """VJPs and JVPs of the rule under check, for one check."""

    def __init__(self, problem: _Problem, rng: np.random.Generator):
        self.p = problem
        self.xp = problem.xp
        self.rng = rng
        # The first VJP seen, and whether every later one (for other
        # cotangents) came back the same: a rule that ignores its cotangent.
        self.first_vjp: Any = None
        self.vjps_identical = True
        #: The same rule's VJPs at the wider dtypes, as one pullback.
        self.wide_pullback: Any = None

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
            if self.wide_pullback is None:
                self.wide_pullback = p.adapter.pullback(p.fn, wide, vectorize=p.vectorize)
            return self.wide_pullback(cots)

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

    def watch_vjps(self, rows: Any) -> None:
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

    def cotangent_ignored(self) -> bool:
        """Whether every VJP seen was the same nonzero vector."""
        return (
            self.vjps_identical
            and self.first_vjp is not None
            and bool(self.xp.any(self.first_vjp != 0))
        )

    def zero_arguments(self, rows: Any) -> list[str]:
        """Arguments whose every VJP in ``rows`` is exactly zero (for the
        diagnosis of random probes, which sum over the arguments)."""
        xp, p = self.xp, self.p
        return [
            name
            for name, slot in zip(p.in_names, p.in_layout.slots)
            if slot.width and not bool(xp.any(rows[:, slot.offset : slot.offset + slot.width]))
        ]

    def random_cotangents(self, rows: int) -> Any:
        """``(rows, m)`` random cotangents as the rule receives them (see draws)."""
        p = self.p
        drawn = random_entries(self.rng, rows, p.out_layout.size, self.xp, p.x0)
        return self.round_to(drawn, p.out_layout, p.out_dtypes)

    def random_tangents(self, rows: int) -> Any:
        """``(rows, n)`` random tangents as the rule receives them (see draws)."""
        p = self.p
        drawn = random_entries(self.rng, rows, p.in_layout.size, self.xp, p.x0)
        return self.round_to(drawn, p.in_layout, p.in_dtypes)

    def round_to(self, values: Any, layout: FlatLayout, dtypes: list[Any]) -> Any:
        """Round real coordinates to what the analytical side actually receives."""
        xp = self.xp
        return layout.flatten(layout.unflatten(values, xp, dtypes), xp, self.p.work_dtype)
