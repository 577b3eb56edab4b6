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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from .._errors import UnsupportedError
from .parameters import Parameters

__all__ = ["Adapter", "GraphFacts", "LeafCall", "LeafFunction"]

LeafFunction = Callable[..., list[Any]]


@runtime_checkable
class LeafCall(Protocol):
    """The engine's ``fn``: ``f`` called with its argument leaves, those at
    ``diff`` replaced by ``fn``'s positional arrays. An adapter may cache
    compiled code on what it shows (the JAX adapter does); anything else it
    treats as an opaque :data:`LeafFunction`. The engine implements it
    (``engine.problem.leaf_call._LeafCall``); adapters never import the engine."""

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


class Adapter:
    """Base class: conversion defaults for libraries whose arrays already
    speak the Array API, and no autodiff."""

    #: Short framework name used in reports and options.
    name: ClassVar[str] = ""
    #: Top-level module that must already be in ``sys.modules``.
    module: ClassVar[str] = ""
    #: Whether :meth:`vjp` / :meth:`jvp` exist.
    has_autodiff: ClassVar[bool] = False
    #: Bytes of cotangents and VJP rows per batched VJP that suit this
    #: framework (torch: 43 rows at n = m = 3000; 350 rows took twice as long).
    vjp_batch_bytes: ClassVar[int] = 1 << 21

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

    def pullback(
        self, fn: LeafFunction, primals: list[Any], vectorize: bool = True
    ) -> Callable[[list[Any]], list[Any]]:
        """:meth:`vjp` at fixed ``primals``, as a function of the cotangents:
        for the many batches of one check. A framework that can reuse its
        forward pass across them overrides this."""

        def vjps(cotangents: list[Any]) -> list[Any]:
            return self.vjp(fn, primals, cotangents, vectorize)

        return vjps

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
