"""The ``gradguard`` command.

``gradguard demo``
    Check a gallery of correct and deliberately broken custom derivative
    rules in every installed framework; exit 0 when every verdict is the
    expected one.

``gradguard check FILE.py:FUNC --shape 3,4 [--shape ...]``
    Check FUNC (or ``Class.apply``) at random inputs of the given shapes (one
    ``--shape`` per positional argument; ``--shape ''`` for a scalar; uniform
    in ``--range LOW,HIGH``), at the arrays of ``--inputs FILE.npy|.npz``, or
    at what ``FUNC_inputs()`` in FILE returns; ``--kwarg NAME=VALUE`` passes
    keyword arguments. The framework is the one FILE imports (or
    ``--framework``). NumPy has no autodiff: define ``FUNC_grad(*args)`` (the
    gradient of a scalar FUNC) or ``FUNC_vjp(cotangent, *args)`` next to FUNC
    in the same file. Messages name the command's flags, not check()'s
    keywords (``--direction rev``, not ``direction='rev'``).

Exit status: 0 pass, 1 fail, 2 inconclusive or a usage error.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

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

__all__ = ["main"]

EXIT = {"pass": 0, "fail": 1, "inconclusive": 2}
USAGE_ERROR = 2
DTYPES = ("float64", "float32", "float16", "complex128", "complex64")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    if options.command is None:
        parser.print_help()
        return USAGE_ERROR
    try:
        if options.command == "demo":
            return _demo(options)
        return _check(options)
    except UsageError as exc:
        print(f"gradguard: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("gradguard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gradguard ... | head`: the reader left, nothing to say
        _drop_stdout()
        return 1


def _drop_stdout() -> None:
    """The reader of stdout left: what is still buffered goes nowhere, quietly."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog="gradguard",
        description="Is this gradient right? Checks derivatives against finite differences.",
        epilog="Exit status: 0 pass, 1 fail, 2 inconclusive or a usage error.",
    )
    parser.add_argument("--version", action="version", version=f"gradguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    demo = commands.add_parser(
        "demo",
        help="check a gallery of correct and broken custom rules in every installed framework",
        description="Check a gallery of correct and deliberately broken custom derivative rules "
        "in every installed framework (NumPy always). Exits 0 when every verdict is the "
        "expected one.",
    )
    demo.add_argument(
        "--framework",
        action="append",
        choices=("numpy", "torch", "jax", "tensorflow"),
        help="only this framework (repeatable; default: every installed one)",
    )
    demo.add_argument("--quiet", action="store_true", help="only the summary table")
    demo.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rich tables (default: on a terminal, when rich is installed and NO_COLOR unset)",
    )

    check = commands.add_parser(
        "check",
        help="check FUNC in FILE.py at random inputs or inputs you give",
        description="Check the derivatives of FUNC (defined in FILE.py; Class.apply for a "
        "torch.autograd.Function) against finite differences. The inputs: --inputs files, "
        "else random ones of the --shape given (in --range), else the tuple that "
        "FUNC_inputs() (or FUNC_inputs(rng)) in FILE.py returns. For NumPy, define "
        "FUNC_grad(*args) (gradient of a scalar FUNC) or FUNC_vjp(cotangent, *args) next to "
        "FUNC.",
        epilog="Exit status: 0 pass, 1 fail, 2 inconclusive or a usage error.",
    )
    check.add_argument(
        "target", metavar="FILE.py:FUNC", help="the function to check (or FILE.py:Class.apply)"
    )
    given = check.add_argument_group("inputs (the point the derivatives are checked at)")
    given.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="3,4",
        help="random input of this shape for the next positional argument (repeat for each; "
        "'' for a scalar)",
    )
    given.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="LOW,HIGH",
        dest="value_range",
        help="draw the random inputs uniformly in [LOW, HIGH) instead of from a standard "
        "normal (once for all, or once per --shape), e.g. 0.5,2 for a log",
    )
    given.add_argument(
        "--inputs",
        action="append",
        default=[],
        metavar="FILE.npy|FILE.npz",
        help="inputs from a file: a .npy is the next positional argument, a .npz holds "
        "several (named like FUNC's parameters, or unnamed in order); repeatable",
    )
    given.add_argument(
        "--kwarg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="keyword argument for FUNC, held fixed (a Python literal: 2, 0.5, 'mean', "
        "(1, 2); else the text); repeatable",
    )
    given.add_argument(
        "--dtype",
        choices=DTYPES,
        help="dtype of the inputs (default: float64 for random inputs, the file's own for "
        "--inputs and FUNC_inputs)",
    )
    given.add_argument(
        "--framework",
        choices=("numpy", "torch", "jax", "tensorflow"),
        help="framework of the inputs (default: the one FILE.py imports)",
    )
    how = check.add_argument_group("the check")
    how.add_argument(
        "--wrt",
        metavar="0,1|NAME,...",
        help="differentiate only these positional arguments, by position or parameter name "
        "(default: every floating-point one)",
    )
    how.add_argument(
        "--mode",
        default="auto",
        choices=("auto", "full", "probe"),
        help="full: every Jacobian entry; probe: a few random projections u.J.v (large "
        "inputs); auto (default): full up to 2048 inputs",
    )
    how.add_argument(
        "--direction",
        default="rev",
        choices=("rev", "fwd", "both"),
        help="rev (default): vector-Jacobian products (backward rules); fwd: Jacobian-vector "
        "products (forward rules, jvp); both",
    )
    how.add_argument(
        "--order",
        default=1,
        type=int,
        choices=(1, 2),
        help="1 (default), or 2 to check the derivative of the derivative",
    )
    how.add_argument(
        "--probes",
        type=_positive,
        metavar="N",
        help="random probes in probe mode (default 1; 8 in low precision)",
    )
    how.add_argument(
        "--eps",
        type=_positive_float,
        metavar="H",
        help="one fixed absolute step for every entry (default: a step per entry, "
        "eps**(1/3) * max(1, |x|))",
    )
    how.add_argument(
        "--rtol",
        type=_non_negative_float,
        metavar="R",
        help="relative tolerance added to each entry's estimated one (default 0)",
    )
    how.add_argument(
        "--atol",
        type=_non_negative_float,
        metavar="A",
        help="absolute tolerance added to each entry's estimated one (default 0)",
    )
    how.add_argument(
        "--seed",
        default=0,
        type=_non_negative,
        metavar="N",
        help="seeds the inputs and probes (default 0)",
    )
    out = check.add_argument_group("output")
    out.add_argument(
        "--json", metavar="OUT.json", help="also write the report as JSON ('-': only to stdout)"
    )
    out.add_argument(
        "--plot",
        metavar="OUT.png",
        help="also draw the report (PNG, SVG or PDF by suffix; needs matplotlib)",
    )
    out.add_argument(
        "--color",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a rich table (default: on a terminal, when rich is installed and NO_COLOR unset)",
    )
    return parser


class _Parser(argparse.ArgumentParser):
    """argparse, exiting with our usage status (2, as argparse does) and a hint."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"gradguard: error: {message}\n")


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


# -- demo -------------------------------------------------------------------------


def _demo(options: argparse.Namespace) -> int:
    from . import _gallery
    from ._frameworks import installed

    frameworks = options.framework or list(installed())
    missing = [f for f in frameworks if f not in installed()]
    if missing:
        raise UsageError(f"--framework: {', '.join(missing)} is not installed here")
    color = _color(options.color)
    out = sys.stdout
    print(
        f"gradguard demo: {len(_gallery.cases(frameworks))} custom derivative rules in "
        f"{', '.join(frameworks)}; each is checked against finite differences.\n",
        file=out,
    )

    def shown(outcome: Any) -> None:
        if options.quiet:
            return
        case = outcome.case
        print(f"--- {case.framework}: {case.name} (expected: {case.expected})", file=out)
        if outcome.report is not None:
            outcome.report.show(out, color=color)
        else:
            print(f"could not run: {outcome.error}", file=out)
        print(file=out)
        out.flush()

    outcomes = _gallery.run(frameworks, on_outcome=shown)
    _summary(outcomes, color)
    wrong = [o for o in outcomes if not o.as_expected]
    if wrong:
        print(
            f"\n{len(wrong)} of {len(outcomes)} verdicts are not the expected ones: "
            + "; ".join(f"{o.case.framework}: {o.case.name} ({o.verdict})" for o in wrong),
            file=out,
        )
        return 1
    print(f"\nAll {len(outcomes)} verdicts are the expected ones.", file=out)
    return 0


def _summary(outcomes: list[Any], color: bool) -> None:
    rows = []
    for o in outcomes:
        diagnosis = "; ".join(o.report.diagnosis) if o.report is not None else o.error
        if o.report is not None and o.verdict == "inconclusive":
            diagnosis = "; ".join(o.report.reasons)
        rows.append(
            (
                o.case.framework,
                o.case.name,
                o.case.expected,
                o.verdict,
                "yes" if o.as_expected else "NO",
                _short(diagnosis),
            )
        )
    header = ("framework", "rule", "expected", "verdict", "as expected", "diagnosis")
    if color:
        from rich.console import Console

        from .report.render import STYLES, _table

        table = _table("summary")
        for name in header:
            table.add_column(name, overflow="fold")
        for r in rows:
            style = STYLES.get(r[3], "")
            table.add_row(
                r[0],
                r[1],
                r[2],
                f"[{style}]{r[3]}[/]",
                r[4] if r[4] == "yes" else "[red]NO[/]",
                r[5],
            )
        Console(highlight=False).print(table)
        return
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(5)]
    print("summary:")
    for r in [header, *rows]:
        print("  " + "  ".join(f"{r[i]:<{widths[i]}}" for i in range(5)) + "  " + r[5])


def _short(text: str, width: int = 80) -> str:
    """The diagnosis' headline: up to its first colon or parenthesis."""
    for mark in (": ", " ("):
        text = text.split(mark, 1)[0]
    return text if len(text) <= width else text[: width - 3] + "..."


# -- check ------------------------------------------------------------------------


def _check(options: argparse.Namespace) -> int:
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
            report.show(color=_color(options.color))
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader left; the verdict still decides the status
        _drop_stdout()
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


def _color(flag: bool | None) -> bool:
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
