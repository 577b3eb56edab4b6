"""Evaluate a function at many points: vectorised when the framework can,
in bounded chunks, in a loop when it cannot, in this process or on any
:class:`concurrent.futures.Executor`.

The core asks for batches of points in its own arrays; this class turns
them into framework arrays, runs the function and hands back core arrays.

Executors
---------
With ``executor=`` the rows of a batch are split into chunks that become
tasks (``executor.submit``). The first chunk of a check runs in this
process, where it decides between the vectorised and the loop path (and
validates the vectorised one); every later chunk runs on the executor along
the same path, with the same code, so the results equal the in-process ones.

- :class:`~concurrent.futures.ThreadPoolExecutor`: the function and the
  arrays are shared, nothing is copied or pickled.
- Any other executor (:class:`~concurrent.futures.ProcessPoolExecutor`,
  ``dask.distributed.Client(...).get_executor()``, loky, mpi4py, ...): each
  task carries the function and the chunk to another process, so the
  function ``f`` given to :func:`gradguard.check`, everything it refers to,
  and its arguments must be picklable. gradguard pickles the function with
  ``cloudpickle`` when it is installed (it comes with ``dask``), which also
  sends functions defined in ``__main__``, lambdas and closures by value;
  without it, with :mod:`pickle`, which sends only functions defined at
  module level. Those are sent by reference: their module must be
  importable on the workers. Open files, locks, sockets and
  the like cannot travel: gradguard raises
  :class:`~gradguard.ArgumentTypeError` naming what failed. The workers
  need the same framework (and gradguard) installed.
"""

from __future__ import annotations

import math
import os
import weakref
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from .._errors import ArgumentError, ArgumentTypeError
from .._numpy_errors import callers_settings
from ..adapters.base import Adapter, LeafFunction
from .progress import Progress
from .tasks import LOOP, VECTORIZED, _Remote, _remote_chunk, _run_batched, _run_chunk

__all__ = ["Evaluator", "Pending"]

#: Fewest rows worth a task of their own on an executor.
MIN_TASK_ROWS = 8


