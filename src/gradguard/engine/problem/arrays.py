"""Small array helpers of the check's setup: random arrays, host to device,
copies, and leaves replaced by position."""

from __future__ import annotations

from typing import Any


def _replace(leaves: list[Any], positions: list[int], values: list[Any]) -> list[Any]:
    full = list(leaves)
    for i, v in zip(positions, values):
        full[i] = v
    return full


def _copy(core: Any, xp: Any) -> Any:
    return xp.asarray(core, copy=True)


def _rng(seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed)


def _random_like(core: Any, xp: Any, rng: Any) -> Any:
    """Standard normal entries shaped like ``core`` (complex: both parts)."""
    shape = tuple(core.shape)
    values = rng.standard_normal(shape)
    if xp.isdtype(core.dtype, "complex floating"):
        values = values + 1j * rng.standard_normal(shape)
    return _to_xp(values, xp, core)


def _to_xp(host: Any, xp: Any, like: Any) -> Any:
    """NumPy -> the namespace of ``like`` (same device and dtype)."""
    import numpy as np

    array = xp.asarray(np.asarray(host), device=_device(like))
    return xp.astype(array, like.dtype, copy=False)


def _device(array: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(array)
