"""Finite-difference stencils as data.

A stencil approximates ``f'(x) ~ sum_k w_k f(x + o_k h) / h``. Keeping them
as tables (offsets, weights) lets one routine apply any of them to many
directions at once, and lets the step rule depend only on the order.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CENTRAL", "FOURTH_DIFFERENCE", "Stencil"]


@dataclass(frozen=True)
class Stencil:
    """Offsets (in units of the step ``h``) and weights of one stencil.

    ``order`` is the accuracy order p: the truncation error is O(h**p).
    ``power`` is the power of ``h`` the weighted sum is divided by
    (1 for a first derivative, 0 for a plain difference).
    """

    offsets: tuple[int, ...]
    weights: tuple[float, ...]
    order: int
    power: int = 1

    def __post_init__(self) -> None:
        if len(self.offsets) != len(self.weights):
            raise ValueError("a stencil needs one weight per offset")


#: Central first-derivative stencils keyed by accuracy order.
CENTRAL: dict[int, Stencil] = {
    2: Stencil((-1, 1), (-1 / 2, 1 / 2), order=2),
    4: Stencil((-2, -1, 1, 2), (1 / 12, -2 / 3, 2 / 3, -1 / 12), order=4),
    6: Stencil(
        (-3, -2, -1, 1, 2, 3),
        (-1 / 60, 3 / 20, -3 / 4, 3 / 4, -3 / 20, 1 / 60),
        order=6,
    ),
}

#: The fourth difference f(x-2h) - 4f(x-h) + 6f(x) - 4f(x+h) + f(x+2h).
#: For a smooth f it is h**4 f''''(x), far below rounding at the steps we
#: use, so what is left measures rounding noise; a kink (a jump j in f')
#: makes it about 2|j|h. It needs no evaluation beyond the 4th-order stencil
#: and the centre.
FOURTH_DIFFERENCE = Stencil((-2, -1, 0, 1, 2), (1, -4, 6, -4, 1), order=0, power=0)
