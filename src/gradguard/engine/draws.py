"""Random numbers of a check: directions, tangents and cotangents.

One generator per check (seeded by the caller's ``seed``) serves every
draw, so the order in which the strategies draw is part of what makes a
check repeatable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .problem import _to_xp

#: Entries transformed at a time (see random_entries).
PIECE = 1 << 16


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
    flat = host.reshape(-1)
    # In pieces that stay in cache: at 10^6 entries and more, one pass over
    # the whole draw per operation (and its temporary) cost a third more.
    for start in range(0, flat.size, PIECE):
        piece = flat[start : start + PIECE]
        piece *= 4.0
        piece -= 2.0  # [-2, 2)
        piece += np.copysign(1.0, piece)  # [-3, -1) and [1, 3)
    return _to_xp(host, xp, like)
