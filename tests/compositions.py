"""Seeded random compositions of ordinary operations, for property tests.

Each seed gives a function ``f`` and a point: a chain of two to five smooth
operations (elementwise functions, matrix products, reductions, softmax,
layer norm, cumulative sums, near-cancellations) at a scale drawn from
1e-3 to 30. Their derivatives come from the framework's own autodiff, which
is right by construction: a gradient check that says ``fail`` on any of
them is wrong (a ``pass`` or an ``inconclusive`` is fine).

``composition(seed, framework, dtype)`` returns ``(description, f, args)``
for "torch" or "jax"; the framework is imported only then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: Elementwise operations: name -> function of (namespace, y). Each stays
#: finite for any finite input of moderate size.
ELEMENTWISE = (
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "softplus",
    "atan",
    "square",
    "cube",
    "hypot1",
    "log1p_square",
    "gauss",
    "scale",
)
#: Operations that mix entries: along the last axis or through a matrix.
MIXING = (
    "matmul",
    "softmax",
    "log_softmax",
    "layer_norm",
    "cumsum",
    "centre",
    "times_sum",
    "logsumexp",
    "cancel",
)


class _Ops:
    """The operations, written once over a namespace of the framework."""

    def __init__(self, framework: str):
        self.framework = framework
        if framework == "torch":
            import torch

            self.m = torch
            self.softmax = lambda y: torch.softmax(y, -1)
            self.log_softmax = lambda y: torch.log_softmax(y, -1)
            self.sigmoid = torch.sigmoid
            self.softplus = torch.nn.functional.softplus
            self.logsumexp = lambda y: torch.logsumexp(y, -1, keepdim=True)
            self.layer_norm = lambda y: torch.nn.functional.layer_norm(y, (y.shape[-1],))
            self.cumsum = lambda y: torch.cumsum(y, -1)
            self.atan = torch.atan
            self.mean = lambda y: y.mean(-1, keepdim=True)
            self.sum = lambda y: y.sum(-1, keepdim=True)
            self.sqrt = torch.sqrt
            self.log1p = torch.log1p
            self.cast = lambda a, like: a.to(like.dtype)
        elif framework == "jax":
            import jax
            import jax.numpy as jnp

            self.m = jnp
            self.softmax = lambda y: jax.nn.softmax(y, axis=-1)
            self.log_softmax = lambda y: jax.nn.log_softmax(y, axis=-1)
            self.sigmoid = jax.nn.sigmoid
            self.softplus = jax.nn.softplus
            self.logsumexp = lambda y: jax.scipy.special.logsumexp(y, axis=-1, keepdims=True)

            def layer_norm(y: Any) -> Any:
                centred = y - y.mean(-1, keepdims=True)
                return centred / jnp.sqrt((centred * centred).mean(-1, keepdims=True) + 1e-5)

            self.layer_norm = layer_norm
            self.cumsum = lambda y: jnp.cumsum(y, -1)
            self.atan = jnp.arctan
            self.mean = lambda y: y.mean(-1, keepdims=True)
            self.sum = lambda y: y.sum(-1, keepdims=True)
            self.sqrt = jnp.sqrt
            self.log1p = jnp.log1p
            self.cast = lambda a, like: a.astype(like.dtype)
        else:
            raise ValueError(framework)

    def elementwise(self, name: str, c: float) -> Callable[[Any], Any]:
        m = self.m
        table: dict[str, Callable[[Any], Any]] = {
            "sin": m.sin,
            "cos": m.cos,
            "tanh": m.tanh,
            "sigmoid": self.sigmoid,
            "softplus": self.softplus,
            "atan": self.atan,
            "square": lambda y: y * y,
            "cube": lambda y: y * y * y,
            "hypot1": lambda y: self.sqrt(y * y + 1.0),
            "log1p_square": lambda y: self.log1p(y * y),
            "gauss": lambda y: m.exp(-y * y),
            "scale": lambda y: c * y,
        }
        return table[name]


def _array(framework: str, values: np.ndarray, dtype: str) -> Any:
    if framework == "torch":
        import torch

        return torch.tensor(values, dtype=getattr(torch, dtype))
    import jax.numpy as jnp

    return jnp.asarray(values, dtype=dtype)


def composition(seed: int, framework: str, dtype: str = "float64") -> tuple[str, Any, tuple]:
    """The ``seed``-th random composition: (what it is, f, args)."""
    rng = np.random.default_rng(seed)
    ops = _Ops(framework)
    rows, cols = int(rng.integers(1, 5)), int(rng.integers(2, 8))
    scale = float(10.0 ** rng.uniform(-3.0, np.log10(30.0)))
    x = scale * rng.standard_normal((rows, cols))
    steps: list[tuple[str, Callable[[Any], Any]]] = []
    width = cols
    for _ in range(int(rng.integers(2, 6))):
        if rng.random() < 0.5:
            name = str(rng.choice(ELEMENTWISE))
            c = float(rng.choice([-3.0, -0.5, 0.25, 2.0, 10.0]))
            steps.append((f"{name}" if name != "scale" else f"{c:g}*", ops.elementwise(name, c)))
            continue
        name = str(rng.choice(MIXING))
        if name == "matmul":
            out = int(rng.integers(2, 8))
            w = rng.standard_normal((width, out)) / np.sqrt(width)
            weight = _array(framework, w, dtype)
            # In the dtype f is called with: f also runs in float64.
            steps.append((f"@W{width}x{out}", lambda y, weight=weight: y @ ops.cast(weight, y)))
            width = out
        elif name == "centre":
            steps.append(("centre", lambda y: y - ops.mean(y)))
        elif name == "times_sum":
            steps.append(("*sum", lambda y: y * ops.sum(y)))
        elif name == "logsumexp":
            steps.append(("-logsumexp", lambda y: y - ops.logsumexp(y)))
        elif name == "cancel":
            # (y + c) - c: loses log2(c / |y|) bits, a staircase in y.
            c = float(10.0 ** rng.uniform(0.0, 4.0))
            steps.append((f"(+{c:.3g})-{c:.3g}", lambda y, c=c: ((y + c) - c) * 1.0))
        else:
            steps.append((name, getattr(ops, name)))
    description = f"x{x.shape} scale {scale:.3g}: " + " -> ".join(s for s, _ in steps)

    def f(y: Any) -> Any:
        for _, step in steps:
            y = step(y)
        return y

    f.__name__ = f"composition_{seed}"
    return description, f, (_array(framework, x, dtype),)
