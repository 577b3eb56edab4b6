"""PyTorch: autograd for reverse mode, forward-mode AD for JVPs,
``torch.func.vmap`` for batches."""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._errors import ArgumentTypeError, UnsupportedError
from .base import Adapter, GraphFacts, LeafFunction
from .parameters import (
    FreeVariable,
    ParameterList,
    Parameters,
    free_arrays,
    reachable_objects,
    swapped,
)

_FORWARD_AD = threading.Lock()


class TorchAdapter(Adapter):
    name = "torch"
    module = "torch"
    has_autodiff = True

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, torch.Tensor)

    def namespace(self, core_array: Any) -> Any:
        import array_api_compat.torch

        return array_api_compat.torch

    def to_core(self, array: Any) -> Any:
        if array.layout != torch.strided:
            raise ArgumentTypeError(
                f"args: {array.layout} tensors are not supported; pass x.to_dense()"
            )
        # Never hand the caller's tensor itself onward: a detached alias
        # cannot write into their autograd graph.
        return array.detach()

    def from_core(self, array: Any, like: Any) -> Any:
        # .to() is a dispatched call even when it has nothing to do.
        device = like.device
        return array if array.device == device else array.to(device=device)

    def to_numpy(self, core_array: Any) -> Any:
        array = core_array.detach().cpu().resolve_conj()
        if array.dtype == torch.bfloat16:  # NumPy has no bfloat16
            array = array.float()
        return array.numpy()

    def empty(self, shape: tuple[int, ...], dtype: Any, like: Any) -> Any:
        if like.device.type != "cpu" or dtype not in (torch.float64, torch.float32):
            return torch.empty(shape, dtype=dtype, device=like.device)
        import numpy as np

        # NumPy asks the kernel for huge pages on large buffers (torch's CPU
        # allocator does not unless THP_MEM_ALLOC_ENABLE is set): first touch
        # of a 72 MB Jacobian then costs 10 ms here instead of 40.
        host = np.empty(shape, dtype=np.float64 if dtype == torch.float64 else np.float32)
        return torch.from_numpy(host)

    def laid_out_like(self, array: Any, like: Any) -> Any:
        # empty_like keeps like's strides when it is dense and not
        # overlapping (a transposed or sliced caller's tensor; pinv's
        # kernels depend on them), and starts at offset 0 of its own storage
        # (torch.as_strided depends on the offset).
        fresh = torch.empty_like(like, dtype=array.dtype, device=like.device)
        return fresh.copy_(array)

    def float64_available(self, array: Any) -> bool:
        return array.device.type != "mps"

    def scatter_into(self, base: Any, mask: Any, positions: Any, values: Any) -> Any:
        # index_select and where: differentiable in both modes, and batched
        # by torch.func.vmap and by is_grads_batched backward passes.
        taken = values.index_select(0, positions).reshape(base.shape)
        return torch.where(mask, taken, base.to(values.dtype))

    def parameters(
        self,
        f: Any,
        leaves: Sequence[Any],
        paths: Sequence[str],
        kwargs: Mapping[str, Any],
    ) -> Parameters | None:
        found = ParameterList()
        modules: list[Any] = []
        for prefix, module, is_own in _modules(f, leaves, paths, kwargs):
            modules.append(module)
            for name, tensor in module.named_parameters():
                if tensor.requires_grad:
                    found.add(prefix + name, tensor, is_own, (len(modules) - 1, name))
        # Tensors requiring grad that f reads by name (a closure's, a global).
        for name, tensor, variable in free_arrays(f, _requires_grad):
            found.add(name, tensor, False, variable)
        return found.parameters(_Reparametrized(tuple(modules)))

    def vectorize(self, fn: LeafFunction) -> LeafFunction:
        # vmap takes a fast path for one tensor out; a list of outputs goes
        # through torch's pytree code, about 30 us a call (a third of the
        # vmap of a cheap f over a probe's few rows).
        def one_or_tuple(*xs: Any) -> Any:
            outputs = fn(*xs)
            return outputs[0] if len(outputs) == 1 else tuple(outputs)

        batched = torch.func.vmap(one_or_tuple)

        def vectorized(*xs: Any) -> list[Any]:
            result = batched(*xs)
            return [result] if isinstance(result, torch.Tensor) else list(result)

        return vectorized

    def no_grad(self) -> Any:
        return torch.no_grad()

    def vjp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        cotangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        return self.pullback(fn, primals, vectorize)(cotangents)

    def pullback(
        self, fn: LeafFunction, primals: list[Any], vectorize: bool = True
    ) -> Callable[[list[Any]], list[Any]]:
        """One forward pass, its graph kept (retain_graph) for every batch of
        cotangents: a forward per batch took a third of the VJP rows' time
        (softmax over rows at n = 10^4, 771 batches)."""
        # A detached alias is a fresh leaf; no copy needed: autograd refuses
        # in-place writes to a leaf that requires grad, and an f that writes
        # into its input was refused at the setup's call (MutationError).
        inputs = [p.detach().requires_grad_(True) for p in primals]
        with torch.enable_grad():
            outputs = fn(*inputs)

        def vjps(cotangents: list[Any]) -> list[Any]:
            return _backward(inputs, outputs, cotangents, vectorize)

        return vjps

    def jvp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        tangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        import torch.autograd.forward_ad as fwad

        k = tangents[0].shape[0]
        rows = []
        for r in range(k):
            # Forward-AD levels are process-wide in torch: one thread at a time.
            with _FORWARD_AD, fwad.dual_level(), warnings.catch_warnings():
                # Forward AD's first use imports decompositions through the
                # deprecated torch.jit.script: torch's warning, not the caller's.
                warnings.filterwarnings(
                    "ignore", message=".*torch.jit.script.*", category=DeprecationWarning
                )
                duals = [fwad.make_dual(p.detach(), t[r]) for p, t in zip(primals, tangents)]
                try:
                    outputs = fn(*duals)
                except RuntimeError as exc:
                    raise UnsupportedError(
                        f"forward-mode AD failed on this function ({exc}); a custom "
                        "torch.autograd.Function needs a jvp staticmethod for direction='fwd'"
                    ) from exc
                rows.append(
                    [
                        torch.zeros_like(o)
                        if fwad.unpack_dual(o).tangent is None
                        else fwad.unpack_dual(o).tangent.detach()
                        for o in outputs
                    ]
                )
        return [torch.stack([row[j] for row in rows]) for j in range(len(rows[0]))]

    def graph_facts(self, fn: LeafFunction, primals: list[Any]) -> GraphFacts:
        inputs = [p.detach().requires_grad_(True) for p in primals]
        try:
            with torch.enable_grad():
                outputs = fn(*inputs)
        except Exception:
            return GraphFacts()  # the VJP itself will say what is wrong
        undifferentiated = tuple(
            j
            for j, o in enumerate(outputs)
            if (o.is_floating_point() or o.is_complex()) and not o.requires_grad
        )
        leaves = _graph_leaves(outputs)
        others = [t for t in leaves if not any(t is x for x in inputs)]
        names = _parameter_names(fn) if others else {}
        return GraphFacts(undifferentiated, tuple(_tensor_name(t, names) for t in others))

    def differentiable_vjp(self, fn: LeafFunction, cotangents: list[Any]) -> LeafFunction:
        def first_derivative(*xs: Any) -> list[Any]:
            with torch.enable_grad():
                # clone(), not detach(): a forward-mode dual keeps its tangent
                # (forward-over-reverse for direction="fwd" at order 2).
                inputs = [x if x.requires_grad else x.clone().requires_grad_(True) for x in xs]
                outputs = fn(*inputs)
                pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
                if not pairs:
                    return [torch.zeros_like(x) for x in xs]
                outs, cots = zip(*pairs)
                grads = torch.autograd.grad(
                    outs, inputs, cots, create_graph=True, allow_unused=True
                )
            return [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]

        return first_derivative


