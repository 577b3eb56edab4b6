"""Random numbers of a check: directions, tangents and cotangents.

One generator per check (seeded by the caller's ``seed``) serves every
draw, so the order in which the strategies draw is part of what makes a
check repeatable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .problem import _to_xp


def random_entries(rng: np.random.Generator, rows: int, cols: int, xp: Any, like: Any) -> Any:
    """Random directions or cotangents: either sign, magnitude uniform in
    [1, 3). Never near zero, so no entry's error is scaled down towards
    nothing: a wrong Jacobian entry shows in every projection at least
    at its own size (with normal numbers, a factor below 0.01 comes up in
    about one entry in a hundred). Wide, so a rule that clips its incoming
    cotangent anywhere below 3 (JAX's documented clip_gradient clips at
    1) is wrong on a share of the entries. And a uniform draw costs a
    quarter of a normal one, which dominates a probe of 10^4 entries.
    ``like`` fixes the dtype and device of the result."""
    host = rng.random((rows, cols))
    host *= 4.0
    host -= 2.0  # [-2, 2)
    host += np.copysign(1.0, host)  # [-3, -1) and [1, 3)
    return _to_xp(host, xp, like)
