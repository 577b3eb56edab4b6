"""What a check differentiates, and how it calls f.

Gathers the arguments and parameters to differentiate (engine.arguments),
copies them so that f never sees the caller's own, holds entries that are
not finite fixed (engine.held), chooses the dtypes of the numerical side
(engine.precision), and wraps the analytical side: the framework's autodiff
through its adapter, or the caller's grad / vjp rule (engine.user_rule).
Refuses points and outputs that cannot be checked, with the fix
(engine.outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import _tree
from .._errors import ArgumentError, ArgumentTypeError, UnsupportedError
from ..adapters import Adapter
from ..adapters.base import GraphFacts
from ..adapters.parameters import Parameters
from ..core.layout import FlatLayout
from .arguments import _argument_names as _argument_names
from .arguments import _Arguments, _check_unchanged, _note_unchecked
from .arguments import _wrt_positions as _wrt_positions
from .arrays import _copy, _random_like, _replace, _rng
from .arrays import _device as _device
from .arrays import _to_xp as _to_xp
from .held import _Held, _HeldLayout, _hold_nonfinite
from .outputs import _check_outputs, _differentiable_outputs, _name, _output_arrays
from .precision import _choose_precision, _real_dtype, _wide_rule_runs, _widest
from .precision import _describe as _describe
from .precision import _wide_dtype as _wide_dtype
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
        in_layout = FlatLayout.of(diff_core, xp)
        if point.held:
            in_layout = _HeldLayout(in_layout, [point.held.get(i) for i in a.diff])
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
            wide_primals = eval_like
            if not _wide_rule_runs(adapter, fn, eval_like, out_core, outputs0, xp, vectorize):
                wide_primals = None
                notes.append(
                    f"the derivative rule fails in {_describe(eval_dtypes)} (no kernel for it "
                    "here), so its rounding was estimated from the input dtypes alone"
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

    def analytical_vjp(cotangents: list[Any]) -> list[Any]:
        return adapter.vjp(fn, primals, cotangents, vectorize=vectorize)

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
