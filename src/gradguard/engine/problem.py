"""What a check differentiates, and how it calls f.

Flattens the arguments (pytrees), picks the arrays to differentiate, copies
them so that f never sees the caller's own, chooses the dtypes of the
numerical side (float64 when f accepts it), and wraps the analytical side:
the framework's autodiff through its adapter, or the caller's grad / vjp
rule. Refuses points and outputs that cannot be checked, with the fix.
"""

from __future__ import annotations

import inspect
import math
import numbers
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import _tree
from .._errors import (
    ArgumentError,
    ArgumentTypeError,
    MutationError,
    UnsupportedError,
)
from ..adapters import Adapter, adapter_for, adapter_of
from ..adapters.base import GraphFacts
from ..core.layout import FlatLayout
from ..core.norms import all_finite
from .names import named_like_forward

#: Unchecked arrays named in a note, at most.
UNCHECKED_SHOWN = 8


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
    ) -> _Problem:
        if not args:
            raise ArgumentError("args: pass the point to check at, e.g. check(f, x)")
        names = _argument_names(f, len(args))
        leaves, paths, positions, treedef = _tree.flatten_arguments(args, names)
        arrays = [i for i, leaf in enumerate(leaves) if adapter_for(leaf) is not None]
        adapter = adapter_of([leaves[i] for i in arrays], "args")
        selected = _wrt_positions(wrt, len(args))
        core_leaves = {i: adapter.to_core(leaves[i]) for i in arrays}
        xp = adapter.namespace(next(iter(core_leaves.values())))
        diff = [
            i
            for i in arrays
            if positions[i] in selected
            and xp.isdtype(core_leaves[i].dtype, ("real floating", "complex floating"))
        ]
        if not diff:
            raise ArgumentTypeError(
                "args: no floating-point array to differentiate"
                + (f" among the arguments wrt={wrt!r} selects" if wrt is not None else "")
                + "; pass float arrays (integers are not differentiable)"
            )
        diff_core = [core_leaves[i] for i in diff]
        in_shapes = [tuple(int(s) for s in c.shape) for c in diff_core]
        # f only ever sees copies: the caller's arrays cannot change, whatever f does.
        leaves = list(leaves)
        for i in arrays:
            leaves[i] = adapter.from_core(_copy(core_leaves[i], xp), like=leaves[i])
        notes: list[str] = []
        # Entries that are not finite (an attention mask's -inf) are held
        # fixed: the check differentiates the finite entries alone.
        held: dict[int, _Held] = {}
        for j, i in enumerate(diff):
            found = _hold_nonfinite(diff_core[j], leaves[i], paths[i], adapter, xp, notes)
            if found is not None:
                held[i], diff_core[j] = found
        primals = [
            adapter.from_core(diff_core[j], like=leaves[i]) if i in held else leaves[i]
            for j, i in enumerate(diff)
        ]

        leaf_call = _LeafCall(f, treedef, leaves, diff, adapter, held=held)
        call = leaf_call.call
        fn: Callable[..., list[Any]] = leaf_call

        with adapter.no_grad():
            try:
                raw_outputs, out_paths = call(primals)
            except Exception as exc:
                _note(exc, "gradguard: f raised this when called at the point being checked")
                raise
        # The caller's own arrays are what the copies must still equal.
        _check_unchanged(core_leaves, leaves, paths, adapter, xp)
        outputs0 = _output_arrays(raw_outputs, out_paths, adapter, primals[0])
        out_core = [adapter.to_core(o) for o in outputs0]
        user_rule = grad is not None or vjp is not None
        facts = GraphFacts()
        if adapter.has_autodiff and order == 1:
            facts = adapter.graph_facts(fn, primals)
        kept = _differentiable_outputs(
            out_core, out_paths, xp, [] if user_rule else list(facts.undifferentiated), notes
        )
        if len(kept) < len(out_core):
            leaf_call.kept = tuple(kept)
            outputs0 = [outputs0[j] for j in kept]
            out_core = [out_core[j] for j in kept]
            out_paths = [out_paths[j] for j in kept]
        _note_unchecked(facts.other_leaves, leaves, paths, arrays, adapter, notes)
        out_names = [_name("out", p) for p in out_paths]
        _check_outputs(out_core, out_names, xp)

        base_fn = fn
        if order == 2:
            if user_rule:
                raise ArgumentError("order: order=2 needs the framework's autodiff, not grad=/vjp=")
            if not adapter.has_autodiff:
                raise UnsupportedError(f"order=2 needs autodiff, which {adapter.name} lacks")
            rng = _rng(seed + 7919)
            cots = [
                adapter.from_core(_random_like(o, xp, rng), like=out_fw)
                for o, out_fw in zip(out_core, outputs0)
            ]
            fn = adapter.differentiable_vjp(base_fn, cots)
            outputs0 = fn(*primals)
            out_core = [adapter.to_core(o) for o in outputs0]
            out_names = [f"d/d{paths[i]}" for i in diff]

        in_layout = FlatLayout.of(diff_core, xp)
        if held:
            in_layout = _HeldLayout(in_layout, [held.get(i) for i in diff])
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

        if user_rule:
            analytical_vjp = _user_vjp(
                grad,
                vjp,
                f,
                args,
                treedef,
                leaves,
                diff,
                positions,
                selected,
                adapter,
                xp,
                out_layout,
                outputs0,
                leaf_call.kept,
                held,
            )
        elif adapter.has_autodiff:

            def analytical_vjp(cotangents: list[Any]) -> list[Any]:
                return adapter.vjp(fn, primals, cotangents, vectorize=vectorize)

        else:
            analytical_vjp = _no_autodiff(adapter)

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
            in_names=[paths[i] for i in diff],
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
            in_shapes=in_shapes,
        )


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

    def _outputs(self, diff_leaves: Sequence[Any]) -> Any:
        values = [self._put_back(i, v) for i, v in zip(self.diff, diff_leaves)]
        full = _replace(self.leaves, self.diff, values)
        return self.f(*_tree.unflatten(self.treedef, full))

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


