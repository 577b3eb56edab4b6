"""JAX: ``jax.vjp`` / ``jax.jvp``, and ``jax.vmap`` (jitted) for batches."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .._errors import UnsupportedError
from .base import Adapter, LeafFunction


class JaxAdapter(Adapter):
    name = "jax"
    module = "jax"
    # jax.vjp takes and returns the conjugate of dL/d(re) + i dL/d(im).
    conjugate_cotangents = True
    has_autodiff = True

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, jax.Array)

    def namespace(self, core_array: Any) -> Any:
        return jnp

    def from_core(self, array: Any, like: Any) -> Any:
        devices = getattr(like, "devices", None)
        if devices is None:
            return array
        return jax.device_put(array, next(iter(like.devices())))

    def float64_available(self, array: Any) -> bool:
        return bool(jax.config.jax_enable_x64)

    def vectorize(self, fn: LeafFunction) -> LeafFunction:
        return jax.jit(jax.vmap(fn))

    def vjp(self, fn: LeafFunction, primals: list[Any], cotangents: list[Any]) -> list[Any]:
        _, pullback = jax.vjp(fn, *primals)
        cots = [jnp.conj(c) for c in cotangents]
        try:
            grads = jax.vmap(lambda *c: pullback(list(c)))(*cots)
        except Exception:
            k = cots[0].shape[0]
            rows = [pullback([c[r] for c in cots]) for r in range(k)]
            grads = tuple(jnp.stack([row[i] for row in rows]) for i in range(len(primals)))
        return [jnp.conj(g) for g in grads]

    def jvp(self, fn: LeafFunction, primals: list[Any], tangents: list[Any]) -> list[Any]:
        def one(*t: Any) -> list[Any]:
            return jax.jvp(fn, tuple(primals), tuple(t))[1]

        try:
            return list(jax.vmap(one)(*tangents))
        except TypeError as exc:
            if "custom_vjp" in str(exc) or "can't apply forward-mode" in str(exc):
                raise UnsupportedError(
                    f"forward mode is not defined for this function ({exc}); "
                    "check a jax.custom_vjp rule with direction='rev'"
                ) from exc
            raise

    def differentiable_vjp(self, fn: LeafFunction, cotangents: list[Any]) -> LeafFunction:
        cots = [jnp.conj(c) for c in cotangents]

        def first_derivative(*xs: Any) -> list[Any]:
            _, pullback = jax.vjp(fn, *xs)
            return [jnp.conj(g) for g in pullback(cots)]

        return first_derivative
