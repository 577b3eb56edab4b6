"""Pick the adapter for an array by its type.

A framework's adapter is imported only when the framework itself is
already in ``sys.modules``: if the caller has not imported torch, nothing
they pass can be a torch tensor, and importing it ourselves would cost
seconds and hundreds of megabytes (or crash on a broken install). The
answer is cached per type. Adding a framework is one module here plus one
line in ``_REGISTRY``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from .._errors import ArgumentTypeError
from .base import Adapter

__all__ = ["Adapter", "adapter_for", "adapter_of"]

# (framework module that gates it, adapter module, adapter class), most
# specific first: NumPy is last because other libraries subclass nothing
# of it but may pass as array-likes.
_REGISTRY: tuple[tuple[str, str, str], ...] = (
    ("torch", ".torch", "TorchAdapter"),
    ("jax", ".jax", "JaxAdapter"),
    ("tensorflow", ".tensorflow", "TensorflowAdapter"),
    ("numpy", ".numpy", "NumpyAdapter"),
)

_instances: dict[str, Adapter] = {}
_by_type: dict[type, Adapter | None] = {}


def _load(module: str, cls: str) -> Adapter:
    if cls not in _instances:
        mod = importlib.import_module(module, __name__)
        _instances[cls] = getattr(mod, cls)()
    return _instances[cls]


def adapter_for(obj: Any) -> Adapter | None:
    """The adapter owning ``obj``, or None if ``obj`` is no array we know."""
    kind = type(obj)
    if kind in _by_type:
        return _by_type[kind]
    found: Adapter | None = None
    for framework, module, cls in _REGISTRY:
        if framework in sys.modules:
            adapter = _load(module, cls)
            if adapter.owns(obj):
                found = adapter
                break
    if found is None:
        generic = _load(".array_api", "ArrayAPIAdapter")
        if generic.owns(obj):
            found = generic
    _by_type[kind] = found
    return found


def adapter_of(arrays: list[Any], argument: str = "args") -> Adapter:
    """The one adapter for all ``arrays``; refuses a mix of frameworks."""
    adapters = {id(a): a for a in (adapter_for(x) for x in arrays) if a is not None}
    if not adapters:
        raise ArgumentTypeError(
            f"{argument}: no array found; pass NumPy arrays, torch tensors, JAX arrays, "
            "TensorFlow tensors or Array-API arrays"
        )
    if len(adapters) > 1:
        names = sorted(a.name for a in adapters.values())
        raise ArgumentTypeError(
            f"{argument}: arrays from different frameworks in one call ({', '.join(names)}); "
            "convert them to one framework first (gradguard.compare checks one function "
            "written in several frameworks)"
        )
    return next(iter(adapters.values()))