@dataclass(frozen=True)
class _Held:
    """A differentiated argument with entries that are not finite (NaN,
    ±inf: an attention mask's -inf). Those are held fixed; the check
    differentiates the 1-D array of the finite entries, which the leaf call
    puts back into the argument (``Adapter.scatter_into``)."""

    #: The argument (the check's copy, held entries and all), framework array.
    base: Any
    #: Framework bool array shaped like ``base``: True where finite.
    mask: Any
    #: Framework int array, one per entry of ``base`` (flat): its place among
    #: the finite entries (0 where held).
    positions: Any
    #: NumPy: the flat index in the argument of each finite entry, in order.
    finite: Any
    #: The same, as a core array (to take the finite entries of a gradient).
    finite_core: Any
    shape: tuple[int, ...]

    def compact(self, core: Any, xp: Any) -> Any:
        """The finite entries' part of ``core``, an array shaped like the argument."""
        return xp.take(xp.reshape(core, (-1,)), self.finite_core, axis=0)


def _hold_nonfinite(
    core: Any, leaf: Any, name: str, adapter: Adapter, xp: Any, notes: list[str]
) -> tuple[_Held, Any] | None:
    """For an argument with entries that are not finite: how they are held
    fixed, and the 1-D core array of its finite entries, with a note that
    says so; None when every entry is finite."""
    if all_finite(core, xp):
        return None
    import numpy as np

    host = np.asarray(adapter.to_numpy(core)).reshape(-1)
    is_finite = np.isfinite(host)
    finite = np.flatnonzero(is_finite)
    positions = np.zeros(host.size, dtype=np.int32)
    positions[finite] = np.arange(finite.size, dtype=np.int32)
    device = _device(core)
    finite_core = xp.asarray(finite, device=device)
    held = _Held(
        base=leaf,
        mask=adapter.from_core(
            xp.asarray(is_finite.reshape(tuple(core.shape)), device=device), like=leaf
        ),
        positions=adapter.from_core(xp.asarray(positions, device=device), like=leaf),
        finite=finite,
        finite_core=finite_core,
        shape=tuple(int(s) for s in core.shape),
    )
    count = host.size - finite.size
    entries = "1 entry that is not finite" if count == 1 else f"{count} entries that are not finite"
    fixed = (
        "is held fixed; its derivative is not compared"
        if count == 1
        else "are held fixed; their derivatives are not compared"
    )
    notes.append(f"{name}: {entries} ({_nonfinite_kinds(host)}) {fixed}")
    return held, held.compact(core, xp)


