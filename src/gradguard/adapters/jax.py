"""JAX: ``jax.vjp`` / ``jax.jvp``, and ``jax.vmap`` (jitted) for batches.

The core works on NumPy copies of JAX arrays, converting at the edge as for
TensorFlow: JAX compiles every eager operation for every new shape, so the
core's many small bookkeeping operations would cost a compilation each
(seconds per check). Only ``f`` and its derivatives run in JAX, jitted and
vmapped over whole batches.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import UnsupportedError
from .base import Adapter, LeafFunction


class JaxAdapter(Adapter):
    name = "jax"
    module = "jax"
    has_autodiff = True

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, jax.Array)

    def namespace(self, core_array: Any) -> Any:
        import array_api_compat.numpy

        return array_api_compat.numpy

    def to_core(self, array: Any) -> Any:
        host = np.asarray(array)
        if host.dtype.kind == "V":
            # bfloat16 / float8 (ml_dtypes), which NumPy's dtype machinery
            # does not know: float32 holds them exactly.
            host = host.astype(np.float32)
        return host

    def from_core(self, array: Any, like: Any) -> Any:
        if isinstance(array, jax.Array):
            return array
        devices = like.devices() if isinstance(like, jax.Array) else None
        device = next(iter(devices)) if devices else None
        return jax.device_put(np.asarray(array), device)

    def to_numpy(self, core_array: Any) -> Any:
        return np.asarray(core_array)

    def float64_available(self, array: Any) -> bool:
        return bool(jax.config.read("jax_enable_x64"))

    def vectorize(self, fn: LeafFunction) -> LeafFunction:
        return jax.jit(jax.vmap(fn))

    def vjp(self, fn: LeafFunction, primals: list[Any], cotangents: list[Any]) -> list[Any]:
        cots = [jnp.conj(c) for c in cotangents]

        def batched(primals: list[Any], cots: list[Any]) -> Any:
            out, pullback = jax.vjp(fn, *primals)
            # The pullback wants cotangents in the outputs' own dtypes.
            cots = [c.astype(o.dtype) for c, o in zip(cots, out)]
            return jax.vmap(lambda *c: pullback(list(c)))(*cots)

        try:
            grads = jax.jit(batched)(list(primals), cots)
        except Exception:
            # Not traceable as a whole (Python control flow on values):
            # one pullback per cotangent, eagerly.
            out, pullback = jax.vjp(fn, *primals)
            cots = [c.astype(o.dtype) for c, o in zip(cots, out)]
            k = cots[0].shape[0]
            rows = [pullback([c[r] for c in cots]) for r in range(k)]
            grads = tuple(jnp.stack([row[i] for row in rows]) for i in range(len(primals)))
        return [jnp.conj(g) for g in grads]

    def jvp(self, fn: LeafFunction, primals: list[Any], tangents: list[Any]) -> list[Any]:
        def batched(primals: list[Any], tangents: list[Any]) -> Any:
            tangents = [t.astype(p.dtype) for t, p in zip(tangents, primals)]
            return jax.vmap(lambda *t: jax.jvp(fn, tuple(primals), tuple(t))[1])(*tangents)

        try:
            return list(jax.jit(batched)(list(primals), list(tangents)))
        except TypeError as exc:
            if "custom_vjp" in str(exc) or "forward-mode" in str(exc):
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
