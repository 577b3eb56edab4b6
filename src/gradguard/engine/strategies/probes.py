"""Random probes: u . J . v for random directions v and cotangents u.

Probe mode (large checks, or ``mode="probe"``) compares a handful of random
projections instead of every entry: each direction v is measured with one
stencil along it, then compared in reverse mode through two random
cotangents (u1 . J v and u2 . J v) and in forward mode through its JVP.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as host_xp

from ...core.differences import DirectionalDerivatives
from ..draws import random_entries
from ..parts import Parts
from .locate import locate
from .locate_forward import locate_forward

#: Inputs from which one float64 probe is not enough (a model's parameters).
#: One entry's share of a random projection shrinks like 1/sqrt(n) against the
#: projection's own finite-difference error, so at this size a single probe can
#: miss an entry 1% off: measured at 987,210 parameters (benchmarks/
#: model_locate.py, torch), one probe caught it in 19 of 20 seeds and 38 of 40
#: others, two probes in 20 of 20 and 39 of 40, for about 1.3x the time.
MODEL_SIZE = 100_000


def default_count(parts: Parts) -> int:
    """Probes to compare when the caller does not say. Low precision on
    either side hides a small error in any one probe: more probes keep the
    chance of missing it negligible; so does a second probe at model size."""
    p = parts.problem
    eps = max(float(parts.xp.finfo(p.work_dtype).eps), p.eps_analytical)
    if eps > 1e-10:
        return 8
    return 2 if p.in_layout.size >= MODEL_SIZE else 1


class RandomProbes:
    """``count`` random directions v, each compared in reverse mode
    through two random cotangents (a second cotangent costs one more row of
    the batched VJP, a second direction four to six more evaluations of f)
    and in forward mode through its JVP. A probe is a handful of numbers:
    its arrays are reduced on the device and sent to the host in one
    transfer (one sync on a GPU), where a few dozen NumPy operations cost
    less than as many framework calls."""

    def __init__(self, parts: Parts, direction: str, count: int):
        self.parts = parts
        self.direction = direction
        self.count = count

    def measure(self) -> None:
        parts, count = self.parts, self.count
        xp, p = parts.xp, parts.problem
        n, m = p.in_layout.size, p.out_layout.size
        # Directions, then cotangents, in one draw.
        drawn = random_entries(parts.rng, 1, count * (n + 2 * m), xp, p.x0)[0, :]
        directions = xp.reshape(drawn[: count * n], (count, n))
        dd = parts.numerical.smooth_derivatives(directions)
        rnd = parts.numerical.rounding_with_noise(dd)
        if self.direction in ("rev", "both"):
            cotangents = xp.reshape(drawn[count * n :], (2 * count, m))
            self._reverse(dd, rnd, cotangents, directions)
        if self.direction in ("fwd", "both"):
            self._forward(dd, rnd, directions)

    def _reverse(
        self, dd: DirectionalDerivatives, rnd: Any, cotangents: Any, directions: Any
    ) -> None:
        """u1 . J v and u2 . J v per direction v, against u . (J v) measured;
        where they are wrong, the entries behind it located."""
        parts, count = self.parts, self.count
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        u = parts.analytical.round_to(cotangents, p.out_layout, p.out_dtypes)
        received = u
        grads, wide = parts.analytical.vjp(u)  # (2 count, n)

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
        ledger.compare(
            "probe",
            ana,
            (num, trunc_sq**0.5, rounding, roughness, nonfinite > 0),
            ana_sq**0.5 + num_sq**0.5,
            0,
            analytical_error=None if wide is None else abs(ana - host[2]),
            xp=host_xp,
        )
        if ledger.tally.wrong:
            # Only a failing check is diagnosed (did the rule ignore its
            # cotangent?): a passing one skips looking at the VJP rows.
            parts.analytical.watch_vjps(grads)
            ledger.zero_arguments = parts.analytical.zero_arguments(grads)
        locate(parts, directions, received, grads, wide, dd)

    def _forward(self, dd: DirectionalDerivatives, rnd: Any, directions: Any) -> None:
        """J v per direction v, its JVP against the stencil's, output by
        output; where they are wrong, the entries behind it located."""
        parts = self.parts
        xp, p = parts.xp, parts.problem
        tangents = parts.analytical.round_to(dd.direction, p.in_layout, p.in_dtypes)
        ana, wide = parts.analytical.jvp(tangents)  # (k, m)
        scale = xp.max(xp.abs(dd.value), axis=1, keepdims=True)
        columns = [ana, dd.value, dd.truncation, rnd, dd.roughness]
        columns += [xp.astype(dd.nonfinite, ana.dtype), xp.broadcast_to(scale, ana.shape)]
        if wide is not None:
            columns.append(xp.abs(ana - wide))
        host = p.adapter.to_numpy(xp.stack(columns))
        parts.ledger.compare(
            "probe",
            host[0],
            (host[1], host[2], host[3], host[4], host[5] != 0),
            host[6],
            0,
            forward=True,
            analytical_error=None if wide is None else host[7],
            xp=host_xp,
        )
        locate_forward(parts, directions, dd)
