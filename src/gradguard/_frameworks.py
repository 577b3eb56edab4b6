"""The frameworks a person writes one function in, seen from NumPy.

Used by :func:`gradguard.compare`, the pytest fixture, the CLI and the demo:
each needs "this NumPy array as a float64 array of framework X" and back.
The adapters (:mod:`gradguard.adapters`) work the other way round, from a
framework array the caller already has, and are not needed for this.

Nothing here imports a framework until a :class:`Framework` is asked for.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import ArgumentError

__all__ = ["NAMES", "Framework", "framework", "installed"]

#: Every framework gradguard knows, in the order reports list them.
NAMES = ("numpy", "torch", "jax", "tensorflow")


@dataclass(frozen=True)
class Framework:
    """One framework: ``asarray`` a NumPy array into it, ``to_numpy`` back.

    ``module`` is its array module (``numpy``, ``torch``, ``jax.numpy``,
    ``tensorflow``). Floating-point arrays become float64 where the
    framework allows (JAX: inside :meth:`float64`, which :func:`gradguard.compare`
    and the pytest fixture enter for you).
    """

    name: str
    module: Any = field(repr=False)
    _asarray: Callable[[np.ndarray], Any] = field(repr=False)
    _to_numpy: Callable[[Any], np.ndarray] = field(repr=False)
    _float64: Callable[[], Any] = field(repr=False, default=contextlib.nullcontext)

    def asarray(self, value: Any) -> Any:
        """A NumPy array (or list, or scalar) as this framework's array;
        floating point as float64, complex as complex128."""
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(np.float64)
        elif array.dtype.kind == "c":
            array = array.astype(np.complex128)
        return self._asarray(array)

    def to_numpy(self, value: Any) -> np.ndarray:
        """This framework's array (or a Python number) as a NumPy array."""
        return self._to_numpy(value)

    def float64(self) -> Any:
        """A context in which this framework computes in float64 (JAX needs
        ``jax_enable_x64``; the others always can)."""
        return self._float64()

    def __str__(self) -> str:
        return self.name


def installed() -> tuple[str, ...]:
    """The frameworks that can be imported here (without importing them)."""
    modules = {"numpy": "numpy", "torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}
    return tuple(n for n in NAMES if importlib.util.find_spec(modules[n]) is not None)


_cache: dict[str, Framework] = {}


def framework(name: str) -> Framework:
    """The :class:`Framework` called ``name`` (importing it now)."""
    if name not in NAMES:
        raise ArgumentError(
            f"framework: unknown framework {name!r}; gradguard knows {', '.join(NAMES)}"
        )
    if name not in _cache:
        try:
            _cache[name] = _BUILDERS[name]()
        except ImportError as exc:
            raise ArgumentError(
                f"framework: {name} is not installed here ({exc}); pip install {name}"
            ) from None
    return _cache[name]


def _numpy() -> Framework:
    return Framework("numpy", np, lambda a: a.copy(), lambda x: np.array(x))


def _torch() -> Framework:
    torch = importlib.import_module("torch")

    def to_numpy(x: Any) -> np.ndarray:
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().resolve_conj().numpy().copy()
        return np.array(x)

    return Framework("torch", torch, lambda a: torch.asarray(a.copy()), to_numpy)


def _jax() -> Framework:
    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")

    @contextlib.contextmanager
    def float64() -> Iterator[None]:
        if jax.config.jax_enable_x64:
            yield
        else:
            with jax.enable_x64(True):
                yield

    def asarray(a: np.ndarray) -> Any:
        with float64():
            return jnp.asarray(a)

    return Framework("jax", jnp, asarray, lambda x: np.array(x), float64)


def _tensorflow() -> Framework:
    tf = importlib.import_module("tensorflow")

    def to_numpy(x: Any) -> np.ndarray:
        return np.array(x.numpy() if hasattr(x, "numpy") else x)

    return Framework("tensorflow", tf, lambda a: tf.constant(a), to_numpy)


_BUILDERS: dict[str, Callable[[], Framework]] = {
    "numpy": _numpy,
    "torch": _torch,
    "jax": _jax,
    "tensorflow": _tensorflow,
}
