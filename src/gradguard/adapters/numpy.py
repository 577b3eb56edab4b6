"""NumPy: conversion only; it has no autodiff."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Adapter


class NumpyAdapter(Adapter):
    name = "numpy"
    module = "numpy"

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, (np.ndarray, np.generic))

    def namespace(self, core_array: Any) -> Any:
        import array_api_compat.numpy

        return array_api_compat.numpy

    def to_core(self, array: Any) -> Any:
        return np.asarray(array)

    def laid_out_like(self, array: Any, like: Any) -> Any:
        if not isinstance(like, np.ndarray):
            return np.array(array)
        # empty_like keeps like's memory order (C, Fortran or transposed).
        fresh = np.empty_like(like, dtype=np.asarray(array).dtype)
        fresh[...] = array
        return fresh
