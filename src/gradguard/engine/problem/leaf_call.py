"""The check's call of f: f as a function of the differentiated arrays alone.

Every evaluation, VJP and JVP of the engine goes through one :class:`_LeafCall`:
it puts the differentiated arrays back among the other argument leaves (and the
entries held fixed back into their arguments), passes f's keyword arguments and
model parameters, drops an aux output, and moves outputs to the input's device.
It implements :class:`gradguard.adapters.base.LeafCall`, what an adapter may cache on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ... import _tree
from ..._errors import ArgumentTypeError
from ...adapters import Adapter
from ...adapters.parameters import Parameters
from .arrays import _replace
from .held import _Held

__all__ = ["_LeafCall", "_note"]


@dataclass
class _LeafCall:
    """f as a function of the differentiated arrays alone, returning its
    output leaves as framework arrays. A class, not a closure, so that it
    pickles (to process pools) whenever f and the arguments do."""

    f: Callable[..., Any]
    treedef: Any
    leaves: list[Any]
    diff: list[int]
    adapter: Adapter
    #: The positions of the output leaves compared (None: all); the others
    #: are integers or not differentiated by the framework (see build).
    kept: tuple[int, ...] | None = None
    #: Differentiated leaves (by position) whose entries that are not finite
    #: are held fixed: f is called with the finite entries put back.
    held: dict[int, _Held] = field(default_factory=dict)
    #: f's keyword arguments, passed as they are.
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: f returns (output, aux): aux is dropped, untouched.
    has_aux: bool = False
    #: How many leaves are the arguments' (None: all); the leaves after
    #: them are the values of ``parameters``, put in place of f's own.
    arg_leaves: int | None = None
    parameters: Parameters | None = None

    @property
    def __name__(self) -> str:
        # torch.func.vmap names its function on every call, by repr() when it
        # has no name: that would print the arguments, every chunk.
        return str(getattr(self.f, "__name__", type(self.f).__name__))

    def replacing(self, leaves: list[Any], diff: list[int]) -> _LeafCall:
        return replace(self, leaves=leaves, diff=diff)

    def call(self, diff_leaves: Sequence[Any]) -> tuple[list[Any], list[str]]:
        """f's output leaves and their paths (for the setup's call)."""
        outs, out_paths, _ = _tree.flatten(self._outputs(diff_leaves))
        return self._on_device(outs, diff_leaves[0]), out_paths

    def __call__(self, *diff_leaves: Any) -> list[Any]:
        like = diff_leaves[0]
        outs = _tree.leaves(self._outputs(diff_leaves))
        if self.kept is not None:
            outs = [outs[j] for j in self.kept]
        outs = self._on_device(outs, like)
        adapter = self.adapter
        return [o if adapter.owns(o) else adapter.asarray_like(o, like) for o in outs]

    def output_tree(self) -> Any:
        """f's output (without its aux part) at the point's own leaves."""
        return self._call(self.leaves)

    def _outputs(self, diff_leaves: Sequence[Any]) -> Any:
        values = [self._put_back(i, v) for i, v in zip(self.diff, diff_leaves)]
        return self._call(_replace(self.leaves, self.diff, values))

    def _call(self, full: list[Any]) -> Any:
        """f at these leaves (the arguments', then the parameters')."""
        if self.parameters is None:
            out = self.f(*_tree.unflatten(self.treedef, full), **self.kwargs)
        else:
            n = self.arg_leaves
            args = _tree.unflatten(self.treedef, full[:n])
            out = self.parameters.call(self.f, full[n:], args, self.kwargs)
        return _without_aux(out) if self.has_aux else out

    def _put_back(self, i: int, value: Any) -> Any:
        """The argument f receives for differentiated leaf ``i``: ``value``
        itself, or, where entries are held fixed, the argument with
        ``value`` (its finite entries) put back, differentiably."""
        held = self.held.get(i)
        if held is None:
            return value
        if held.finite.size == 0:
            return held.base  # nothing of it is differentiated
        return self.adapter.scatter_into(held.base, held.mask, held.positions, value)

    def _on_device(self, outs: list[Any], like: Any) -> list[Any]:
        # Outputs on another device than the input (f ends in .cpu(), say)
        # move to the input's: the core computes with both on one device.
        # Differentiably (torch's .to), so autodiff still runs f's own rule.
        adapter = self.adapter
        return [adapter.from_core(o, like=like) if adapter.owns(o) else o for o in outs]


def _note(exc: BaseException, text: str) -> None:
    """Say where a user's exception came from, keeping it their exception."""
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(text)


def _without_aux(out: Any) -> Any:
    """The output part of f's ``(output, aux)`` (has_aux=True)."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ArgumentTypeError(
            "f: with has_aux=True, f must return a pair (output, aux); it returned "
            + (
                f"a {type(out).__name__} of length {len(out)}"
                if isinstance(out, (tuple, list))
                else type(out).__name__
            )
        )
    return out[0]
