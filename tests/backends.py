"""The array libraries the tests run over, each behind the same small interface.

A :class:`Backend` makes that library's arrays from lists or NumPy arrays,
turns them back into NumPy arrays, and tells its arrays apart. The
elementwise functions (``exp``, ``sin``, ``cos``, ``sum``) are the
library's own, so a test function written with them runs on that library
inside whatever batching gradguard uses (``vmap``, ``vectorized_map``).

Each library is imported only when its backend is built, so a missing
framework skips its tests instead of breaking collection.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

NAMES = ("numpy", "array_api_strict", "torch", "jax", "tensorflow")


@dataclass(frozen=True)
class Backend:
    name: str
    _asarray: Callable[[Any, str], Any]
    to_numpy: Callable[[Any], np.ndarray]
    is_native: Callable[[Any], bool]
    dtype_name: Callable[[Any], str]
    exp: Callable[[Any], Any]
    sin: Callable[[Any], Any]
    cos: Callable[[Any], Any]
    sum: Callable[[Any], Any]

    def asarray(self, value: Any, dtype: str = "float64") -> Any:
        """``value`` (list or NumPy array) as this library's array of ``dtype``."""
        return self._asarray(np.asarray(value, dtype=dtype), dtype)

    def __repr__(self) -> str:
        return f"Backend({self.name})"


def _numpy() -> Backend:
    return Backend(
        name="numpy",
        _asarray=lambda a, dtype: np.array(a, dtype=dtype),
        to_numpy=lambda x: np.array(x),
        is_native=lambda x: isinstance(x, np.ndarray),
        dtype_name=lambda x: str(x.dtype),
        exp=np.exp,
        sin=np.sin,
        cos=np.cos,
        sum=np.sum,
    )


def _array_api_strict() -> Backend:
    xp = importlib.import_module("array_api_strict")
    array_type = type(xp.asarray(0.0))

    def to_numpy(x: Any) -> np.ndarray:
        return np.array(np.from_dlpack(x))

    return Backend(
        name="array_api_strict",
        _asarray=lambda a, dtype: xp.asarray(a, dtype=getattr(xp, dtype)),
        to_numpy=to_numpy,
        is_native=lambda x: isinstance(x, array_type),
        dtype_name=lambda x: str(x.dtype).rsplit(".", 1)[-1],
        exp=xp.exp,
        sin=xp.sin,
        cos=xp.cos,
        sum=xp.sum,
    )


def _torch() -> Backend:
    torch = importlib.import_module("torch")
    return Backend(
        name="torch",
        _asarray=lambda a, dtype: torch.asarray(a.copy(), dtype=getattr(torch, dtype)),
        to_numpy=lambda x: x.detach().cpu().numpy().copy(),
        is_native=lambda x: isinstance(x, torch.Tensor),
        dtype_name=lambda x: str(x.dtype).rsplit(".", 1)[-1],
        exp=torch.exp,
        sin=torch.sin,
        cos=torch.cos,
        sum=torch.sum,
    )


def _jax() -> Backend:
    jax = importlib.import_module("jax")
    # float64 is what the seed contract evaluates in; JAX needs asking.
    jax.config.update("jax_enable_x64", True)
    jnp = importlib.import_module("jax.numpy")
    return Backend(
        name="jax",
        _asarray=lambda a, dtype: jnp.asarray(a, dtype=getattr(jnp, dtype)),
        to_numpy=lambda x: np.array(x),
        is_native=lambda x: isinstance(x, jax.Array),
        dtype_name=lambda x: str(x.dtype),
        exp=jnp.exp,
        sin=jnp.sin,
        cos=jnp.cos,
        sum=jnp.sum,
    )


def _tensorflow() -> Backend:
    tf = importlib.import_module("tensorflow")
    return Backend(
        name="tensorflow",
        _asarray=lambda a, dtype: tf.constant(a, dtype=getattr(tf, dtype)),
        to_numpy=lambda x: np.array(x.numpy()),
        is_native=lambda x: isinstance(x, tf.Tensor),
        dtype_name=lambda x: x.dtype.name,
        exp=tf.math.exp,
        sin=tf.math.sin,
        cos=tf.math.cos,
        sum=tf.math.reduce_sum,
    )


_BUILDERS: dict[str, Callable[[], Backend]] = {
    "numpy": _numpy,
    "array_api_strict": _array_api_strict,
    "torch": _torch,
    "jax": _jax,
    "tensorflow": _tensorflow,
}


def build(name: str) -> Backend:
    """The backend called ``name``; its library must be importable."""
    return _BUILDERS[name]()