def _nonfinite_kinds(host: Any) -> str:
    """Which of NaN, inf and -inf a NumPy array holds (in either part)."""
    import numpy as np

    parts = [host.real, host.imag] if np.iscomplexobj(host) else [host]
    kinds = [
        kind
        for kind, test in (("NaN", np.isnan), ("inf", np.isposinf), ("-inf", np.isneginf))
        if any(bool(test(p).any()) for p in parts)
    ]
    return ", ".join(kinds)


class _HeldLayout(FlatLayout):
    """The layout of the differentiated arrays where some are the finite
    entries of their argument alone (see _Held): ``owner`` names an entry by
    its index in the argument itself, as the caller knows it."""

    def __init__(self, layout: FlatLayout, held: list[_Held | None]) -> None:
        slots = layout.slots
        super().__init__([s.shape for s in slots], [s.is_complex for s in slots])
        self.held = held

    def owner(self, coordinate: int) -> tuple[int, tuple[int, ...], str]:
        slot, index, part = super().owner(coordinate)
        held = self.held[slot]
        if held is None:
            return slot, index, part
        return slot, _unravel(int(held.finite[index[0]]), held.shape), part


def _unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    import numpy as np

    return tuple(int(i) for i in np.unravel_index(flat_index, shape)) if shape else ()


def _check_unchanged(
    originals: dict[int, Any], leaves: list[Any], paths: list[str], adapter: Adapter, xp: Any
) -> None:
    """f must not write into its arguments: the check's points would move under it.
    ``originals`` are the caller's arrays (core), which f never sees."""
    for i, before in originals.items():
        after = adapter.to_core(leaves[i])
        same = tuple(after.shape) == tuple(before.shape) and (
            bool(xp.all(after == before))
            or (  # NaN != NaN: compare again with NaNs in the same places as equal
                xp.isdtype(before.dtype, ("real floating", "complex floating"))
                and bool(
                    xp.all((after == before) | (xp.isnan(xp.abs(after)) & xp.isnan(xp.abs(before))))
                )
            )
        )
        if not same:
            raise MutationError(
                f"f: modifies its argument {paths[i]} in place; gradguard evaluates f at "
                "many points and cannot check a function that changes them (your own arrays "
                "are untouched: f was given copies). Work on a copy inside f (x = x.clone(), "
                "x.copy()) or use out-of-place operations"
            )


def _check_outputs(outputs: list[Any], names: list[str], xp: Any) -> None:
    """f must be finite at x (empty outputs are: nothing to compare)."""
    for o, name in zip(outputs, names):
        if not all_finite(o, xp):
            raise ArgumentError(
                f"f: returned NaN or inf in {name} at the point itself; finite differences "
                "need f finite at x: check at another x"
            )


def _wide_rule_runs(
    adapter: Adapter,
    fn: Callable[..., list[Any]],
    wide: list[Any],
    out_core: list[Any],
    outputs0: list[Any],
    xp: Any,
    vectorize: bool,
) -> bool:
    """Whether the framework's VJP runs at the numerical side's wider dtypes
    (TensorFlow has no float64 CPU kernel for a dilated conv2d's backward):
    one VJP with a zero cotangent."""
    cotangents = [
        adapter.from_core(
            xp.zeros((1, *o.shape), dtype=_wide_dtype(xp, o.dtype), device=_device(o)), like=fw
        )
        for o, fw in zip(out_core, outputs0)
    ]
    try:
        adapter.vjp(fn, wide, cotangents, vectorize=vectorize)
    except Exception:
        return False
    return True


