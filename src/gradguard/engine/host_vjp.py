"""One VJP of ``f`` in one framework, returned on the host as NumPy arrays.

:func:`gradguard.compare` compares these across frameworks, and the error-versus-step
curve (:mod:`gradguard.engine.step_curve`) projects one against finite differences.
The cotangents come in as NumPy arrays (the same for every framework) and go to each
output's device; a user's rule (``grad=`` / ``vjp=``) replaces autodiff when given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _tree
from .._errors import ArgumentError
from .._frameworks import Framework

__all__ = ["as_float64", "host_vjp"]


def as_float64(array: Any) -> np.ndarray:
    a = np.asarray(array)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def host_vjp(
    fw: Framework,
    f: Callable[..., Any],
    rule: dict[str, Any],
    args: tuple[Any, ...],
    selected: set[int],
    out_tree: Any,
    cotangents: dict[str, np.ndarray],
    names: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """This framework's VJP of f at args with the shared cotangents, as
    NumPy arrays keyed by argument path (``x``, ``params['w']``, ...), the
    arguments named ``names`` (default: f's parameter names)."""
    from .problem import _argument_names

    names = names if names is not None else _argument_names(f, len(args))
    leaves, paths, positions, treedef = _tree.flatten_arguments(args, names)
    diff = [
        i
        for i, leaf in enumerate(leaves)
        if positions[i] in selected
        and not isinstance(leaf, (int, float, complex))
        and fw.to_numpy(leaf).dtype.kind in "fc"
    ]
    cots = list(cotangents.values())
    if rule:
        grads = _rule_vjp(fw, f, rule, args, out_tree, cots, len(diff))
    else:
        grads = _autodiff_vjp(leaves, diff, treedef, f, cots)
    return {paths[i]: as_float64(fw.to_numpy(g)) for i, g in zip(diff, grads)}


def _rule_vjp(
    fw: Framework,
    f: Callable[..., Any],
    rule: dict[str, Any],
    args: tuple[Any, ...],
    out_tree: Any,
    cots: list[np.ndarray],
    count: int,
) -> list[Any]:
    if "grad" in rule:
        result = rule["grad"](*args)
    else:
        like = [fw.asarray(c) for c in cots]
        result = rule["vjp"](_tree.unflatten(out_tree, like), *args)
    leaves = _tree.leaves(result)
    if len(leaves) != count:
        raise ArgumentError(
            f"functions[{fw.name!r}]: its rule returned {len(leaves)} gradient(s) for "
            f"{count} differentiated array(s)"
        )
    return leaves


def _autodiff_vjp(
    leaves: list[Any],
    diff: list[int],
    treedef: Any,
    f: Callable[..., Any],
    cots: list[np.ndarray],
) -> list[Any]:
    from ..adapters import adapter_of
    from .problem import _LeafCall

    adapter = adapter_of([leaves[i] for i in diff], "args")
    primals = [leaves[i] for i in diff]
    fn = _LeafCall(f, treedef, list(leaves), diff, adapter)
    outputs = fn(*primals)
    # The cotangents are made on the host: each goes to its output's dtype
    # and device, through the core like every other array.
    batched = [_like_output(adapter, c[None, ...], o) for c, o in zip(cots, outputs)]
    grads = adapter.vjp(fn, primals, batched)
    return [g[0] for g in grads]


def _like_output(adapter: Any, host: np.ndarray, output: Any) -> Any:
    """``host`` as a framework array of ``output``'s dtype, on its device."""
    core = adapter.to_core(output)
    xp = adapter.namespace(core)
    return adapter.from_core(xp.astype(xp.asarray(host), core.dtype), like=output)
