"""What a check differentiates: the arguments' leaves, the parameters f
reads besides them (a model's weights), and ``wrt=``'s choice among them.

``wrt`` names what to differentiate: an argument by position (``0``) or by
name (``"x"``), a parameter by name (``"encoder.0.weight"``) or by the name
of a module holding it (``"encoder"``, every parameter under it), or a
group: ``"inputs"`` (every argument), ``"parameters"`` (every parameter f
reaches) or ``"all"``; or a list of those. By default: every argument, and
the parameters of a model that f is (or is a method of, or takes as an
argument).
"""

from __future__ import annotations

import inspect
import numbers
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ... import _tree
from ..._errors import ArgumentError, ArgumentTypeError, MutationError
from ...adapters import Adapter, adapter_for, adapter_of
from ...adapters.parameters import Parameters
from .names import named_like_forward

#: Unchecked arrays named in a note, at most.
UNCHECKED_SHOWN = 8
#: Names listed in an error, at most.
NAMES_SHOWN = 12
#: The argument position of a parameter's leaf.
PARAMETER = -1
GROUPS = ("all", "inputs", "parameters")


@dataclass
class _Arguments:
    """The leaves of a check: the arguments' (``treedef`` rebuilds them),
    then the chosen parameters'."""

    adapter: Adapter
    xp: Any
    leaves: list[Any]
    paths: list[str]
    #: The argument each leaf belongs to; PARAMETER for parameters.
    positions: list[int]
    treedef: _tree.TreeDef
    #: How many leaves are the arguments' (the parameters' follow).
    arg_leaves: int
    #: The leaves that are arrays of the framework, and those differentiated.
    arrays: list[int]
    diff: list[int]
    #: The caller's arrays as core arrays, by leaf.
    core_leaves: dict[int, Any]
    #: The arguments wrt selects, whole or in part (by position).
    selected: set[int]
    #: The parameters differentiated (None: none).
    parameters: Parameters | None
    #: Every parameter f reaches (None: none), for notes.
    reachable: Parameters | None

    @classmethod
    def gather(
        cls, f: Any, args: tuple[Any, ...], wrt: Any, kwargs: Mapping[str, Any]
    ) -> _Arguments:
        if not args:
            raise ArgumentError("args: pass the point to check at, e.g. check(f, x)")
        names = _argument_names(_named_by(f), len(args))
        leaves, paths, positions, treedef = _tree.flatten_arguments(args, names)
        arg_leaves = len(leaves)
        arrays = [i for i, leaf in enumerate(leaves) if adapter_for(leaf) is not None]
        adapter = adapter_of([leaves[i] for i in arrays], "args")
        reachable = adapter.parameters(f, leaves, paths, kwargs)
        selection = _select(wrt, names, paths, reachable)
        chosen = selection.parameters
        parameters = reachable.narrowed(chosen) if reachable is not None and chosen else None
        if parameters is not None:
            arrays += range(len(leaves), len(leaves) + len(parameters.names))
            leaves += parameters.arrays
            paths += parameters.names
            positions += [PARAMETER] * len(parameters.names)
            selection.leaves.update(range(arg_leaves, len(leaves)))
        core_leaves = {i: adapter.to_core(leaves[i]) for i in arrays}
        xp = adapter.namespace(next(iter(core_leaves.values())))
        floating = ("real floating", "complex floating")
        diff = [
            i
            for i in arrays
            if (positions[i] in selection.positions or i in selection.leaves)
            and xp.isdtype(core_leaves[i].dtype, floating)
        ]
        # The arguments a grad=/vjp= rule gives derivatives for.
        selected = selection.positions | {positions[i] for i in selection.leaves}
        selected.discard(PARAMETER)
        if not diff:
            raise ArgumentTypeError(
                "args: no floating-point array to differentiate"
                + (f" among the arguments wrt={wrt!r} selects" if wrt is not None else "")
                + "; pass float arrays (integers are not differentiable)"
            )
        return cls(
            adapter, xp, leaves, paths, positions, treedef, arg_leaves, arrays, diff,
            core_leaves, selected, parameters, reachable,
        )  # fmt: skip


@dataclass(frozen=True)
class _Selection:
    """What ``wrt`` selects: whole arguments (by position), leaves inside
    arguments (by index, named by their path), parameters (by index)."""

    positions: set[int]
    leaves: set[int]
    parameters: list[int]


