"""``gradguard check``: from the parsed command line to a printed report.

:mod:`gradguard._cli_inputs` reads the target and its inputs,
:mod:`gradguard._cli_words` words check()'s messages in flags; this module
runs the check, writes the JSON and the picture, and prints the report.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ._cli_inputs import (
    Target,
    UsageError,
    factory_inputs,
    keyword_arguments,
    positional_names,
    random_inputs,
    read_inputs,
    required_count,
    resolve,
    shape,
    value_range,
    wrt_positions,
)
from ._cli_words import in_flag_words

__all__ = ["check_command", "color", "drop_stdout"]

EXIT = {"pass": 0, "fail": 1, "inconclusive": 2}


def drop_stdout() -> None:
    """The reader of stdout left: what is still buffered goes nowhere, quietly."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def check_command(options: argparse.Namespace) -> int:
    """Run ``gradguard check``; returns the exit status of its verdict."""
    from ._check import check

    path, name = resolve(options.target)
    target = Target(path, name, _load(path))
    rule = _rule(target)
    kwargs = keyword_arguments(options.kwarg)
    fw = _framework(options.framework or _framework_of(target.module, path, rule))
    if fw.name == "numpy" and not rule:
        raise UsageError(
            f"NumPy has no autodiff: define {name}_grad(*args) (the gradient of a scalar "
            f"{name}) or {name}_vjp(cotangent, *args) in {path}"
        )
    names = _names(target.function, kwargs)
    with fw.float64():
        inputs = _inputs(options, target, names)
    _arity(target, kwargs, len(inputs))
    wrt = wrt_positions(options.wrt, names, len(inputs)) if options.wrt else None
    hosts = [_as_dtype(fw, a, options.dtype) for a in inputs]
    wide = any(str(getattr(a, "dtype", "")) in ("float64", "complex128") for a in hosts)
    f = functools.partial(target.function, **kwargs) if kwargs else target.function
    check_options: dict[str, Any] = {
        "wrt": wrt,
        "mode": options.mode,
        "direction": options.direction,
        "order": options.order,
        "seed": options.seed,
        "probes": options.probes,
        "eps": options.eps,
        "rtol": options.rtol,
        "atol": options.atol,
        **{key: _for_wrt(_with_kwargs(value, kwargs), wrt) for key, value in rule.items()},
    }
    plot_problem = None
    with fw.float64() if wide else _null():
        args = tuple(fw._asarray(a) if isinstance(a, np.ndarray) else a for a in hosts)
        report = _run(target, lambda: check(f, *args, **check_options))
        if options.plot:
            report, plot_problem = _plot(report, options.plot, target, f, args, check_options)
    # The file first: a reader that leaves early (`| head`) must not cost it.
    if options.json and options.json != "-":
        _write_json(report, options.json)
    try:
        if options.json == "-":
            print(report.to_json())
        else:
            report.show(color=color(options.color))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader left; the verdict still decides the status
        drop_stdout()
    if plot_problem:
        sys.stdout.flush()
        print(f"gradguard: {plot_problem}", file=sys.stderr)
    return EXIT[report.verdict]


def _rule(target: Target) -> dict[str, Any]:
    """The NumPy rule the file defines next to FUNC: FUNC_grad or FUNC_vjp."""
    rule = {key: target.beside(key) for key in ("grad", "vjp")}
    found = {key: value for key, value in rule.items() if value is not None}
    if len(found) == 2:
        raise UsageError(
            f"{target.path} defines both {target.name}_grad and {target.name}_vjp; keep one"
        )
    return found


def _framework(name: str) -> Any:
    from ._errors import GradguardError
    from ._frameworks import framework

    try:
        return framework(name)
    except GradguardError as exc:
        raise UsageError(str(exc)) from None


def _names(f: Any, kwargs: dict[str, Any]) -> list[str] | None:
    """FUNC's positional parameters, less those given by --kwarg."""
    names = positional_names(f)
    return None if names is None else [n for n in names if n not in kwargs]


def _inputs(options: argparse.Namespace, target: Target, names: list[str] | None) -> list[Any]:
    """The positional arguments: --inputs files, else random --shape, else FUNC_inputs()."""
    if options.inputs:
        for flag, given in (("--shape", options.shape), ("--range", options.value_range)):
            if given:
                raise UsageError(f"{flag} makes random inputs and --inputs reads them; keep one")
        return read_inputs(options.inputs, names)
    if options.shape:
        shapes = [shape(text) for text in options.shape]
        ranges = [value_range(text) for text in options.value_range]
        return random_inputs(shapes, ranges, options.dtype or "float64", options.seed)
    factory = target.beside("inputs")
    if factory is None:
        raise UsageError(
            "give the inputs: --shape 3,4 per positional argument (random ones), "
            f"--inputs FILE.npy / FILE.npz, or define {target.name}_inputs() in {target.path}"
        )
    if options.value_range:
        raise UsageError(
            f"--range applies to random inputs (--shape); {target.name}_inputs makes its own"
        )
    label = f"{target.name}_inputs"
    return _run(target, lambda: factory_inputs(factory, label, options.seed), f"{label} raised")


