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

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _tree
from ._check import check
from ._errors import ArgumentError, ArgumentTypeError
from ._frameworks import NAMES, Framework, framework
from .engine.host_vjp import as_float64, host_vjp
from .report.comparison import Comparison, Disagreement
from .report.format import format_index
from .report.report import Report

__all__ = ["Comparison", "Disagreement", "compare"]

#: Default relative tolerance between implementations, in float64: far above
#: the rounding differences of a different summation order, far below a bug.
RTOL = 1e-8


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
    from .engine.problem import _argument_names

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
        values = {p: as_float64(fw.to_numpy(o)) for o, p in zip(out_leaves, out_paths)}
        cotangents = _cotangents(values, seed)
        grads = host_vjp(fw, f, rule, converted, selected, out_tree, cotangents, arg_names)
    return _Result(report, values, grads)


def _convert(arg: Any, fw: Framework) -> Any:
    leaves, _, treedef = _tree.flatten(arg)
    return _tree.unflatten(
        treedef, [fw.asarray(x) if isinstance(x, np.ndarray) else x for x in leaves]
    )


def _cotangents(values: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """One cotangent per output, the same for every framework: 1 for a
    single scalar output (so the VJP is the gradient), random otherwise."""
    if len(values) == 1 and next(iter(values.values())).size == 1:
        return {p: np.ones_like(v, dtype=np.float64) for p, v in values.items()}
    rng = np.random.default_rng(seed + 104729)
    return {p: rng.standard_normal(np.shape(v)) for p, v in values.items()}


def _selected(wrt: Any, count: int) -> set[int]:
    from .engine.problem import _wrt_positions

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
    return f"{path}{format_index(index)}"


def _real(value: Any) -> float:
    return float(np.real(value))


def _ratio(d: Disagreement) -> float:
    return d.difference / d.tolerance if d.tolerance > 0 else math.inf


def _shapes(paths: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{p} {np.shape(a)}" for p, a in paths.items())
