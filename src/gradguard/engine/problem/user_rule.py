"""The caller's own derivative rule (``grad=`` / ``vjp=``) as the check's
analytical side, for code without autodiff."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ... import _tree
from ..._errors import ArgumentError, ArgumentTypeError, UnsupportedError
from ...adapters import Adapter
from ...core.layout import FlatLayout
from .held import _Held


def _no_autodiff(adapter: Adapter) -> Callable[[list[Any]], list[Any]]:
    def missing(cotangents: list[Any]) -> list[Any]:
        raise UnsupportedError(
            f"{adapter.name} has no autodiff: pass the analytical derivative as "
            "grad=fn (fn(*args) returns the gradient of a scalar f) or "
            "vjp=fn (fn(cotangent, *args) returns the vector-Jacobian product)"
        )

    return missing


def _user_vjp(
    grad: Any,
    vjp: Any,
    leaf_call: Any,
    positions: list[int],
    selected: set[int],
    xp: Any,
    out_layout: FlatLayout,
) -> Callable[[list[Any]], list[Any]]:
    """The caller's grad/vjp rule as a batched VJP on framework arrays.
    ``leaf_call`` is the check's call of f (engine.problem.leaf_call._LeafCall): the
    rule gets f's arguments and keyword arguments. Outputs left out of the
    comparison (not in ``kept``) get None as their cotangent. Of an argument
    with entries held fixed (see _Held), the rule's gradient is compared on
    the finite entries alone."""
    leaves, diff, adapter = leaf_call.leaves, leaf_call.diff, leaf_call.adapter
    kept: tuple[int, ...] | None = leaf_call.kept
    held: dict[int, _Held] = leaf_call.held
    kwargs = leaf_call.kwargs
    wanted = sorted(selected)
    call_args = _tree.unflatten(leaf_call.treedef, leaves)
    if grad is not None and out_layout.size != 1:
        raise ArgumentError(
            f"grad: f has {out_layout.size} real outputs; grad= needs a real scalar f, "
            "use vjp=fn (fn(cotangent, *args)) instead"
        )

    gather = _RuleGradients(leaves, diff, positions, wanted, held, adapter, xp)

    def rule_vjp(cotangents: list[Any]) -> list[Any]:
        k = cotangents[0].shape[0]
        rows = []
        for r in range(k):
            cot = [c[r, ...] for c in cotangents]
            if grad is not None:
                g = gather(grad(*call_args, **kwargs), "grad")
                scale = cot[0]
                rows.append([gi * xp.reshape(adapter.to_core(scale), ()) for gi in g])
            else:
                treedef = _output_treedef(leaf_call)
                if kept is not None:
                    full: list[Any] = [None] * treedef.num_leaves
                    for j, c in zip(kept, cot):
                        full[j] = c
                    cot = full
                out_tree = _tree.unflatten(treedef, cot)
                rows.append(gather(vjp(out_tree, *call_args, **kwargs), "vjp"))
        return [
            adapter.from_core(xp.stack([row[i] for row in rows], axis=0), like=leaves[diff[i]])
            for i in range(len(diff))
        ]

    return rule_vjp


@dataclass
class _RuleGradients:
    """What a rule returned, as core arrays of the differentiated leaves:
    one entry per selected argument (mirroring its structure), each shaped
    like its argument; refused with the fix otherwise."""

    leaves: list[Any]
    diff: list[int]
    positions: list[int]
    wanted: list[int]
    held: dict[int, _Held]
    adapter: Adapter
    xp: Any

    def __call__(self, result: Any, rule: str) -> list[Any]:
        values = self._differentiated(self._per_argument(result, rule), rule)
        return [self._core(value, i, rule) for value, i in zip(values, self.diff)]

    def _per_argument(self, result: Any, rule: str) -> list[Any]:
        wanted = self.wanted
        per_arg = (
            [result]
            if len(wanted) == 1
            else list(result)
            if isinstance(result, (tuple, list))
            else None
        )
        if per_arg is None or len(per_arg) != len(wanted):
            raise ArgumentError(
                f"{rule}: returned {type(result).__name__}; expected one entry per "
                f"differentiated argument ({len(wanted)}), a tuple when there are several"
            )
        return per_arg

    def _differentiated(self, per_arg: list[Any], rule: str) -> list[Any]:
        """The leaves of the entries that belong to differentiated leaves."""
        values: list[Any] = []
        for p, item in zip(self.wanted, per_arg):
            item_leaves = _tree.leaves(item)
            mine = [i for i in range(len(self.leaves)) if self.positions[i] == p]
            if len(item_leaves) != len(mine):
                raise ArgumentError(
                    f"{rule}: the entry for argument {p} has {len(item_leaves)} leaves, "
                    f"the argument has {len(mine)}; mirror its structure"
                )
            values += [value for i, value in zip(mine, item_leaves) if i in self.diff]
        return values

    def _core(self, value: Any, i: int, rule: str) -> Any:
        """Leaf ``i``'s gradient as a core array (compacted where entries are held)."""
        adapter, target = self.adapter, self.leaves[i]
        if value is None or isinstance(value, (str, bytes)):
            raise ArgumentTypeError(
                f"{rule}: returned {type(value).__name__} for argument {self.positions[i]}; "
                "return an array shaped like that argument"
            )
        if not adapter.owns(value):
            value = adapter.from_core(
                adapter.namespace(adapter.to_core(target)).asarray(value), like=target
            )
        if tuple(value.shape) != tuple(target.shape):
            raise ArgumentError(
                f"{rule}: gradient of shape {tuple(value.shape)} for an argument of "
                f"shape {tuple(target.shape)}; return one derivative per entry"
            )
        core = adapter.to_core(value)
        return self.held[i].compact(core, self.xp) if i in self.held else core


def _output_treedef(leaf_call: Any) -> Any:
    """The structure of f's output (its aux part left out)."""
    _, _, treedef = _tree.flatten(leaf_call.output_tree())
    return treedef
