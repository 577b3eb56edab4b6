"""What every framework adapter provides.

An adapter knows one framework: how to tell its arrays apart, how to hand
them to the core (as arrays of an Array API namespace), and how to run its
autodiff. It holds no numerical logic: steps, stencils, tolerances and
verdicts live in :mod:`gradguard.core` and are written once.

Functions handed to an adapter (``fn``) take the differentiated arrays as
positional framework arrays and return a list of framework arrays.
Batched arguments carry a leading batch axis of size ``k``.

Complex numbers: a cotangent ``a + ib`` handed to :meth:`Adapter.vjp` means
dL/d(re) + i dL/d(im), and the result means the same for the inputs (the
convention of PyTorch and TensorFlow). An adapter whose framework uses
another convention (JAX takes and returns the conjugate) converts inside.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._errors import UnsupportedError

__all__ = [
    "Adapter",
    "FreeVariable",
    "GraphFacts",
    "LeafCall",
    "LeafFunction",
    "Parameters",
    "free_arrays",
    "reachable_objects",
    "swapped",
]

LeafFunction = Callable[..., list[Any]]


@runtime_checkable
class LeafCall(Protocol):
    """The engine's ``fn``: ``f`` called with its argument leaves, those at
    ``diff`` replaced by ``fn``'s positional arrays. An adapter may cache
    compiled code on what it shows (the JAX adapter does); anything else it
    treats as an opaque :data:`LeafFunction`. The engine implements it
    (``engine.problem._LeafCall``); adapters never import the engine."""

    f: Callable[..., Any]
    treedef: Any
    leaves: list[Any]
    diff: list[int]

    def __call__(self, *diff_leaves: Any) -> list[Any]: ...

    def replacing(self, leaves: list[Any], diff: list[int]) -> LeafCall:
        """The same call with other fixed ``leaves`` and differentiated positions."""
        ...


@dataclass(frozen=True)
class GraphFacts:
    """What the framework's autodiff says of ``fn`` at a point, beyond its values."""

    #: Floating outputs the autodiff does not differentiate (torch marks
    #: native_layer_norm's mean and rstd so): their positions.
    undifferentiated: tuple[int, ...] = ()
    #: Arrays other than the arguments that the outputs depend on and that
    #: require gradients (a model's parameters), described for people.
    other_leaves: tuple[str, ...] = ()


