"""Finite-difference stencils as data.

A stencil approximates ``f'(x) ~ sum_k w_k f(x + o_k h) / h``. Keeping them
as tables (offsets, weights) lets one routine apply any of them to many
directions at once, and lets the step rule depend only on the order.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CENTRAL", "EVEN_DIFFERENCE", "KINK_RESPONSE", "Stencil"]


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

#: Even differences used to measure roughness, keyed by the accuracy of the
#: derivative stencil they accompany (they use the same points plus the
#: centre). For a smooth f, the difference of order q is h**q f^(q)(x): far
#: below rounding at the steps used, so what is left measures rounding noise.
#: A kink (a jump j in f') at x makes it about KINK_RESPONSE[q] * |j| * h.
EVEN_DIFFERENCE: dict[int, Stencil] = {
    4: Stencil((-2, -1, 0, 1, 2), (1, -4, 6, -4, 1), order=0, power=0),
    6: Stencil((-3, -2, -1, 0, 1, 2, 3), (1, -6, 15, -20, 15, -6, 1), order=0, power=0),
}
KINK_RESPONSE: dict[int, float] = {4: 2.0, 6: 6.0}
