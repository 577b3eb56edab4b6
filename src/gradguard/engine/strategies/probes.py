"""Random probes: u . J . v for random directions v and cotangents u.

Probe mode (large checks, or ``mode="probe"``) compares a handful of random
projections instead of every entry: each direction v is measured with one
stencil along it, then compared in reverse mode through two random
cotangents (u1 . J v and u2 . J v) and in forward mode through its JVP.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as host_xp
import numpy as np

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

#: The second of the two default probes at model size is measured only
#: while the first leaves the verdict open: some comparison uncertain, or
#: an error above this share of its tolerance. A wrong entry's share of a
#: probe, |u_i v_j| times its error, changes by at most 9x from one probe to
#: the next (|u_i|, |v_j| in [1, 3)); with the tolerance changing by up to 2x
#: between directions, a wrong entry that shows below 1/18 of the tolerance in
#: the first probe stays below the tolerance in the second. Right functions
#: show 10^-5 to 0.03 of it (sin(x) x, its sum and an MLP at 10^5 and 10^6
#: inputs), so they mostly stop after one; a wrong entry that one probe sees
#: fails there, and is located from it. Measured (benchmarks/model_locate.py,
#: torch, 987,210 parameters, 2026-12-03): the wrong entry named in 20 of 20
#: seeds and 38 of 40 others (seeds 38 and 48: both probes within BAND
#: tolerances, inconclusive), where two probes always named it in 20 of 20
#: and 39 of 40 (seed 49); the right rule passes 60 of 60 in 0.09-0.11 s CPU
#: median instead of 0.31-0.33 s.
OPEN = 1 / 18


def default_count(parts: Parts) -> int:
    """Probes to compare when the caller does not say. Low precision on
    either side hides a small error in any one probe: more probes keep the
    chance of missing it negligible; so does a second probe at model size."""
    if _low_precision(parts):
        return 8
    return 2 if parts.problem.in_layout.size >= MODEL_SIZE else 1


def _low_precision(parts: Parts) -> bool:
    p = parts.problem
    eps = max(float(parts.xp.finfo(p.work_dtype).eps), p.eps_analytical)
    return eps > 1e-10


class RandomProbes:
    """``count`` random directions v, each compared in reverse mode
    through two random cotangents (a second cotangent costs one more row of
    the batched VJP, a second direction four to six more evaluations of f)
    and in forward mode through its JVP. A probe is a handful of numbers:
    its arrays are reduced on the device and sent to the host in one
    transfer (one sync on a GPU), where a few dozen NumPy operations cost
    less than as many framework calls."""

    def __init__(self, parts: Parts, direction: str, count: int, second_if_open: bool):
        """``second_if_open``: measure the second of two probes only while
        the first leaves the verdict open (see OPEN): for the two probes that
        are the default at model size, not for probes the caller asked for."""
        self.parts = parts
        self.direction = direction
        self.count = count
        self.second_if_open = second_if_open and count == 2
        self.widest = 0.0  # the largest error / tolerance compared so far

    def measure(self) -> None:
        if not self.second_if_open:
            self._measure(self.count)
            return
        self._measure(1)
        if self._open():
            self._measure(1)

    def _open(self) -> bool:
        """Whether the probes so far leave the verdict open: none wrong,
        and some uncertain or showing an error above OPEN of its tolerance."""
        tally = self.parts.ledger.tally
        return not tally.wrong and (tally.uncertain > 0 or not self.widest <= OPEN)

    def _measure(self, count: int) -> None:
        parts = self.parts
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

    def _compare(self, ana: Any, numerical: Any, scale: Any, forward: bool, error: Any) -> None:
        """The ledger's compare, keeping the largest error / tolerance."""
        ledger = self.parts.ledger
        entries = ledger.entries("probe", ana, numerical, scale, error, xp=host_xp)
        ledger.record("probe", entries, 0, forward=forward, xp=host_xp)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = entries.error / entries.tolerance
        self.widest = max(self.widest, float(np.max(ratio, initial=0.0)))

    def _reverse(
        self, dd: DirectionalDerivatives, rnd: Any, cotangents: Any, directions: Any
    ) -> None:
        """u1 . J v and u2 . J v per direction v, against u . (J v) measured;
        where they are wrong, the entries behind it located."""
        parts, count = self.parts, directions.shape[0]
        xp, p, ledger = parts.xp, parts.problem, parts.ledger
        u = parts.analytical.round_to(cotangents, p.out_layout, p.out_dtypes)
        received = u
        grads, wide = parts.analytical.vjp(u)  # (2 count, n)

        sums = _sums(xp, grads, wide, u, dd, rnd)
        host = p.adapter.to_numpy(sums).reshape(sums.shape[0], 2 * count)
        ana, ana_sq = host[0], host[1]
        num, num_sq, trunc_sq, rounding, roughness, nonfinite = host[-6:]
        # Truncation errors of the terms are of either sign: they add like
        # a 2-norm. Rounding of the analytical side enters each term
        # independently too, so the scale is the terms' 2-norm, not their sum.
        self._compare(
            ana,
            (num, trunc_sq**0.5, rounding, roughness, nonfinite > 0),
            ana_sq**0.5 + num_sq**0.5,
            forward=False,
            error=None if wide is None else abs(ana - host[2]),
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
        self._compare(
            host[0],
            (host[1], host[2], host[3], host[4], host[5] != 0),
            host[6],
            forward=True,
            error=None if wide is None else host[7],
        )
        locate_forward(parts, directions, dd)


#: Entries (count * (n + m)) up to which a probe's sums are taken from two
#: stacks (fewest framework calls); beyond, each on its own as a matrix
#: product (no stacked copies: at 10^6 entries they cost more than the calls).
STACKED_SUMS = 1 << 17


def _sums(xp: Any, grads: Any, wide: Any, u: Any, dd: DirectionalDerivatives, rnd: Any) -> Any:
    """The sums a reverse probe compares, one row each, per (direction,
    cotangent): over the inputs the analytical terms g_j v_j, their squares
    (and the wider dtypes' terms); over the outputs u . (J v) measured, its
    terms' squares, the truncation, rounding and roughness they carry, and
    whether any output was not finite. ``grads`` and ``u`` are (2 count, .),
    the fields of ``dd`` (count, .)."""
    count, n = dd.direction.shape
    m = u.shape[1]

    def pairs(a: Any) -> Any:  # (2 count, width) -> (count, 2, width)
        return xp.reshape(a, (count, 2, a.shape[1]))

    v = dd.direction
    terms = pairs(grads) * v[:, None, :]  # the analytical u.J.v, term by term
    u = pairs(u)
    size = xp.abs(u)
    if count * (n + m) <= STACKED_SUMS:
        over_inputs = [terms, terms * terms]
        if wide is not None:
            over_inputs.append(pairs(wide) * v[:, None, :])
        weighted = u * dd.value[:, None, :]
        over_outputs = [
            weighted,
            weighted * weighted,
            (u * dd.truncation[:, None, :]) ** 2,
            size * rnd[:, None, :],
            size * dd.roughness[:, None, :],
            xp.broadcast_to(xp.astype(dd.nonfinite, u.dtype)[:, None, :], u.shape),
        ]
        return xp.concat(
            [xp.sum(xp.stack(over_inputs), axis=3), xp.sum(xp.stack(over_outputs), axis=3)]
        )

    def weighted_sums(w: Any, values: Any) -> Any:  # (count, 2, k), (count, k) -> (count, 2)
        return (w @ values[:, :, None])[:, :, 0]

    def squares(a: Any) -> Any:  # (count, 2, k) -> (count, 2): sum of squares per row
        return (a[:, :, None, :] @ a[:, :, :, None])[:, :, 0, 0]

    sums = [xp.sum(terms, axis=2), squares(terms)]
    if wide is not None:
        sums.append(weighted_sums(pairs(wide), v))
    nonfinite = xp.astype(xp.any(dd.nonfinite, axis=1), u.dtype)
    sums += [
        weighted_sums(u, dd.value),
        squares(u * dd.value[:, None, :]),
        squares(u * dd.truncation[:, None, :]),
        weighted_sums(size, rnd),
        weighted_sums(size, dd.roughness),
        xp.broadcast_to(nonfinite[:, None], (count, 2)),
    ]
    return xp.stack(sums)
