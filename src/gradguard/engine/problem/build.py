"""What a check differentiates, and how it calls f.

Gathers the arguments and parameters to differentiate (.arguments),
copies them so that f never sees the caller's own, holds entries that are
not finite fixed (.held), chooses the dtypes of the numerical side
(.precision), and wraps the analytical side: the framework's autodiff
through its adapter, or the caller's grad / vjp rule (.user_rule).
Refuses points and outputs that cannot be checked, with the fix
(.outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..._errors import ArgumentError, UnsupportedError
from ...adapters import Adapter
from ...adapters.base import GraphFacts
from ...core.layout import FlatLayout
from .arguments import (
    _Arguments,
    _check_unchanged,
    _note_unchecked,
)
from .arrays import _copy, _random_like, _rng
from .held import _Held, _HeldLayout, _hold_nonfinite
from .leaf_call import _LeafCall, _note
from .outputs import _check_outputs, _differentiable_outputs, _name, _output_arrays
from .precision import (
    _choose_precision,
    _describe,
    _real_dtype,
    _wide_rule_runs,
    _widest,
)
from .user_rule import _no_autodiff, _user_vjp


@dataclass
class _Problem:
    adapter: Adapter
    xp: Any
    fn: Callable[..., list[Any]]
    primals: list[Any]  # framework arrays, the caller's dtypes
    eval_like: list[Any]  # framework arrays in the dtypes the numerical side uses
    in_layout: FlatLayout
    out_layout: FlatLayout
    in_names: list[str]
    out_names: list[str]
    in_dtypes: list[Any]  # core dtypes of the primals
    eval_dtypes: list[Any]
    out_dtypes: list[Any]  # core dtypes of the outputs at the primals
    out_like: list[Any]  # framework outputs at the primals (device, dtype)
    work_dtype: Any
    precision: str
    x0: Any
    analytical_vjp: Callable[[list[Any]], list[Any]]
    user_rule: bool
    eps_analytical: float
    notes: list[str]
    #: f at the point from the setup's first call, core arrays, one per
    #: output, when that call ran in the numerical side's dtypes (else None).
    first_outputs: list[Any] | None
    #: Whether derivatives may be batched by the framework (vmap): the
    #: check's vectorize=, which covers evaluations and derivatives alike.
    vectorize: bool = True
    #: The point in the numerical side's wider dtypes, when they differ from
    #: the caller's and the framework differentiates: the same rule run there
    #: shows how much of the analytical side is rounding (else None).
    wide_primals: list[Any] | None = None
    #: The shapes of the differentiated arguments themselves: a primal is
    #: the 1-D array of its argument's finite entries where some are held
    #: fixed (NaN, inf; see _Held).
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        wrt: Any,
        grad: Any,
        vjp: Any,
        precision: str,
        order: int,
        seed: int,
        vectorize: bool = True,
        kwargs: Mapping[str, Any] | None = None,
        has_aux: bool = False,
    ) -> _Problem:
        # Over 80 lines by its last statement: the keyword constructor of the
        # problem's 25 fields, each named where it is set.
        user_rule = grad is not None or vjp is not None
        kwargs = dict(kwargs or {})
        arguments = _Arguments.gather(f, args, wrt, kwargs)
        a, adapter, xp = arguments, arguments.adapter, arguments.xp
        if user_rule and a.parameters is not None:
            raise ArgumentError(
                "wrt: grad= and vjp= rules give derivatives for the arguments, not for "
                f"parameters ({', '.join(a.parameters.names[:3])}, ...); pass wrt='inputs'"
            )
        notes: list[str] = []
        point = _Point.copied(a, notes)
        leaf_call = _LeafCall(
            f, a.treedef, point.leaves, a.diff, adapter, held=point.held,
            kwargs=kwargs, has_aux=has_aux, arg_leaves=a.arg_leaves,
            parameters=a.parameters,
        )  # fmt: skip
        fn: Callable[..., list[Any]] = leaf_call
        primals = point.primals
        outputs0, out_core, out_paths = _compared_outputs(
            leaf_call, a, point, order, user_rule, notes
        )
        out_names = [_name("out", p) for p in out_paths]
        _check_outputs(out_core, out_names, xp)

        if order == 2:
            fn, outputs0 = _second_order(leaf_call, primals, outputs0, out_core, user_rule, seed)
            out_core = [adapter.to_core(o) for o in outputs0]
            out_names = [f"d/d{a.paths[i]}" for i in a.diff]

        diff_core = point.diff_core
        in_layout = point.layout(a.diff, xp)
        out_layout = FlatLayout.of(out_core, xp)
        in_dtypes = [c.dtype for c in diff_core]

        eval_dtypes, eval_like, precision_text = _choose_precision(
            fn, adapter, xp, diff_core, primals, precision, notes
        )
        work_dtype = _real_dtype(xp, _widest(xp, eval_dtypes))
        x0 = in_layout.flatten_one(
            [xp.astype(c, d) for c, d in zip(diff_core, eval_dtypes)], xp, work_dtype
        )
        out_dtypes = [o.dtype for o in out_core]
        eps_analytical = max(
            float(xp.finfo(_real_dtype(xp, d)).eps) for d in in_dtypes + out_dtypes
        )

        analytical_vjp = _analytical_vjp(
            grad, vjp, fn, leaf_call, a, primals, out_layout, vectorize
        )
        wide_primals = None
        if eval_dtypes != in_dtypes and adapter.has_autodiff and not user_rule:
            wide_primals = _wide_rule_primals(
                adapter, fn, eval_like, eval_dtypes, out_core, outputs0, xp, vectorize, notes
            )

        return cls(
            adapter=adapter,
            xp=xp,
            fn=fn,
            primals=primals,
            eval_like=eval_like,
            in_layout=in_layout,
            out_layout=out_layout,
            in_names=[a.paths[i] for i in a.diff],
            out_names=out_names,
            in_dtypes=in_dtypes,
            eval_dtypes=eval_dtypes,
            out_dtypes=out_dtypes,
            out_like=outputs0,
            work_dtype=work_dtype,
            precision=precision_text,
            x0=x0,
            analytical_vjp=analytical_vjp,
            user_rule=user_rule,
            eps_analytical=eps_analytical,
            notes=notes,
            vectorize=vectorize,
            first_outputs=out_core if eval_dtypes == in_dtypes else None,
            wide_primals=wide_primals,
            in_shapes=point.in_shapes,
        )


@dataclass
class _Point:
    """The point f is called at: copies of the caller's arrays (f never sees
    theirs), and the differentiated ones, their entries that are not finite
    held fixed."""

    leaves: list[Any]
    diff_core: list[Any]
    held: dict[int, _Held]
    primals: list[Any]
    in_shapes: list[tuple[int, ...]]

    @classmethod
    def copied(cls, a: _Arguments, notes: list[str]) -> _Point:
        adapter, xp = a.adapter, a.xp
        diff_core = [a.core_leaves[i] for i in a.diff]
        in_shapes = [tuple(int(s) for s in c.shape) for c in diff_core]
        leaves = list(a.leaves)
        for i in a.arrays:
            leaves[i] = adapter.from_core(_copy(a.core_leaves[i], xp), like=leaves[i])
        # Entries that are not finite (an attention mask's -inf) are held
        # fixed: the check differentiates the finite entries alone.
        held: dict[int, _Held] = {}
        for j, i in enumerate(a.diff):
            found = _hold_nonfinite(diff_core[j], leaves[i], a.paths[i], adapter, xp, notes)
            if found is not None:
                held[i], diff_core[j] = found
        primals = [
            adapter.from_core(diff_core[j], like=leaves[i]) if i in held else leaves[i]
            for j, i in enumerate(a.diff)
        ]
        return cls(leaves, diff_core, held, primals, in_shapes)

    def layout(self, diff: list[int], xp: Any) -> FlatLayout:
        """How the differentiated arrays lie in the flat input vector (the
        entries held fixed left out)."""
        layout = FlatLayout.of(self.diff_core, xp)
        if self.held:
            layout = _HeldLayout(layout, [self.held.get(i) for i in diff])
        return layout


def _first_call(
    leaf_call: _LeafCall, a: _Arguments, point: _Point
) -> tuple[list[Any], list[Any], list[str]]:
    """f at the point: its outputs (framework and core arrays) and their
    paths; refuses an f that writes into its arguments."""
    adapter = a.adapter
    with adapter.no_grad():
        try:
            raw_outputs, out_paths = leaf_call.call(point.primals)
        except Exception as exc:
            _note(exc, "gradguard: f raised this when called at the point being checked")
            raise
    # The caller's own arrays are what the copies must still equal.
    _check_unchanged(a.core_leaves, point.leaves, a.paths, adapter, a.xp)
    outputs0 = _output_arrays(raw_outputs, out_paths, adapter, point.primals[0])
    return outputs0, [adapter.to_core(o) for o in outputs0], out_paths


def _compared_outputs(
    leaf_call: _LeafCall,
    a: _Arguments,
    point: _Point,
    order: int,
    user_rule: bool,
    notes: list[str],
) -> tuple[list[Any], list[Any], list[str]]:
    """f's outputs at the point that the check compares (framework and core
    arrays, paths), noting those left out and the arrays f uses that are
    not checked; ``leaf_call`` then returns the compared ones alone."""
    adapter = a.adapter
    outputs0, out_core, out_paths = _first_call(leaf_call, a, point)
    facts = GraphFacts()
    if adapter.has_autodiff and order == 1:
        facts = adapter.graph_facts(leaf_call, point.primals)
    kept = _differentiable_outputs(
        out_core, out_paths, a.xp, [] if user_rule else list(facts.undifferentiated), notes
    )
    if len(kept) < len(out_core):
        leaf_call.kept = tuple(kept)
        outputs0 = [outputs0[j] for j in kept]
        out_core = [out_core[j] for j in kept]
        out_paths = [out_paths[j] for j in kept]
    _note_unchecked(facts.other_leaves, a, notes)
    return outputs0, out_core, out_paths


def _analytical_vjp(
    grad: Any,
    vjp: Any,
    fn: Callable[..., list[Any]],
    leaf_call: _LeafCall,
    a: _Arguments,
    primals: list[Any],
    out_layout: FlatLayout,
    vectorize: bool,
) -> Callable[[list[Any]], list[Any]]:
    """The analytical side: the caller's rule, or the framework's VJP of ``fn``."""
    adapter = a.adapter
    if grad is not None or vjp is not None:
        return _user_vjp(grad, vjp, leaf_call, a.positions, a.selected, a.xp, out_layout)
    if not adapter.has_autodiff:
        return _no_autodiff(adapter)

    pullbacks: list[Callable[[list[Any]], list[Any]]] = []

    def analytical_vjp(cotangents: list[Any]) -> list[Any]:
        # The pullback is made at the first VJP, inside the caller's settings
        # and the error handling every VJP gets (see Analytical).
        if not pullbacks:
            pullbacks.append(adapter.pullback(fn, primals, vectorize=vectorize))
        return pullbacks[0](cotangents)

    return analytical_vjp


def _second_order(
    leaf_call: _LeafCall,
    primals: list[Any],
    outputs0: list[Any],
    out_core: list[Any],
    user_rule: bool,
    seed: int,
) -> tuple[Callable[..., list[Any]], list[Any]]:
    """For order=2: the first derivative along fixed random cotangents, as
    the function to check, and its value at the point."""
    adapter = leaf_call.adapter
    if user_rule:
        raise ArgumentError("order: order=2 needs the framework's autodiff, not grad=/vjp=")
    if not adapter.has_autodiff:
        raise UnsupportedError(f"order=2 needs autodiff, which {adapter.name} lacks")
    xp = adapter.namespace(out_core[0])
    rng = _rng(seed + 7919)
    cots = [
        adapter.from_core(_random_like(o, xp, rng), like=out_fw)
        for o, out_fw in zip(out_core, outputs0)
    ]
    fn = adapter.differentiable_vjp(leaf_call, cots)
    return fn, fn(*primals)


def _wide_rule_primals(
    adapter: Adapter,
    fn: Callable[..., list[Any]],
    eval_like: list[Any],
    eval_dtypes: list[Any],
    out_core: list[Any],
    outputs0: list[Any],
    xp: Any,
    vectorize: bool,
    notes: list[str],
) -> list[Any] | None:
    """The primals to rerun the rule at in the numerical side's wider dtype
    (to measure its rounding), or None, with a note, where it does not run there."""
    if _wide_rule_runs(adapter, fn, eval_like, out_core, outputs0, xp, vectorize):
        return eval_like
    notes.append(
        f"the derivative rule fails in {_describe(eval_dtypes)} (no kernel for it "
        "here), so its rounding was estimated from the input dtypes alone"
    )
    return None


class WrongGradientShape(Exception):
    """The derivative rule returned a gradient shaped unlike its argument: a
    wrong gradient, which the check reports as ``fail``."""

    def __init__(self, argument: str, got: tuple[int, ...], expected: tuple[int, ...]):
        super().__init__(argument, got, expected)
        self.argument = argument
        self.got = got
        self.expected = expected

    def diagnosis(self) -> str:
        return (
            f"{self.argument}: the derivative rule returns a gradient of shape {self.got} "
            f"for an argument of shape {self.expected}: the backward must return one "
            "derivative per entry of the argument"
        )
