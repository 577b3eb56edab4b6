"""``gradguard.compare``: one function written in several frameworks, checked together.

Every implementation runs on the same inputs (given once, as NumPy arrays,
converted to each framework in float64). Three things must hold:

1. each one's gradient agrees with finite differences (:func:`gradguard.check`);
2. their values agree with each other;
3. their gradients agree with each other (vector-Jacobian products with one
   shared random cotangent: the gradient itself for a scalar function).

With three or more implementations, the one that disagrees is found against
the entrywise median of all of them; with two, the second is compared with
the first.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import IO, Any

import numpy as np

from . import _tree
from ._check import check
from ._errors import ArgumentError, ArgumentTypeError
from ._frameworks import NAMES, Framework, framework
from ._report import Report, _encode, _index, _is_terminal

__all__ = ["Comparison", "Disagreement", "compare"]

#: Default relative tolerance between implementations, in float64: far above
#: the rounding differences of a different summation order, far below a bug.
RTOL = 1e-8


@dataclass(frozen=True)
class Disagreement:
    """One entry where ``framework`` differs from the others."""

    framework: str
    quantity: str  # "value" or "gradient"
    where: str
    value: float  # this framework's
    expected: float  # the others' (their median, or the first framework's)
    difference: float
    tolerance: float


@dataclass
class Comparison:
    """What :func:`gradguard.compare` found.

    ``verdict`` is ``"pass"``, ``"fail"`` or ``"inconclusive"`` (an
    implementation's own check could not decide); ``checks`` holds each
    framework's :class:`~gradguard.Report`; ``value_errors`` and
    ``gradient_errors`` the largest ``|difference| / tolerance`` of each
    framework against the others (at most 1 agrees); ``disagreements`` the
    worst entries that do not agree.
    """

    verdict: str
    frameworks: tuple[str, ...]
    reference: str
    checks: dict[str, Report]
    value_errors: dict[str, float]
    gradient_errors: dict[str, float]
    disagreements: tuple[Disagreement, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(_encode(self.to_dict()), indent=indent, default=str)

    def headline(self) -> str:
        if self.verdict == "pass":
            return f"{', '.join(self.frameworks)} agree on values and gradients"
        if self.verdict == "inconclusive":
            return "no disagreement, but finite differences cannot decide for " + ", ".join(
                n for n, r in self.checks.items() if r.verdict == "inconclusive"
            )
        who = sorted(
            {d.framework for d in self.disagreements}
            | {n for n, r in self.checks.items() if r.verdict == "fail"},
            key=self.frameworks.index,
        )
        return f"{', '.join(who)} disagree{'s' if len(who) == 1 else ''}"

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """Per framework: name, value and gradient agreement, own check."""

        def agreement(ratio: float) -> str:
            return "agrees" if ratio <= 1 else f"differs ({_times(ratio)} tolerance)"

        rows = []
        for name in self.frameworks:
            report = self.checks[name]
            if name == self.reference:
                value = gradient = "reference"
            else:
                value = agreement(self.value_errors[name])
                gradient = agreement(self.gradient_errors[name])
            rows.append((name, value, gradient, report.verdict, f"{report.relative_error:.3g}"))
        return rows

    def __str__(self) -> str:
        lines = [f"gradguard compare {self.verdict.upper()}: {self.headline()}"]
        rows = [("framework", "value", "gradient", "vs finite differences", "")]
        rows += [(n, v, g, c, f"(relative error {e})") for n, v, g, c, e in self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for r in rows:
            lines.append(
                f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                f"{r[3]} {r[4]}".rstrip()
            )
        if self.disagreements:
            lines.append("  disagreements:")
            width = max(len(d.where) for d in self.disagreements)
            who = max(len(d.framework) for d in self.disagreements)
            lines.append(
                f"    {'who':<{who}}  {'what':<8}  {'where':<{width}}  {'theirs':>13} "
                f"{'the others':>13} {'|difference|':>12} {'tolerance':>10}"
            )
            for d in self.disagreements:
                lines.append(
                    f"    {d.framework:<{who}}  {d.quantity:<8}  {d.where:<{width}}  "
                    f"{d.value:>13.6g} {d.expected:>13.6g} {d.difference:>12.3g} "
                    f"{d.tolerance:>10.3g}"
                )
        for name in self.frameworks:
            report = self.checks[name]
            if report.verdict != "pass":
                lines.append(f"  {name}'s own check:")
                lines += ["    " + line for line in str(report).splitlines()]
        for text in self.notes:
            lines.append(f"  note: {text}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Comparison {self.verdict}: {self.headline()}>"

    def show(self, file: IO[str] | None = None, color: bool | None = None) -> None:
        """Print: rich tables on a terminal, plain text elsewhere."""
        import sys

        file = sys.stdout if file is None else file
        if color is None:
            color = _is_terminal(file)
        if color:
            try:
                from rich.console import Console
            except ImportError:
                pass
            else:
                from ._render import rich_comparison

                console = Console(file=file, highlight=False)
                console.print(rich_comparison(self))
                for name in self.frameworks:
                    if self.checks[name].verdict != "pass":
                        console.print(f"[bold]{name}'s own check:[/bold]")
                        console.print(self.checks[name].__rich__())
                return
        print(str(self), file=file)

    def __rich__(self) -> Any:
        from ._render import rich_comparison

        return rich_comparison(self)


def compare(
    functions: Mapping[str, Any],
    *args: Any,
    rtol: float = RTOL,
    atol: float = 0.0,
    **options: Any,
) -> Comparison:
    """Check one function written in several frameworks, on the same inputs.

    ``functions`` maps framework names (``"numpy"``, ``"torch"``, ``"jax"``,
    ``"tensorflow"``) to implementations. NumPy has no autodiff, so its entry
    carries its derivative: ``(f, grad)`` with ``grad(*args)`` the gradient
    of a scalar ``f`` (one array per differentiated argument, a tuple when
    there are several), or ``{"f": f, "vjp": vjp}`` with
    ``vjp(cotangent, *args)`` for any output (the ``grad=`` / ``vjp=`` of
    :func:`gradguard.check`). Any framework's entry may take these forms.

    ``args`` are NumPy arrays (or nested tuples, lists and dicts of them,
    or plain values passed through): float arrays are differentiated and
    reach each implementation as float64 arrays of its framework (JAX with
    x64 enabled for the duration).

    ``rtol`` / ``atol`` bound the differences between implementations
    (``|a - b| <= rtol * (|b| + scale) + atol``, with ``scale`` the largest
    magnitude of that output or gradient). Other ``options`` go to each
    :func:`gradguard.check` (``mode``, ``seed``, ``wrt``, ...).

    Returns a :class:`Comparison`; never raises because implementations
    disagree (``assert comparison, comparison`` in a test).
    """
    started = time.perf_counter()
    entries = _entries(functions)
    for name, value in (("rtol", rtol), ("atol", atol)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 <= value < float("inf")
        ):
            raise ArgumentError(f"{name}: must be a non-negative finite number, got {value!r}")
    if not args:
        raise ArgumentError("args: pass the point to compare at, as NumPy arrays")
    for key in ("grad", "vjp"):
        if key in options:
            raise ArgumentError(
                f"{key}: give a framework's own rule with its function, e.g. "
                f'{{"numpy": (f, grad)}}, not as an option to compare'
            )
    _known_options(options)
    seed = options.get("seed", 0)
    selected = _selected(options.get("wrt"), len(args))

    # Gradients are matched by position; named after the first implementation's
    # parameters (others may call theirs differently).
    from ._problem import _argument_names

    arg_names = _argument_names(entries[0][1][0], len(args))
    runs = {
        name: _run(name, entry, args, selected, seed, options, arg_names) for name, entry in entries
    }
    names = tuple(name for name, _ in entries)
    reference = names[0] if len(names) == 2 else "median"
    notes: list[str] = []
    if len(names) == 2:
        notes.append(
            f"with two implementations, {names[1]} is compared with {names[0]}; "
            "a third would tell which one is off"
        )
    first = runs[names[0]]
    for name in names[1:]:
        run = runs[name]
        for quantity, mine, theirs in (
            ("value", run.value_paths, first.value_paths),
            ("gradient", run.grad_paths, first.grad_paths),
        ):
            if [np.shape(a) for a in mine.values()] != [np.shape(a) for a in theirs.values()]:
                raise ArgumentError(
                    f"functions: the {quantity}s of {name} and {names[0]} differ in structure "
                    f"or shape ({_shapes(mine)} against {_shapes(theirs)})"
                )

    value_errors, value_rows = _agreement(
        {n: runs[n].value_paths for n in names}, reference, "value", rtol, atol
    )
    grad_errors, grad_rows = _agreement(
        {n: runs[n].grad_paths for n in names}, reference, "gradient", rtol, atol
    )
    disagreements = sorted(value_rows + grad_rows, key=lambda d: -_ratio(d))[:10]
    checks = {n: runs[n].report for n in names}
    if disagreements or any(r.verdict == "fail" for r in checks.values()):
        verdict = "fail"
    elif any(r.verdict == "inconclusive" for r in checks.values()):
        verdict = "inconclusive"
    else:
        verdict = "pass"
    if len(value_rows) + len(grad_rows) > len(disagreements):
        notes.append(
            f"{len(value_rows) + len(grad_rows)} entries disagree; the "
            f"{len(disagreements)} worst are shown"
        )
    return Comparison(
        verdict=verdict,
        frameworks=names,
        reference=reference,
        checks=checks,
        value_errors=value_errors,
        gradient_errors=grad_errors,
        disagreements=tuple(disagreements),
        notes=tuple(notes),
        seconds=time.perf_counter() - started,
    )


# -- one implementation -------------------------------------------------------


@dataclass
class _Result:
    report: Report
    value_paths: dict[str, np.ndarray]  # "out[0]" -> float64 values
    grad_paths: dict[str, np.ndarray]  # argument path -> float64 VJP


def _entries(functions: Any) -> list[tuple[str, tuple[Callable[..., Any], dict[str, Any]]]]:
    if not isinstance(functions, Mapping):
        raise ArgumentTypeError(
            "functions: expected a dict of framework name -> function, e.g. "
            '{"torch": f_torch, "jax": f_jax}'
        )
    if len(functions) < 2:
        raise ArgumentError("functions: compare needs at least two implementations")
    entries = []
    for name, value in functions.items():
        if name not in NAMES:
            raise ArgumentError(
                f"functions: unknown framework {name!r}; use {', '.join(repr(n) for n in NAMES)}"
            )
        entries.append((name, _entry(name, value)))
    order = {n: i for i, n in enumerate(NAMES)}
    return sorted(entries, key=lambda e: order[e[0]])


def _entry(name: str, value: Any) -> tuple[Callable[..., Any], dict[str, Any]]:
    if isinstance(value, Mapping):
        unknown = set(value) - {"f", "grad", "vjp"}
        if "f" not in value or unknown or ("grad" in value and "vjp" in value):
            raise ArgumentError(
                f'functions[{name!r}]: a dict entry is {{"f": f, "grad": grad}} or '
                f'{{"f": f, "vjp": vjp}}, got keys {sorted(value)}'
            )
        rule = {k: value[k] for k in ("grad", "vjp") if k in value}
        f = value["f"]
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise ArgumentError(f"functions[{name!r}]: a tuple entry is (f, grad)")
        f, rule = value[0], {"grad": value[1]}
    else:
        f, rule = value, {}
    if not callable(f) or not all(callable(r) for r in rule.values()):
        raise ArgumentTypeError(f"functions[{name!r}]: expected callables")
    if name == "numpy" and not rule:
        raise ArgumentError(
            'functions["numpy"]: NumPy has no autodiff; give the gradient with the '
            'function: (f, grad) with grad(*args) for a scalar f, or {"f": f, "vjp": vjp}'
        )
    return f, rule


def _run(
    name: str,
    entry: tuple[Callable[..., Any], dict[str, Any]],
    args: tuple[Any, ...],
    selected: set[int],
    seed: int,
    options: dict[str, Any],
    arg_names: list[str],
) -> _Result:
    f, rule = entry
    fw = framework(name)
    with fw.float64():
        converted = tuple(_convert(arg, fw) for arg in args)
        report = check(f, *converted, **rule, **options)
        outputs = f(*converted)
        out_leaves, out_paths, out_tree = _tree.flatten(outputs, "out")
        values = {p: _float64(fw.to_numpy(o)) for o, p in zip(out_leaves, out_paths)}
        cotangents = _cotangents(values, seed)
        grads = _vjp(fw, f, rule, converted, selected, out_tree, cotangents, arg_names)
    return _Result(report, values, grads)


def _convert(arg: Any, fw: Framework) -> Any:
    leaves, _, treedef = _tree.flatten(arg)
    return _tree.unflatten(
        treedef, [fw.asarray(x) if isinstance(x, np.ndarray) else x for x in leaves]
    )


def _float64(array: Any) -> np.ndarray:
    a = np.asarray(array)
    return a.astype(np.complex128 if a.dtype.kind == "c" else np.float64)


def _cotangents(values: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """One cotangent per output, the same for every framework: 1 for a
    single scalar output (so the VJP is the gradient), random otherwise."""
    if len(values) == 1 and next(iter(values.values())).size == 1:
        return {p: np.ones_like(v, dtype=np.float64) for p, v in values.items()}
    rng = np.random.default_rng(seed + 104729)
    return {p: rng.standard_normal(np.shape(v)) for p, v in values.items()}


def _selected(wrt: Any, count: int) -> set[int]:
    from ._problem import _wrt_positions

    return _wrt_positions(wrt, count)


def _known_options(options: Mapping[str, Any]) -> None:
    """Options compare hands to gradguard.check must be check's options."""
    import inspect

    from ._check import check

    known = [
        name
        for name, param in inspect.signature(check).parameters.items()
        # compare's own rtol / atol replace check's; rules travel with functions.
        if param.kind is param.KEYWORD_ONLY and name not in ("grad", "vjp", "rtol", "atol")
    ]
    for name in options:
        if name not in known:
            raise ArgumentTypeError(
                f"{name}: not an option of compare; options: rtol, atol, {', '.join(known)}"
            )


def _vjp(
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
    from ._problem import _argument_names

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
        grads = _autodiff_vjp(fw, leaves, diff, treedef, f, cots)
    return {paths[i]: _float64(fw.to_numpy(g)) for i, g in zip(diff, grads)}


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
    fw: Framework,
    leaves: list[Any],
    diff: list[int],
    treedef: Any,
    f: Callable[..., Any],
    cots: list[np.ndarray],
) -> list[Any]:
    from ._problem import _LeafCall
    from .adapters import adapter_of

    adapter = adapter_of([leaves[i] for i in diff], "args")
    primals = [leaves[i] for i in diff]
    fn = _LeafCall(f, treedef, list(leaves), diff, adapter)
    outputs = fn(*primals)
    # The cotangents are made on the host: each goes to its output's device.
    batched = [
        adapter.from_core(_cast(fw, fw.asarray(c[None, ...]), o.dtype), like=o)
        for c, o in zip(cots, outputs)
    ]
    grads = adapter.vjp(fn, primals, batched)
    return [g[0] for g in grads]


def _cast(fw: Framework, array: Any, dtype: Any) -> Any:
    if fw.name == "torch":
        return array.to(dtype)
    if fw.name == "tensorflow":
        return fw.module.cast(array, dtype)
    return array.astype(dtype)


# -- agreement ----------------------------------------------------------------


def _agreement(
    results: dict[str, dict[str, np.ndarray]],
    reference: str,
    quantity: str,
    rtol: float,
    atol: float,
) -> tuple[dict[str, float], list[Disagreement]]:
    names = list(results)
    errors = {n: 0.0 for n in names}
    rows: list[Disagreement] = []
    for path in results[names[0]]:
        stack = np.stack([np.asarray(results[n][path]) for n in names])
        expected = stack[0] if reference != "median" else _median(stack)
        finite = np.isfinite(expected)
        scale = float(np.max(np.abs(expected[finite]))) if np.any(finite) else 0.0
        tol = rtol * (np.abs(expected) + scale) + atol
        for k, name in enumerate(names):
            if name == reference:
                continue
            mine = stack[k]
            diff = np.abs(mine - expected)
            same_nonfinite = (mine == expected) | (np.isnan(mine) & np.isnan(expected))
            diff = np.where(same_nonfinite, 0.0, diff)
            diff = np.where(np.isnan(diff), np.inf, diff)
            ratio = np.where(
                tol > 0, diff / np.where(tol > 0, tol, 1.0), np.where(diff > 0, np.inf, 0.0)
            )
            if ratio.size:
                errors[name] = max(errors[name], float(np.max(ratio)))
            for flat in np.argsort(-ratio, axis=None)[:10]:
                index = np.unravel_index(flat, ratio.shape)
                if not ratio[index] > 1:
                    break
                rows.append(
                    Disagreement(
                        framework=name,
                        quantity=quantity,
                        where=_where(quantity, path, tuple(int(i) for i in index)),
                        value=_real(mine[index]),
                        expected=_real(expected[index]),
                        difference=float(diff[index]),
                        tolerance=float(tol[index]),
                    )
                )
    return errors, rows


def _median(stack: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(stack):
        return np.median(stack.real, axis=0) + 1j * np.median(stack.imag, axis=0)
    return np.median(stack, axis=0)


def _where(quantity: str, path: str, index: tuple[int, ...]) -> str:
    return f"{path}{_index(index)}"


def _real(value: Any) -> float:
    return float(np.real(value))


def _ratio(d: Disagreement) -> float:
    return d.difference / d.tolerance if d.tolerance > 0 else math.inf


def _times(ratio: float) -> str:
    return "inf x" if math.isinf(ratio) else f"{ratio:.3g} x"


def _shapes(paths: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{p} {np.shape(a)}" for p, a in paths.items())