class Evaluator:
    """Callable: ``[(k, *shape_i)] core -> [(k, *out_shape_j)] core``.

    ``like`` are framework arrays fixing the device of the inputs.
    ``chunk_rows`` bounds how many points are evaluated at once.
    ``executor`` runs chunks as tasks (see the module docstring);
    ``progress`` shows a progress bar on stderr for long checks: ``None``
    only when stderr is a terminal, ``True`` always, ``False`` never.
    ``expected`` is the work of a full check, the 100% of the bar: by
    default the points it evaluates (``1 + 4n``); the caller may set it to
    something else and report other work with :meth:`advance`.
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
        if executor is not None and not isinstance(executor, Executor):
            if not callable(getattr(executor, "submit", None)):
                raise ArgumentTypeError(
                    "executor: expected a concurrent.futures.Executor (or an object with "
                    f"submit()), got {type(executor).__name__}"
                )
        self.adapter = adapter
        self.fn = fn
        self.like = like
        self.chunk_rows = max(1, int(chunk_rows))
        self.executor = executor
        self.evaluations = 0
        self.path: str | None = None if vectorize else LOOP
        self._batched = adapter.vectorize(fn) if vectorize else None
        if self._batched is None:
            self.path = LOOP
        self._remote: _Remote | None = None
        self._out_dtypes: list[Any] | None = None
        #: A plain evaluation (point, outputs), by default the first single
        #: one: the first batch carries that point as an extra row, which
        #: validates the vectorised path against it for the price of one
        #: more row, not one more call...
        self.reference: tuple[list[Any], list[Any]] | None = None
        #: ...and says here whether that row came out bitwise the same (None:
        #: no batch carried it).
        self.reference_identical: bool | None = None
        self.points = 0
        self._expected: int | None = None
        self._progress = Progress(progress)
        # Finish (or erase) the bar when the check is over and drops us.
        weakref.finalize(self, self._progress.close)

    @property
    def expected(self) -> int:
        """Points a full check evaluates: the 100% of the progress bar."""
        if self._expected is None:
            self._expected = 1 + 4 * sum(_real_size(self.adapter, a) for a in self.like)
        return self._expected

    @expected.setter
    def expected(self, value: int) -> None:
        self._expected = int(value)

    # -- one point -------------------------------------------------------
    def single(self, leaves: list[Any]) -> list[Any]:
        """One evaluation at one point (core arrays without batch axis), on
        fresh arrays laid out as the caller's (see Adapter.laid_out_like)."""
        framework = [self.adapter.laid_out_like(a, like) for a, like in zip(leaves, self.like)]
        with self.adapter.no_grad(), callers_settings():
            outputs = self.fn(*framework)
        self.evaluations += 1
        result = [self.adapter.to_core(o) for o in outputs]
        if self._out_dtypes is None:
            self._out_dtypes = [o.dtype for o in result]
        if self.reference is None:
            self.reference = (leaves, result)
        return result

    # -- a batch of points -------------------------------------------------
    def __call__(self, leaves: list[Any]) -> list[Any]:
        return self.submit(leaves).result()

    def submit(self, leaves: list[Any]) -> Pending:
        """Start evaluating a batch; ``.result()`` returns what calling the
        evaluator would. With an executor the tasks start now, so that the
        caller can work on an earlier batch while they run (submit batch
        ``i + 1``, then compare batch ``i``); in process the work happens at
        ``.result()``."""
        xp = self.adapter.namespace(leaves[0])
        k = leaves[0].shape[0]
        bounds = self._bounds(k)
        chunks = (
            [leaves] if len(bounds) == 1 else [[a[i:j, ...] for a in leaves] for i, j in bounds]
        )
        done: list[list[Any]] = []
        futures: list[Any] | None = None
        if self.executor is not None:
            if self.path is None and chunks:
                # Decide (and validate) the vectorised path here, once.
                done.append(self._chunk(chunks[0], xp))
                self.advance(chunks[0][0].shape[0])
                chunks = chunks[1:]
            futures = [self._submit(chunk) for chunk in chunks]
        return Pending(self, xp, done, chunks, futures)

    def _bounds(self, k: int) -> list[tuple[int, int]]:
        rows = self.chunk_rows
        if self.executor is not None:
            # One task per worker at least, so that every worker has work.
            per_worker = -(-k // max(1, _workers(self.executor)))
            rows = max(1, min(rows, max(MIN_TASK_ROWS, per_worker)))
        return [(start, min(k, start + rows)) for start in range(0, k, rows)]

    def advance(self, units: int) -> None:
        """Count ``units`` of work done (evaluated points, or other work the
        caller put in :attr:`expected`) and redraw the bar if due."""
        self.points += units
        self._progress.update(self.points, self.expected)

    def _chunk(self, leaves: list[Any], xp: Any) -> list[Any]:
        result = None
        if self.path != LOOP:
            result = self._vectorized(leaves, xp)
        if result is None:
            result = self._loop(leaves, xp)
        if self._out_dtypes is None:
            self._out_dtypes = [o.dtype for o in result]
        return result

    def _check_remote(self, outputs: list[Any]) -> None:
        """A worker must compute what this process computes (same dtypes)."""
        got = [o.dtype for o in outputs]
        if self._out_dtypes is not None and got != self._out_dtypes:
            raise ArgumentError(
                f"executor: a worker returned {', '.join(map(str, got))} where this process "
                f"computes {', '.join(map(str, self._out_dtypes))}; the workers' framework "
                "is set up differently (versions, or settings such as jax_enable_x64 or "
                "torch.set_default_dtype made outside gradguard.check)"
            )

    def _vectorized(self, leaves: list[Any], xp: Any) -> list[Any] | None:
        assert self._batched is not None
        k = leaves[0].shape[0]
        validate = self.path is None
        extra = 0
        if validate:
            # First batch: make sure vectorising does not change the answer.
            # At the point of the first single evaluation, carried as an
            # extra row, when there was one with these dtypes; else at the
            # first row, evaluated once more on its own.
            point, reference = self.reference or ([], [])
            if point and all(p.dtype == a.dtype for p, a in zip(point, leaves)):
                leaves = [xp.concat([p[None, ...], a], axis=0) for p, a in zip(point, leaves)]
                extra = 1
            else:
                reference = self.single([a[0, ...] for a in leaves])
        try:
            result = _run_batched(self.adapter, self._batched, self.like, leaves)
        except Exception:
            # Data-dependent control flow, .item(), in-place updates and
            # custom rules without a batching rule all end up here.
            self.path = LOOP
            return None
        if validate:
            rows = [b[0, ...] for b in result]
            pairs = list(zip(reference, rows))
            shaped = len(reference) == len(rows) and all(
                tuple(r.shape) == tuple(b.shape) and r.dtype == b.dtype for r, b in pairs
            )
            identical = shaped and all(bool(xp.all(r == b)) for r, b in pairs)
            close = identical or (shaped and all(_close(r, b, xp) for r, b in pairs))
            if not close:
                self.path = LOOP
                return None
            self.path = VECTORIZED
            if extra:
                self.reference_identical = identical
            result = [b[extra:, ...] for b in result]
        self.evaluations += k + extra
        return result

    def _loop(self, leaves: list[Any], xp: Any) -> list[Any]:
        k = leaves[0].shape[0]
        rows = [self.single([a[r, ...] for a in leaves]) for r in range(k)]
        return [xp.stack([row[j] for row in rows], axis=0) for j in range(len(rows[0]))]

    # -- executors ---------------------------------------------------------
    def _submit(self, chunk: list[Any]) -> Any:
        assert self.executor is not None
        path = self.path or VECTORIZED
        if isinstance(self.executor, ThreadPoolExecutor):
            # Same process: share the function, copy nothing.
            return self.executor.submit(
                _run_chunk, self.adapter, self.fn, self._batched, self.like, path, chunk
            )
        if self._remote is None:
            self._remote = _Remote.of(self.adapter, self.fn, self.like, self.executor)
        return self.executor.submit(_remote_chunk, self._remote, path, chunk)


class Pending:
    """A batch handed to :meth:`Evaluator.submit`; :meth:`result` waits for it."""

    def __init__(
        self,
        evaluator: Evaluator,
        xp: Any,
        done: list[list[Any]],
        chunks: list[list[Any]],
        futures: list[Any] | None,
    ) -> None:
        self._evaluator = evaluator
        self._xp = xp
        self._parts = done
        self._chunks = chunks
        self._futures = futures
        self._result: list[Any] | None = None

    def result(self) -> list[Any]:
        if self._result is not None:
            return self._result
        ev, xp, parts = self._evaluator, self._xp, self._parts
        if self._futures is None:
            for chunk in self._chunks:
                parts.append(ev._chunk(chunk, xp))
                ev.advance(chunk[0].shape[0])
        else:
            for chunk, future in zip(self._chunks, self._futures):
                outputs, path, count = future.result()
                ev._check_remote(outputs)
                if path == LOOP:
                    ev.path = LOOP
                ev.evaluations += count
                parts.append(outputs)
                ev.advance(chunk[0].shape[0])
        self._chunks, self._futures = [], None
        if len(parts) == 1:
            self._result = parts[0]
        else:
            self._result = [xp.concat([p[j] for p in parts], axis=0) for j in range(len(parts[0]))]
        return self._result


def _workers(executor: Any) -> int:
    """How many tasks the executor runs at once (a guess for unknown kinds)."""
    count = getattr(executor, "_max_workers", None)
    if isinstance(count, int) and count > 0:
        return count
    client = getattr(executor, "_client", None)  # dask.distributed's ClientExecutor
    if client is not None:
        try:
            return max(1, sum(client.nthreads().values()))
        except Exception:
            pass
    return os.cpu_count() or 1


def _real_size(adapter: Adapter, array: Any) -> int:
    size = math.prod(int(s) for s in array.shape)
    try:
        core = adapter.to_core(array)
        xp = adapter.namespace(core)
        if xp.isdtype(core.dtype, "complex floating"):
            return 2 * size
    except Exception:
        pass
    return size


def _close(a: Any, b: Any, xp: Any) -> bool:
    """Equal up to rounding (same dtype and shape)."""
    if not xp.isdtype(a.dtype, ("real floating", "complex floating")):
        return False
    both_nan = xp.isnan(xp.abs(a)) & xp.isnan(xp.abs(b))
    eps = float(xp.finfo(a.dtype).eps)
    scale = xp.max(xp.abs(a)) if math.prod(a.shape) else 0.0
    close = (xp.abs(a - b) <= 64 * eps * (xp.abs(a) + float(scale) + eps)) | both_nan | (a == b)
    return bool(xp.all(close))