def _differentiable_outputs(
    outputs: list[Any],
    paths: list[str],
    xp: Any,
    undifferentiated: list[int],
    notes: list[str],
) -> list[int]:
    """The positions of the outputs to compare, noting the others: integer
    and bool outputs (indices, pivots, masks), and floating outputs the
    framework does not differentiate while it does others (torch's
    native_layer_norm's mean and rstd). As gradcheck: when no floating
    output is differentiated, all are compared (their derivative is then 0:
    a detached f is caught)."""
    floating = [
        j
        for j, o in enumerate(outputs)
        if xp.isdtype(o.dtype, ("real floating", "complex floating"))
    ]
    numeric = ("integral", "bool")
    integers = [j for j, o in enumerate(outputs) if xp.isdtype(o.dtype, numeric)]
    others = [j for j in range(len(outputs)) if j not in floating and j not in integers]
    if others:
        j = others[0]
        raise ArgumentTypeError(
            f"f: output {_name('out', paths[j])} has dtype {outputs[j].dtype}; "
            "every output must be a numeric array or scalar"
        )
    skipped = [j for j in floating if j in undifferentiated]
    if len(skipped) == len(floating):
        skipped = []
    if integers:
        described = ", ".join(
            f"{_name('out', paths[j])} ({_describe([outputs[j].dtype])})" for j in integers
        )
        notes.append(f"not compared: {described}; integer and bool outputs have no derivative")
    if skipped:
        described = ", ".join(_name("out", paths[j]) for j in skipped)
        notes.append(
            f"not compared: {described}; the framework does not differentiate "
            "these outputs (they do not require grad), as gradcheck leaves them out"
        )
    return [j for j in floating if j not in skipped]


def _note_unchecked(
    other_leaves: tuple[str, ...],
    leaves: list[Any],
    paths: list[str],
    arrays: list[int],
    adapter: Adapter,
    notes: list[str],
) -> None:
    """Say which arrays f uses that require gradients and are not checked:
    those the autodiff reaches besides the arguments (a model's parameters),
    and the floating arrays inside arguments that are containers gradguard
    passes through whole (a registered JAX pytree class)."""
    if other_leaves:
        shown = ", ".join(other_leaves[:UNCHECKED_SHOWN])
        more = len(other_leaves) - UNCHECKED_SHOWN
        if more > 0:
            shown += f" and {more} more"
        notes.append(
            f"not checked: f uses {len(other_leaves)} other array(s) that require gradients "
            f"({shown}); only derivatives with respect to the arguments are checked: pass "
            "them as arguments to check theirs"
        )
    for i, leaf in enumerate(leaves):
        if i in arrays or leaf is None:
            continue
        try:
            hidden = adapter.hidden_arrays(leaf)
        except Exception:
            continue
        if hidden:
            notes.append(
                f"not checked: {paths[i]} ({type(leaf).__name__}) holds {hidden} floating "
                "array(s) that f received as they are; gradguard differentiates arrays in "
                "tuples, lists, dicts and namedtuples only: pass them in one of those to "
                "check them"
            )


def _argument_names(f: Any, count: int) -> list[str]:
    f = named_like_forward(f)  # Scale.apply(weight, bias): forward's names
    names = [f"args[{p}]" for p in range(count)]
    code = getattr(f, "__code__", None)
    if (
        isinstance(f, types.FunctionType)
        and code is not None
        and not hasattr(f, "__wrapped__")
        and not hasattr(f, "__signature__")
    ):
        # A plain function: its positional parameters come first in its code
        # object. Building a Signature costs ten times as much.
        for p in range(min(count, code.co_argcount)):
            names[p] = code.co_varnames[p]
        return names
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return names
    for p, param in enumerate(params[:count]):
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names[p] = param.name
        else:
            break
    return names


def _wrt_positions(wrt: Any, count: int) -> set[int]:
    if wrt is None:
        return set(range(count))
    items = [wrt] if isinstance(wrt, numbers.Integral) and not isinstance(wrt, bool) else wrt
    try:
        positions = list(items)
    except TypeError:
        raise ArgumentTypeError(
            f"wrt: expected an argument index or a tuple of them, got {wrt!r}"
        ) from None
    indices = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, numbers.Integral):
            raise ArgumentTypeError(f"wrt: argument indices must be integers, got {p!r}")
        if not -count <= int(p) < count:
            raise ArgumentError(
                f"wrt: index {p} is out of range for {count} argument(s); use 0 .. {count - 1} "
                "(or negative from the end)"
            )
        indices.append(int(p) % count)
    return set(indices)