def _as_dtype(fw: Any, value: Any, dtype: str | None) -> Any:
    """NumPy inputs in --dtype (floating ones; indices stay integers); framework
    arrays as they are unless --dtype asks otherwise."""
    if isinstance(value, (np.ndarray, np.generic, float, int, complex)):
        host = np.asarray(value)
    elif dtype is None:
        return value
    else:
        host = fw.to_numpy(value)
    if dtype is not None and host.dtype.kind in "fc":
        host = host.astype(dtype)
    return host


def _with_kwargs(rule: Any, kwargs: dict[str, Any]) -> Any:
    """FUNC_grad / FUNC_vjp get the --kwarg values their signature takes."""
    import inspect

    try:
        params = inspect.signature(rule).parameters
    except (TypeError, ValueError):
        return rule
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params.values())
    taken = {k: v for k, v in kwargs.items() if takes_any or k in params}
    return functools.partial(rule, **taken) if taken else rule


def _for_wrt(rule: Any, wrt: tuple[int, ...] | None) -> Any:
    """FUNC_grad / FUNC_vjp return one gradient per positional argument; with
    --wrt, check() wants those of the chosen arguments only."""
    if wrt is None:
        return rule

    def chosen(*args: Any) -> Any:
        result = rule(*args)
        if isinstance(result, (tuple, list)) and len(result) > len(wrt):
            picked = [result[p] for p in wrt if p < len(result)]
            return picked[0] if len(picked) == 1 else tuple(picked)
        return result

    return chosen


def _run(target: Target, action: Any, what: str | None = None) -> Any:
    """Run the check (or the user's factory); its errors as usage errors in flag words."""
    from ._errors import GradguardError

    try:
        return action()
    except GradguardError as exc:
        raise UsageError(in_flag_words(str(exc), target.name, str(target.path))) from None
    except UsageError:
        raise
    except Exception as exc:
        message = _user_error(exc, target.path, what or f"{target.name} raised")
        raise UsageError(message) from None


def _write_json(report: Any, path: str) -> None:
    try:
        Path(path).write_text(report.to_json() + "\n", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--json: cannot write {path}: {exc.strerror}") from None


def _plot(
    report: Any,
    path: str,
    target: Target,
    f: Any,
    args: tuple[Any, ...],
    options: dict[str, Any],
) -> tuple[Any, str | None]:
    """The report with its picture drawn into ``path``, or with what kept it from
    being drawn (the report is printed either way)."""
    from ._errors import GradguardError

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return report, (
            f"--plot: matplotlib is not installed, {path} not written "
            "(pip install 'gradguard[plot]'); the report above is complete"
        )
    from .engine.step_curve import add_plot_data
    from .report.plot import plot_report

    keys = ("grad", "vjp", "wrt", "seed")
    report = _run(
        target,
        lambda: add_plot_data(report, f, *args, **{k: options[k] for k in keys if k in options}),
    )
    try:
        plot_report(report, path)
    except (OSError, GradguardError, ValueError) as exc:
        return report, f"--plot: cannot write {path}: {exc}"
    return report, None


def _arity(target: Target, kwargs: dict[str, Any], count: int) -> None:
    """One input per positional argument: say so before FUNC fails on it."""
    names = _names(target.function, kwargs)
    required = required_count(target.function, kwargs)
    if names is None or required is None:
        return
    if count < required or count > len(names):
        raise UsageError(
            f"{target.path}:{target.name} takes {required} positional argument(s) "
            f"({', '.join(names)}); got {count} input(s); give one --shape (or one array "
            "in --inputs) per argument"
        )


def _load(path: Path) -> Any:
    name = f"gradguard_target_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UsageError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        raise UsageError(_user_error(exc, path, "importing it raised")) from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _framework_of(module: Any, path: Path, rule: dict[str, Any]) -> str:
    """The framework the file works in, from the modules it imports."""
    used = set()
    for value in vars(module).values():
        top = getattr(value, "__name__", "") if isinstance(value, type(sys)) else ""
        top = top or (getattr(value, "__module__", "") or "")
        root = top.split(".", 1)[0]
        if root in ("torch", "jax", "jaxlib", "tensorflow", "keras"):
            used.add({"jaxlib": "jax", "keras": "tensorflow"}.get(root, root))
    if len(used) > 1:
        raise UsageError(f"{path} uses {' and '.join(sorted(used))}; say which with --framework")
    if used:
        return used.pop()
    return "numpy"


def _user_error(exc: BaseException, path: Path, what: str) -> str:
    """The user's code raised: say where in their file, not in gradguard's insides."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if Path(frame.filename).resolve() == path.resolve()
    ]
    lines = [f"{path}: {what} {type(exc).__name__}: {exc}"]
    lines += [line.rstrip() for line in traceback.format_list(frames)]
    return "\n".join(lines)


def color(flag: bool | None) -> bool:
    """--color / --no-color, or by default: a terminal with rich installed."""
    from .report.format import is_terminal

    if flag is not None:
        if flag:
            try:
                import rich
            except ImportError:
                return False
        return flag
    if not is_terminal(sys.stdout):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def _null() -> Any:
    import contextlib

    return contextlib.nullcontext()