class _OneByOne(Exception):
    """vectorize=False: take the one-cotangent-at-a-time path."""


def _graph_leaves(outputs: list[Any]) -> list[Any]:
    """The tensors requiring grad at the leaves of the outputs' autograd
    graph (AccumulateGrad nodes), each once, in the order first reached."""
    found: list[Any] = []
    seen: set[int] = set()
    stack = []
    for o in outputs:
        if o.grad_fn is not None:
            stack.append(o.grad_fn)
        elif o.requires_grad:
            found.append(o)  # f returned a leaf itself
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        variable = getattr(node, "variable", None)
        if variable is not None:
            if not any(variable is t for t in found):
                found.append(variable)
            continue
        stack.extend(reversed([n for n, _ in node.next_functions]))
    return found


def _parameter_names(fn: Any) -> dict[int, str]:
    """id -> name of the parameters of the nn.Modules f reaches: f itself,
    the module it is a method of, its arguments, its closure and globals."""
    f = getattr(fn, "f", fn)
    leaves = getattr(fn, "leaves", [])
    names: dict[int, str] = {}
    paths = [f"args[{i}]" for i in range(len(leaves))]
    for prefix, module, _ in _modules(f, leaves, paths, getattr(fn, "kwargs", {})):
        for name, tensor in module.named_parameters():
            names.setdefault(id(tensor), prefix + name)
    for name, tensor, _ in free_arrays(f, _requires_grad):
        names.setdefault(id(tensor), name)
    return names