def _name(prefix: str, path: str) -> str:
    return path if path.startswith(prefix) else f"{prefix}{path}" if path else prefix


def _replace(leaves: list[Any], positions: list[int], values: list[Any]) -> list[Any]:
    full = list(leaves)
    for i, v in zip(positions, values):
        full[i] = v
    return full


def _copy(core: Any, xp: Any) -> Any:
    return xp.asarray(core, copy=True)


def _output_arrays(outs: list[Any], paths: list[str], adapter: Adapter, like: Any) -> list[Any]:
    """f's output leaves as framework arrays; refuses what cannot be one."""
    if not outs:
        raise ArgumentTypeError("f: returned an empty container; it must return a float array")
    arrays = []
    for out, path in zip(outs, paths):
        if adapter.owns(out):
            arrays.append(out)
        elif isinstance(out, numbers.Number) and not isinstance(out, bool):
            arrays.append(adapter.asarray_like(out, like))
        else:
            raise ArgumentTypeError(
                f"f: output {_name('out', path)} is {type(out).__name__}; f must return "
                f"{adapter.name} arrays or floats (or containers of them)"
            )
    return arrays


def _widest(xp: Any, dtypes: list[Any]) -> Any:
    return xp.result_type(*dtypes) if len(dtypes) > 1 else dtypes[0]


def _real_dtype(xp: Any, dtype: Any) -> Any:
    if xp.isdtype(dtype, "complex floating"):
        return xp.float64 if dtype == xp.complex128 else xp.float32
    return dtype


def _wide_dtype(xp: Any, dtype: Any) -> Any:
    return xp.complex128 if xp.isdtype(dtype, "complex floating") else xp.float64


def _choose_precision(
    fn: Callable[..., list[Any]],
    adapter: Adapter,
    xp: Any,
    diff_core: list[Any],
    primals: list[Any],
    precision: str,
    notes: list[str],
) -> tuple[list[Any], list[Any], str]:
    """Dtypes for the numerical side: float64 if f accepts it, else float32
    for inputs narrower than that, else the inputs' own."""
    native = [c.dtype for c in diff_core]
    ladder = [(xp.float64, xp.complex128)]
    if precision == "native":
        ladder = []
    elif precision == "auto":
        ladder.append((xp.float32, xp.complex64))
    reasons: list[str] = []
    for real, complex_ in ladder:
        wanted = [complex_ if xp.isdtype(d, "complex floating") else real for d in native]
        if wanted == native:
            if reasons:
                notes.append(f"numerical side in {_describe(native)} because " + "; ".join(reasons))
            return native, primals, _describe(native)
        if any(_bits(xp, w) < _bits(xp, d) for w, d in zip(wanted, native)):
            continue  # never evaluate below the caller's own precision
        if real == xp.float64 and not adapter.float64_available(primals[0]):
            reason = f"{adapter.name} has float64 disabled here"
            if adapter.name == "jax":
                reason += " (jax.config.update('jax_enable_x64', True) enables it)"
            reasons.append(reason)
            continue
        like = [
            adapter.from_core(xp.astype(c, d), like=p)
            for c, d, p in zip(diff_core, wanted, primals)
        ]
        try:
            with adapter.no_grad():
                outs = [adapter.to_core(o) for o in fn(*like)]
        except Exception as exc:  # f refuses this dtype: a float32-only kernel, say
            reasons.append(f"f raised {type(exc).__name__} on {_describe([real])} input")
            continue
        if all(_bits(xp, o.dtype) >= _bits(xp, real) for o in outs):
            if reasons:
                notes.append(
                    "numerical side in " + _describe(wanted) + " because " + "; ".join(reasons)
                )
            return wanted, like, _describe(wanted)
        reasons.append(f"f returns lower precision for {_describe([real])} input")
    if precision == "float64":
        raise ArgumentError(f"precision: 'float64' is not possible: {'; '.join(reasons)}")
    if reasons:
        notes.append("numerical side in the input dtype because " + "; ".join(reasons))
    return native, primals, _describe(native)


def _bits(xp: Any, dtype: Any) -> int:
    """Precision rank of a floating dtype (complex counts by its parts)."""
    real = _real_dtype(xp, dtype)
    return int(-math.log2(float(xp.finfo(real).eps)))