def _select(
    wrt: Any, names: list[str], paths: list[str], parameters: Parameters | None
) -> _Selection:
    """What ``wrt`` names among the arguments (``names``), their leaves
    (``paths``) and the parameters f reaches."""
    count = len(names)
    if wrt is None:
        own = list(parameters.own) if parameters is not None else []
        return _Selection(set(range(count)), set(), [k for k, mine in enumerate(own) if mine])
    single = isinstance(wrt, (str, numbers.Integral)) and not isinstance(wrt, bool)
    try:
        items = [wrt] if single else list(wrt)
    except TypeError:
        raise ArgumentTypeError(
            "wrt: expected an argument index or name, a parameter name, 'inputs', "
            f"'parameters', 'all', or a list of them; got {wrt!r}"
        ) from None
    selection = _Selection(set(), set(), [])
    chosen: set[int] = set()
    for item in items:
        if isinstance(item, str):
            found = _named(item, names, paths, parameters)
            selection.positions.update(found.positions)
            selection.leaves.update(found.leaves)
            chosen.update(found.parameters)
        elif isinstance(item, numbers.Integral) and not isinstance(item, bool):
            selection.positions.add(_position(int(item), count))
        else:
            raise ArgumentTypeError(
                f"wrt: expected argument indices (integers) or names (strings), got {item!r}"
            )
    return _Selection(selection.positions, selection.leaves, sorted(chosen))


def _position(p: int, count: int) -> int:
    if not -count <= p < count:
        raise ArgumentError(
            f"wrt: index {p} is out of range for {count} argument(s); use 0 .. {count - 1} "
            "(or negative from the end)"
        )
    return p % count


def _named(
    name: str, names: list[str], paths: list[str], parameters: Parameters | None
) -> _Selection:
    """What one name in ``wrt`` selects: a group, an argument, the leaves of
    an argument under a path (``"params['dense']"``), parameters by name or
    under a module's name (``"encoder"``: ``encoder.0.weight``, ...)."""
    every = list(range(len(parameters.names))) if parameters is not None else []
    if name in ("all", "inputs"):
        return _Selection(set(range(len(names))), set(), every if name == "all" else [])
    if name == "parameters":
        if not every:
            raise ArgumentError(
                "wrt: 'parameters': f reaches no parameters gradguard can see (a torch "
                "nn.Module's, a Keras layer's, a JAX pytree model's, where f is the model, "
                "a method of it, takes it as an argument or refers to it); pass the arrays "
                "as arguments instead"
            )
        return _Selection(set(), set(), every)
    positions = {p for p, argument in enumerate(names) if argument == name}
    leaves = {i for i, path in enumerate(paths) if _under(path, name)}
    parameter_names = parameters.names if parameters is not None else ()
    chosen = [k for k, parameter in enumerate(parameter_names) if _under(parameter, name)]
    if not positions and not leaves and not chosen:
        known = [*names, *parameter_names]
        shown = ", ".join(known[:NAMES_SHOWN]) + (" ..." if len(known) > NAMES_SHOWN else "")
        raise ArgumentError(
            f"wrt: {name!r} names no argument or parameter of f; use one of its names "
            f"({shown}), a group ({', '.join(repr(g) for g in GROUPS)}) or an index"
        )
    return _Selection(positions, leaves, chosen)


def _under(path: str, name: str) -> bool:
    """Is ``path`` the thing ``name`` names, or inside it?"""
    return path == name or path.startswith((f"{name}.", f"{name}/", f"{name}["))


def _note_unchecked(
    other_leaves: tuple[str, ...],
    arguments: _Arguments,
    notes: list[str],
) -> None:
    """Say which arrays f uses that require gradients and are not checked:
    those the autodiff reaches besides the arrays differentiated (a model's
    parameters that wrt= leaves out), and the floating arrays inside
    arguments that are containers gradguard passes through whole."""
    if other_leaves:
        shown = ", ".join(other_leaves[:UNCHECKED_SHOWN])
        more = len(other_leaves) - UNCHECKED_SHOWN
        if more > 0:
            shown += f" and {more} more"
        reachable = arguments.reachable
        left_out = reachable is not None and len(reachable.names) > len(
            arguments.parameters.names if arguments.parameters is not None else ()
        )
        fix = (
            "wrt='all' checks them too (or wrt='parameters', or their names)"
            if left_out
            else "pass them as arguments to check theirs"
        )
        notes.append(
            f"not checked: f uses {len(other_leaves)} other array(s) that require gradients "
            f"({shown}); only derivatives with respect to the arrays wrt= selects are "
            f"checked: {fix}"
        )
    arrays = set(arguments.arrays)
    for i, leaf in enumerate(arguments.leaves):
        if i in arrays or leaf is None:
            continue
        try:
            hidden = arguments.adapter.hidden_arrays(leaf)
        except Exception:
            continue
        if hidden:
            notes.append(
                f"not checked: {arguments.paths[i]} ({type(leaf).__name__}) holds {hidden} "
                "floating array(s) that f received as they are; gradguard differentiates arrays in "
                "tuples, lists, dicts, namedtuples and the containers JAX knows only: pass "
                "them in one of those to check them"
            )


def _named_by(f: Any) -> Any:
    """What names f's positional parameters: a torch module's forward, a
    Keras layer's call (their __call__ takes ``*args``), else f itself."""
    if isinstance(f, (types.FunctionType, types.MethodType)):
        return f
    for attribute in ("forward", "call"):
        method = getattr(f, attribute, None)
        if isinstance(method, types.MethodType):
            return method
    return f


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