class Substitute(Protocol):
    """Calls ``f(*args, **kwargs)`` with ``values`` in place of the
    parameters ``targets`` (see :class:`Parameters`)."""

    def __call__(
        self,
        f: Callable[..., Any],
        targets: Sequence[Any],
        values: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any: ...


@dataclass(frozen=True)
class Parameters:
    """Arrays ``f`` reads besides its arguments (a model's weights), and how
    to call ``f`` with other values in their place: the check
    differentiates them like arguments without ever writing to them."""

    #: As the framework names them: ``encoder.0.weight``, ``dense/kernel``.
    names: tuple[str, ...]
    #: The framework arrays themselves (the caller's: never written to).
    arrays: tuple[Any, ...]
    #: Whether each is ``f``'s own (f is the model, a method of it, or takes
    #: it as an argument): checked by default. The others f reaches through
    #: a closure or a global: checked when ``wrt=`` asks.
    own: tuple[bool, ...]
    #: What ``substitute`` needs to find each (opaque to the engine).
    targets: tuple[Any, ...]
    substitute: Substitute

    def narrowed(self, keep: Sequence[int]) -> Parameters:
        """These parameters alone (by position), in this order."""
        return Parameters(
            tuple(self.names[k] for k in keep),
            tuple(self.arrays[k] for k in keep),
            tuple(self.own[k] for k in keep),
            tuple(self.targets[k] for k in keep),
            self.substitute,
        )

    def call(
        self,
        f: Callable[..., Any],
        values: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """``f(*args, **kwargs)`` with ``values`` in place of these parameters."""
        return self.substitute(f, self.targets, values, args, kwargs)


def reachable_objects(
    f: Any, leaves: Sequence[Any], paths: Sequence[str], kwargs: Mapping[str, Any]
) -> list[tuple[str, Any, bool]]:
    """The objects that may hold ``f``'s parameters, as ``(prefix, object,
    own)``: ``f`` itself, the object it is a method of, what a partial
    wraps, the argument leaves (own, prefixed by their paths), and the
    keyword arguments, the objects f's closure and the globals it names
    hold (not own: passed through as they are; prefixed by their names).
    Each object once, the first way it is reached."""
    found: list[tuple[str, Any, bool]] = [("", f, True)]
    if isinstance(f, functools.partial):
        found.append(("", f.func, True))
        f = f.func
    bound = getattr(f, "__self__", None)
    if bound is not None:
        found.append(("", bound, True))
    found += [(f"{path}.", leaf, True) for leaf, path in zip(leaves, paths)]
    found += [(f"{name}.", value, False) for name, value in kwargs.items()]
    code = getattr(f, "__code__", None)
    if code is not None:
        for name, cell in zip(code.co_freevars, getattr(f, "__closure__", None) or ()):
            try:
                found.append((f"{name}.", cell.cell_contents, False))
            except ValueError:  # an empty cell: the variable is not assigned yet
                continue
        spaces = getattr(f, "__globals__", {})
        found += [(f"{name}.", spaces[name], False) for name in code.co_names if name in spaces]
    unique: dict[int, tuple[str, Any, bool]] = {}
    for item in found:
        unique.setdefault(id(item[1]), item)
    return list(unique.values())


@dataclass(frozen=True)
class FreeVariable:
    """A variable f reads by name when it runs, not through its arguments:
    a cell of its closure, or a name among its globals. The check swaps
    another value in while f runs (see :func:`swapped`)."""

    space: Any  # the cell, or the globals dict
    name: str

    def get(self) -> Any:
        if isinstance(self.space, dict):
            return self.space[self.name]
        return self.space.cell_contents

    def set(self, value: Any) -> None:
        if isinstance(self.space, dict):
            self.space[self.name] = value
        else:
            self.space.cell_contents = value


def free_arrays(f: Any, wanted: Callable[[Any], bool]) -> list[tuple[str, Any, FreeVariable]]:
    """The arrays f reads from its closure or its globals for which
    ``wanted`` holds (a tensor requiring grad), with their names."""
    f = f.func if isinstance(f, functools.partial) else f
    code = getattr(f, "__code__", None)
    if code is None:
        return []
    found: list[tuple[str, Any, FreeVariable]] = []
    for name, cell in zip(code.co_freevars, getattr(f, "__closure__", None) or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if wanted(value):
            found.append((name, value, FreeVariable(cell, name)))
    spaces = getattr(f, "__globals__", {})
    for name in code.co_names:
        if name in spaces and wanted(spaces[name]):
            found.append((name, spaces[name], FreeVariable(spaces, name)))
    return found


_SWAP = threading.RLock()


@contextlib.contextmanager
def swapped(variables: Sequence[FreeVariable], values: Sequence[Any]) -> Iterator[None]:
    """``values`` in the variables while the block runs, the old ones back
    after it, whatever happens. One block at a time (threads take turns)."""
    with _SWAP:
        old = [v.get() for v in variables]
        try:
            for variable, value in zip(variables, values):
                variable.set(value)
            yield
        finally:
            for variable, value in zip(variables, old):
                variable.set(value)


class Adapter:
    """Base class: conversion defaults for libraries whose arrays already
    speak the Array API, and no autodiff."""

    #: Short framework name used in reports and options.
    name: ClassVar[str] = ""
    #: Top-level module that must already be in ``sys.modules``.
    module: ClassVar[str] = ""
    #: Whether :meth:`vjp` / :meth:`jvp` exist.
    has_autodiff: ClassVar[bool] = False

    # -- arrays ---------------------------------------------------------
    def owns(self, obj: Any) -> bool:
        """Is ``obj`` an array of this framework?"""
        raise NotImplementedError

    def namespace(self, core_array: Any) -> Any:
        """The Array API namespace of the core-side arrays."""
        import array_api_compat

        return array_api_compat.array_namespace(core_array)

    def to_core(self, array: Any) -> Any:
        """Framework array -> core array (the same object where possible)."""
        return array

    def from_core(self, array: Any, like: Any) -> Any:
        """Core array -> framework array, on the device of ``like``."""
        return array

    def to_numpy(self, core_array: Any) -> Any:
        """Core array -> NumPy array on the host (for reports)."""
        import numpy as np

        try:
            return np.asarray(core_array)
        except (TypeError, RuntimeError, ValueError):
            pass
        try:
            # Asks the producer to copy to the host (DLPack 1.0, NumPy >= 2.1),
            # which arrays on an accelerator need.
            return np.from_dlpack(core_array, device="cpu", copy=True)
        except (TypeError, RuntimeError, ValueError, BufferError):
            pass
        if hasattr(core_array, "get"):  # CuPy
            return np.asarray(core_array.get())
        return np.from_dlpack(core_array)

    def empty(self, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
        """An uninitialised core array for a large, long-lived buffer (the
        stored analytical Jacobian), on the device of the core array ``like``."""
        from array_api_compat import device

        return self.namespace(like).empty(shape, dtype=dtype, device=device(like))

    def float64_available(self, array: Any) -> bool:
        """Can this framework compute in float64 here (JAX without x64 cannot)?"""
        return True

    def asarray_like(self, value: Any, like: Any) -> Any:
        """Turn a Python or NumPy scalar returned by ``f`` into a framework array."""
        xp = self.namespace(self.to_core(like))
        return self.from_core(xp.asarray(value), like)

    def laid_out_like(self, array: Any, like: Any) -> Any:
        """Core array -> a fresh framework array holding its values, laid out
        as the framework array ``like`` (strides, device; ``array``'s own
        dtype): f sees no view into a batch of points, and the layout the
        caller's own array has, as at the setup's call."""
        xp = self.namespace(array)
        return self.from_core(xp.asarray(array, copy=True), like)

    def scatter_into(self, base: Any, mask: Any, positions: Any, values: Any) -> Any:
        """``base`` (in ``values``' dtype) with each entry where ``mask`` is
        True replaced by ``values[positions[entry]]``: how a check puts the
        finite entries it differentiates (``values``, 1-D) back among the
        entries it holds fixed (NaN, inf). Differentiable in ``values`` and
        batchable by the framework's vmap; ``base``, ``mask`` (bool, shaped
        like ``base``) and ``positions`` (int, one per entry of ``base``,
        flat) are fixed framework arrays; ``base`` is never written to."""
        xp = self.namespace(base)
        taken = xp.reshape(xp.take(values, positions, axis=0), base.shape)
        return xp.where(mask, taken, xp.astype(base, values.dtype))

    def hidden_arrays(self, obj: Any) -> int:
        """How many floating arrays ``obj``, an argument leaf that is not an
        array, holds in the framework's own containers (a registered JAX
        pytree class): f sees them, but they are not checked."""
        return 0

    def parameters(
        self,
        f: Any,
        leaves: Sequence[Any],
        paths: Sequence[str],
        kwargs: Mapping[str, Any],
    ) -> Parameters | None:
        """The parameters ``f`` reads besides its arguments (``leaves``, the
        arguments' leaves, named by ``paths``): a torch module's, a Keras
        layer's trainable variables, a JAX pytree's arrays where ``f`` is
        one; None when there are none."""
        return None

    # -- evaluation -----------------------------------------------------
    def vectorize(self, fn: LeafFunction) -> LeafFunction | None:
        """A version of ``fn`` that maps over a leading batch axis, or None
        if the framework has no way to do that."""
        return None

    def no_grad(self) -> Any:
        """Context in which plain evaluations skip autodiff bookkeeping."""
        import contextlib

        return contextlib.nullcontext()

    # -- autodiff -------------------------------------------------------
    def vjp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        cotangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        """Vector-Jacobian products for each of ``k`` cotangents.

        ``cotangents[j]`` is a framework array ``(k, *shape of output j)``;
        returns framework arrays ``(k, *shape of primal i)``. Without
        ``vectorize``, one cotangent after the other (no vmap, no pfor).
        """
        raise UnsupportedError(
            f"{self.name} has no autodiff: pass the analytical derivative as grad=, vjp= "
            "or jvp= to gradguard.check"
        )

    def jvp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        tangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        """Jacobian-vector products for each of ``k`` tangents (batched like :meth:`vjp`)."""
        raise UnsupportedError(
            f"{self.name} has no autodiff: pass the analytical derivative as grad=, vjp= "
            "or jvp= to gradguard.check"
        )

    def graph_facts(self, fn: LeafFunction, primals: list[Any]) -> GraphFacts:
        """Which outputs of ``fn`` at ``primals`` the autodiff leaves out, and
        which other arrays requiring gradients they depend on (see
        :class:`GraphFacts`); one evaluation with autodiff on, where it tells."""
        return GraphFacts()

    def differentiable_vjp(self, fn: LeafFunction, cotangents: list[Any]) -> LeafFunction:
        """The function ``x -> VJP of fn at x with these fixed cotangents``,
        itself differentiable by the framework (for second-order checks)."""
        raise UnsupportedError(f"{self.name} has no autodiff: order=2 needs one")