def _describe(dtypes: list[Any]) -> str:
    """Dtype names as people write them: float32, not torch.float32 or a class."""

    def name(d: Any) -> str:
        text = getattr(d, "__name__", None) or str(d)
        return text.replace("torch.", "").replace("dtype(", "").strip("')")

    return "/".join(sorted({name(d) for d in dtypes}))


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
    f: Any,
    args: tuple[Any, ...],
    treedef: Any,
    leaves: list[Any],
    diff: list[int],
    positions: list[int],
    selected: set[int],
    adapter: Adapter,
    xp: Any,
    out_layout: FlatLayout,
    outputs0: list[Any],
    kept: tuple[int, ...] | None = None,
    held: dict[int, _Held] | None = None,
) -> Callable[[list[Any]], list[Any]]:
    """The caller's grad/vjp rule as a batched VJP on framework arrays.
    Outputs left out of the comparison (not in ``kept``) get None as their
    cotangent. Of an argument with entries held fixed (see _Held), the
    rule's gradient is compared on the finite entries alone."""
    wanted = sorted(selected)
    held = held or {}
    call_args = _tree.unflatten(treedef, leaves)
    if grad is not None and out_layout.size != 1:
        raise ArgumentError(
            f"grad: f has {out_layout.size} real outputs; grad= needs a real scalar f, "
            "use vjp=fn (fn(cotangent, *args)) instead"
        )

    def gather(result: Any, rule: str) -> list[Any]:
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
        values: list[Any] = []
        for p, item in zip(wanted, per_arg):
            item_leaves = _tree.leaves(item)
            mine = [i for i in range(len(leaves)) if positions[i] == p]
            if len(item_leaves) != len(mine):
                raise ArgumentError(
                    f"{rule}: the entry for argument {p} has {len(item_leaves)} leaves, "
                    f"the argument has {len(mine)}; mirror its structure"
                )
            for i, value in zip(mine, item_leaves):
                if i in diff:
                    values.append(value)
        out = []
        for value, i in zip(values, diff):
            target = leaves[i]
            if value is None or isinstance(value, (str, bytes)):
                raise ArgumentTypeError(
                    f"{rule}: returned {type(value).__name__} for argument {positions[i]}; "
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
            out.append(held[i].compact(core, xp) if i in held else core)
        return out

    def rule_vjp(cotangents: list[Any]) -> list[Any]:
        k = cotangents[0].shape[0]
        rows = []
        for r in range(k):
            cot = [c[r, ...] for c in cotangents]
            if grad is not None:
                g = gather(grad(*call_args), "grad")
                scale = cot[0]
                rows.append([gi * xp.reshape(adapter.to_core(scale), ()) for gi in g])
            else:
                treedef = _output_treedef(f, call_args)
                if kept is not None:
                    full: list[Any] = [None] * treedef.num_leaves
                    for j, c in zip(kept, cot):
                        full[j] = c
                    cot = full
                out_tree = _tree.unflatten(treedef, cot)
                rows.append(gather(vjp(out_tree, *call_args), "vjp"))
        return [
            adapter.from_core(xp.stack([row[i] for row in rows], axis=0), like=leaves[diff[i]])
            for i in range(len(diff))
        ]

    return rule_vjp


def _output_treedef(f: Any, call_args: Any) -> Any:
    _, _, treedef = _tree.flatten(f(*call_args))
    return treedef


def _rng(seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed)


def _random_like(core: Any, xp: Any, rng: Any) -> Any:
    """Standard normal entries shaped like ``core`` (complex: both parts)."""
    shape = tuple(core.shape)
    values = rng.standard_normal(shape)
    if xp.isdtype(core.dtype, "complex floating"):
        values = values + 1j * rng.standard_normal(shape)
    return _to_xp(values, xp, core)


def _to_xp(host: Any, xp: Any, like: Any) -> Any:
    """NumPy -> the namespace of ``like`` (same device and dtype)."""
    import numpy as np

    array = xp.asarray(np.asarray(host), device=_device(like))
    return xp.astype(array, like.dtype, copy=False)


def _device(array: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(array)