def _modules(
    f: Any, leaves: Sequence[Any], paths: Sequence[str], kwargs: Mapping[str, Any]
) -> list[tuple[str, Any, bool]]:
    """The nn.Modules f reaches (see reachable_objects), f's own first."""
    found = [item for item in reachable_objects(f, leaves, paths, kwargs) if _is_module(item[1])]
    return sorted(found, key=lambda item: not item[2])


def _requires_grad(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor) and obj.requires_grad


def _is_module(obj: Any) -> bool:
    return isinstance(obj, torch.nn.Module)


@dataclass(frozen=True)
class _Reparametrized:
    """f called with other tensors in place of its modules' parameters, by
    torch's own swap (the one torch.func.functional_call uses): batched by
    vmap, differentiable in the tensors put in. The swap changes the module
    while f runs, so calls take turns (threads of an executor)."""

    modules: tuple[Any, ...]
    #: Copies of each module's buffers, made at the first call, which f
    #: then updates in place of the caller's (a BatchNorm's running
    #: statistics in training mode).
    buffers: list[dict[str, Any]] = field(default_factory=list)

    def __call__(
        self,
        f: Callable[..., Any],
        targets: Sequence[tuple[int, str] | FreeVariable],
        values: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        from torch.nn.utils.stateless import _reparametrize_module

        free = [(t, v) for t, v in zip(targets, values) if isinstance(t, FreeVariable)]
        held = [(t, v) for t, v in zip(targets, values) if not isinstance(t, FreeVariable)]
        with _SWAP, contextlib.ExitStack() as stack:
            if not self.buffers:
                self.buffers.extend(
                    {name: b.detach().clone() for name, b in m.named_buffers()}
                    for m in self.modules
                )
            mappings = [dict(buffers) for buffers in self.buffers]
            for (m, name), value in held:
                mappings[m][name] = value
            for module, mapping in zip(self.modules, mappings):
                if mapping:
                    stack.enter_context(_reparametrize_module(module, mapping, tie_weights=True))
            stack.enter_context(swapped([t for t, _ in free], [v for _, v in free]))
            return f(*args, **kwargs)


_SWAP = threading.RLock()


def _tensor_name(tensor: Any, names: dict[int, str]) -> str:
    shape = tuple(int(s) for s in tensor.shape)
    dtype = str(tensor.dtype).replace("torch.", "")
    name = names.get(id(tensor))
    return f"{name} {shape} {dtype}" if name else f"a tensor {shape} {dtype}"


def _backward(
    inputs: list[Any], outputs: list[Any], cotangents: list[Any], vectorize: bool
) -> list[Any]:
    """VJPs of ``k`` cotangents through one retained graph from ``inputs`` to
    ``outputs``: ``(k, *shape of input i)`` each."""
    k = cotangents[0].shape[0] if cotangents else 0
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not pairs:
        return [torch.zeros((k, *p.shape), dtype=p.dtype, device=p.device) for p in inputs]
    outs, cots = zip(*pairs)
    try:
        if not vectorize:
            raise _OneByOne
        grads = torch.autograd.grad(
            outs, inputs, cots, retain_graph=True, allow_unused=True, is_grads_batched=True
        )
    except Exception:
        # Custom Functions without a vmap rule cannot be batched: one
        # backward per cotangent, which is what they were written for.
        rows = [
            torch.autograd.grad(
                outs, inputs, [c[r] for c in cots], retain_graph=True, allow_unused=True
            )
            for r in range(k)
        ]
        stacked: list[Any] = []
        for i in range(len(inputs)):
            column: list[Any] = [row[i] for row in rows]
            stacked.append(None if column[0] is None else torch.stack(column))
        grads = tuple(stacked)
    return [
        torch.zeros((k, *p.shape), dtype=p.dtype, device=p.device) if g is None else g.detach()
        for p, g in zip(inputs, grads)
    ]
