"""What runs in a task: one chunk of evaluations, in this process or another.

:func:`_run_chunk` evaluates a chunk along the vectorised path (falling back
to the loop) or the loop; :class:`_Remote` carries a check's function, pickled
once, to executors in other processes, where :func:`_remote_chunk` unpickles
it (once per check and worker) and runs its chunks.
"""

from __future__ import annotations

import importlib
import sys
import threading
import uuid
from collections import OrderedDict
from typing import Any

from .._errors import ArgumentTypeError
from .._numpy_errors import callers_settings
from ..adapters.base import Adapter, LeafFunction

VECTORIZED = "vectorized"
LOOP = "loop"


def _run_batched(
    adapter: Adapter, batched: LeafFunction, like: list[Any], leaves: list[Any]
) -> list[Any]:
    framework = [adapter.from_core(a, lk) for a, lk in zip(leaves, like)]
    with adapter.no_grad(), callers_settings():
        outputs = batched(*framework)
    return [adapter.to_core(o) for o in outputs]


def _run_loop(adapter: Adapter, fn: LeafFunction, like: list[Any], leaves: list[Any]) -> list[Any]:
    xp = adapter.namespace(leaves[0])
    rows = []
    for r in range(leaves[0].shape[0]):
        framework = [adapter.laid_out_like(a[r, ...], lk) for a, lk in zip(leaves, like)]
        with adapter.no_grad(), callers_settings():
            outputs = fn(*framework)
        rows.append([adapter.to_core(o) for o in outputs])
    return [xp.stack([row[j] for row in rows], axis=0) for j in range(len(rows[0]))]


def _run_chunk(
    adapter: Adapter,
    fn: LeafFunction,
    batched: LeafFunction | None,
    like: list[Any],
    path: str,
    leaves: list[Any],
) -> tuple[list[Any], str, int]:
    """One chunk along ``path``; a vectorised chunk that fails falls back to
    the loop, as in process. Returns (outputs, path taken, evaluations)."""
    k = leaves[0].shape[0]
    if path == VECTORIZED and batched is not None:
        try:
            return _run_batched(adapter, batched, like, leaves), VECTORIZED, k
        except Exception:
            pass
    return _run_loop(adapter, fn, like, leaves), LOOP, k


class _Remote:
    """The function of a check, pickled once, for executors in other processes.

    Each task carries the pickled bytes; a worker unpickles them (and
    vectorises the function) once per check and keeps the result in
    ``_WORKER_CACHE`` under ``token``.
    """

    def __init__(self, token: str, blob: bytes, state: dict[str, Any] | None = None) -> None:
        self.token = token
        self.blob = blob
        #: Framework settings that change what f computes (JAX's x64 mode, torch's
        #: default dtype), set on the worker before f runs there.
        self.state = state or {}

    def __dask_tokenize__(self) -> str:
        # dask hashes task arguments; the token names these bytes already.
        return self.token

    @classmethod
    def of(cls, adapter: Adapter, fn: LeafFunction, like: list[Any], executor: Any) -> _Remote:
        import importlib.util
        import pickle

        # cloudpickle (installed with dask) also sends lambdas, closures and
        # functions defined in __main__ of a script; plain pickle sends
        # module-level functions of importable modules only.
        have_cloudpickle = importlib.util.find_spec("cloudpickle") is not None
        dumps = importlib.import_module("cloudpickle").dumps if have_cloudpickle else pickle.dumps
        try:
            blob = dumps((adapter, fn, like))
        except Exception as exc:
            hint = (
                ""
                if have_cloudpickle
                else " Install cloudpickle (pip install cloudpickle; it comes with dask) to "
                "send lambdas, closures and functions defined in __main__."
            )
            raise ArgumentTypeError(
                f"executor: {type(executor).__name__} runs tasks in other processes, so f, "
                "what it refers to and its arguments must be picklable; pickling failed: "
                f"{type(exc).__name__}: {exc}. Make what f refers to picklable (no open "
                "files, locks or sockets), or pass a concurrent.futures.ThreadPoolExecutor, "
                f"which needs no pickling.{hint}"
            ) from exc
        return cls(uuid.uuid4().hex, blob, _framework_state(adapter))


#: Per worker process: token -> (adapter, fn, batched fn, like), newest last.
_WORKER_CACHE: OrderedDict[str, tuple[Adapter, LeafFunction, Any, list[Any]]] = OrderedDict()
_WORKER_CACHE_SIZE = 4
_WORKER_LOCK = threading.Lock()


def _remote_chunk(remote: _Remote, path: str, leaves: list[Any]) -> tuple[list[Any], str, int]:
    """A task on another process: unpickle (once per check), then one chunk."""
    with _WORKER_LOCK:
        entry = _WORKER_CACHE.get(remote.token)
        if entry is None:
            import pickle

            _apply_framework_state(remote.state)
            try:
                adapter, fn, like = pickle.loads(remote.blob)
            except Exception as exc:
                raise ArgumentTypeError(
                    "executor: a worker could not unpickle f: "
                    f"{type(exc).__name__}: {exc}. The workers need the same packages as "
                    "this process (gradguard, the framework) and must be able to import "
                    "the module that defines f"
                ) from None
            batched = adapter.vectorize(fn) if path == VECTORIZED else None
            entry = (adapter, fn, batched, like)
            _WORKER_CACHE[remote.token] = entry
            while len(_WORKER_CACHE) > _WORKER_CACHE_SIZE:
                _WORKER_CACHE.popitem(last=False)
        else:
            _WORKER_CACHE.move_to_end(remote.token)
    adapter, fn, batched, like = entry
    return _run_chunk(adapter, fn, batched, like, path, leaves)


def _framework_state(adapter: Adapter) -> dict[str, Any]:
    """Global settings of the framework in this process that decide the
    dtypes f computes in; a fresh worker process has the defaults."""
    state: dict[str, Any] = {}
    if adapter.name == "jax" and "jax" in sys.modules:
        state["jax_enable_x64"] = bool(sys.modules["jax"].config.jax_enable_x64)
    if adapter.name == "torch" and "torch" in sys.modules:
        state["torch_default_dtype"] = str(sys.modules["torch"].get_default_dtype())
    return state


def _apply_framework_state(state: dict[str, Any]) -> None:
    if "jax_enable_x64" in state:
        jax = importlib.import_module("jax")
        if bool(jax.config.jax_enable_x64) != state["jax_enable_x64"]:
            jax.config.update("jax_enable_x64", state["jax_enable_x64"])
    if "torch_default_dtype" in state:
        import torch

        wanted = getattr(torch, state["torch_default_dtype"].replace("torch.", ""))
        if torch.get_default_dtype() != wanted:
            torch.set_default_dtype(wanted)
