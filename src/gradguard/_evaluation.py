"""Evaluate a function at many points: vectorised when the framework can,
in bounded chunks, in a loop when it cannot.

The core asks for batches of points in its own arrays; this class turns
them into framework arrays, runs the function and hands back core arrays.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from typing import Any

from .adapters.base import Adapter, LeafFunction

__all__ = ["Evaluator"]

VECTORIZED = "vectorized"
LOOP = "loop"


class Evaluator:
    """Callable: ``[(k, *shape_i)] core -> [(k, *out_shape_j)] core``.

    ``like`` are framework arrays fixing the device of the inputs.
    ``chunk_rows`` bounds how many points are evaluated at once.
    """

    def __init__(
        self,
        adapter: Adapter,
        fn: LeafFunction,
        like: list[Any],
        *,
        vectorize: bool = True,
        chunk_rows: int = 1024,
        executor: Executor | None = None,
        progress: bool | None = None,
    ) -> None:
        self.adapter = adapter
        self.fn = fn
        self.like = like
        self.chunk_rows = max(1, int(chunk_rows))
        self.executor = executor  # not used yet: chunks run in this process
        self.progress = progress
        self.evaluations = 0
        self.path: str | None = None if vectorize else LOOP
        self._batched = adapter.vectorize(fn) if vectorize else None
        if self._batched is None:
            self.path = LOOP

    def single(self, leaves: list[Any]) -> list[Any]:
        """One evaluation at one point (core arrays without batch axis)."""
        framework = [self.adapter.from_core(a, like) for a, like in zip(leaves, self.like)]
        with self.adapter.no_grad():
            outputs = self.fn(*framework)
        self.evaluations += 1
        return [self.adapter.to_core(o) for o in outputs]

    def __call__(self, leaves: list[Any]) -> list[Any]:
        xp = self.adapter.namespace(leaves[0])
        k = leaves[0].shape[0]
        parts = []
        for start in range(0, k, self.chunk_rows):
            stop = min(k, start + self.chunk_rows)
            chunk = [a[start:stop, ...] for a in leaves]
            parts.append(self._chunk(chunk, xp))
        if len(parts) == 1:
            return parts[0]
        return [xp.concat([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]

    def _chunk(self, leaves: list[Any], xp: Any) -> list[Any]:
        if self.path != LOOP:
            result = self._vectorized(leaves, xp)
            if result is not None:
                return result
        return self._loop(leaves, xp)

    def _vectorized(self, leaves: list[Any], xp: Any) -> list[Any] | None:
        assert self._batched is not None
        framework = [self.adapter.from_core(a, like) for a, like in zip(leaves, self.like)]
        try:
            with self.adapter.no_grad():
                outputs = self._batched(*framework)
            result = [self.adapter.to_core(o) for o in outputs]
        except Exception:
            # Data-dependent control flow, .item(), in-place updates and
            # custom rules without a batching rule all end up here.
            self.path = LOOP
            return None
        k = leaves[0].shape[0]
        if self.path is None:
            # First batch: make sure vectorising did not change the answer.
            reference = self.single([a[0, ...] for a in leaves])
            same = len(reference) == len(result) and all(
                tuple(r.shape) == tuple(b.shape[1:]) and _close(r, b[0, ...], xp)
                for r, b in zip(reference, result)
            )
            if not same:
                self.path = LOOP
                return None
            self.path = VECTORIZED
        self.evaluations += k
        return result

    def _loop(self, leaves: list[Any], xp: Any) -> list[Any]:
        k = leaves[0].shape[0]
        rows = [self.single([a[r, ...] for a in leaves]) for r in range(k)]
        return [xp.stack([row[j] for row in rows], axis=0) for j in range(len(rows[0]))]


def _close(a: Any, b: Any, xp: Any) -> bool:
    if a.dtype != b.dtype:
        return False
    if not xp.isdtype(a.dtype, ("real floating", "complex floating")):
        return bool(xp.all(a == b))
    both_nan = xp.isnan(xp.abs(a)) & xp.isnan(xp.abs(b))
    eps = float(xp.finfo(a.dtype).eps)
    scale = xp.max(xp.abs(a)) if math.prod(a.shape) else 0.0
    close = (xp.abs(a - b) <= 64 * eps * (xp.abs(a) + float(scale) + eps)) | both_nan | (a == b)
    return bool(xp.all(close))
