"""The ``gradguard`` command.

``gradguard demo``
    Check a gallery of correct and deliberately broken custom derivative
    rules in every installed framework; exit 0 when every verdict is the
    expected one.

``gradguard check FILE.py:FUNC --shape 3,4 [--shape ...]``
    Check FUNC at random inputs of the given shapes (one ``--shape`` per
    positional argument; ``--shape ''`` for a scalar). The framework is the
    one FILE imports (or ``--framework``). NumPy has no autodiff: define
    ``FUNC_grad(*args)`` (the gradient of a scalar FUNC) or
    ``FUNC_vjp(cotangent, *args)`` next to FUNC in the same file.

Exit status: 0 pass, 1 fail, 2 inconclusive or a usage error.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["main"]

EXIT = {"pass": 0, "fail": 1, "inconclusive": 2}
USAGE_ERROR = 2
DTYPES = ("float64", "float32", "float16", "complex128", "complex64")


class UsageError(Exception):
    """A mistake in the command line or in what it points to: a message, no traceback."""


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
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


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
    demo.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)

    check = commands.add_parser(
        "check",
        help="check FUNC in FILE.py at random inputs",
        description="Check the derivatives of FUNC (defined in FILE.py) at random inputs of the "
        "given shapes. For NumPy, define FUNC_grad(*args) (gradient of a scalar FUNC) or "
        "FUNC_vjp(cotangent, *args) in the same file.",
        epilog="Exit status: 0 pass, 1 fail, 2 inconclusive or a usage error.",
    )
    check.add_argument("target", metavar="FILE.py:FUNC", help="the function to check")
    check.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="3,4",
        help="shape of the next positional argument (repeat for each; '' for a scalar)",
    )
    check.add_argument("--dtype", default="float64", choices=DTYPES)
    check.add_argument(
        "--framework",
        choices=("numpy", "torch", "jax", "tensorflow"),
        help="framework of the inputs (default: the one FILE.py imports)",
    )
    check.add_argument("--mode", default="auto", choices=("auto", "full", "probe"))
    check.add_argument("--direction", default="rev", choices=("rev", "fwd", "both"))
    check.add_argument("--order", default=1, type=int, choices=(1, 2))
    check.add_argument("--seed", default=0, type=_non_negative, help="inputs and probes (0)")
    check.add_argument("--json", metavar="OUT.json", help="write the report as JSON ('-': stdout)")
    check.add_argument("--plot", metavar="OUT.png", help="draw the report (needs matplotlib)")
    check.add_argument("--color", action=argparse.BooleanOptionalAction, default=None)
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
    import numpy as np

    from ._errors import GradguardError

    path, name = _split_target(options.target)
    shapes = [_shape(s) for s in options.shape]
    if not shapes:
        raise UsageError("--shape: give the shape of each positional argument, e.g. --shape 3,4")
    module = _load(path)
    f = getattr(module, name, None)
    if f is None:
        defined = sorted(
            k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
        )
        raise UsageError(
            f"{path} defines no {name!r}"
            + (f" (it defines {', '.join(defined)})" if defined else "")
        )
    if not callable(f):
        raise UsageError(f"{path}:{name} is a {type(f).__name__}, not a function")
    rule = {
        key: getattr(module, f"{name}_{key}")
        for key in ("grad", "vjp")
        if callable(getattr(module, f"{name}_{key}", None))
    }
    _arity(f, path, name, len(shapes))
    if len(rule) == 2:
        raise UsageError(f"{path} defines both {name}_grad and {name}_vjp; keep one")
    fw_name = options.framework or _framework_of(module, path, rule)
    from ._frameworks import framework

    try:
        fw = framework(fw_name)
    except GradguardError as exc:
        raise UsageError(str(exc)) from None
    if fw_name == "numpy" and not rule:
        raise UsageError(
            f"NumPy has no autodiff: define {name}_grad(*args) (the gradient of a scalar "
            f"{name}) or {name}_vjp(cotangent, *args) in {path}"
        )
    rng = np.random.default_rng(options.seed)
    host = [_random(rng, shape, options.dtype) for shape in shapes]
    with fw.float64() if options.dtype in ("float64", "complex128") else _null():
        args = tuple(fw._asarray(a) for a in host)
        check_options: dict[str, Any] = {
            "mode": options.mode,
            "direction": options.direction,
            "order": options.order,
            "seed": options.seed,
            **rule,
        }
        from ._check import check

        try:
            report = check(f, *args, **check_options)
        except GradguardError as exc:
            raise UsageError(str(exc)) from None
        except Exception as exc:
            raise UsageError(_user_error(exc, path, f"{name} raised")) from None
        if options.plot:
            report = _plot(report, options.plot, f, args, check_options)
    if options.json == "-":
        print(report.to_json())
    else:
        report.show(color=_color(options.color))
        if options.json:
            try:
                Path(options.json).write_text(report.to_json() + "\n", encoding="utf-8")
            except OSError as exc:
                raise UsageError(f"--json: cannot write {options.json}: {exc.strerror}") from None
    return EXIT[report.verdict]


def _plot(report: Any, path: str, f: Any, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
    from ._errors import GradguardError
    from .engine.step_curve import add_plot_data
    from .report.plot import plot_report

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError(
            "--plot: matplotlib is not installed; pip install 'gradguard[plot]'"
        ) from None
    rule = {k: options[k] for k in ("grad", "vjp") if k in options}
    report = add_plot_data(report, f, *args, seed=options["seed"], **rule)
    try:
        plot_report(report, path)
    except (OSError, GradguardError, ValueError) as exc:
        raise UsageError(f"--plot: cannot write {path}: {exc}") from None
    return report


def _arity(f: Any, path: Path, name: str, count: int) -> None:
    """One --shape per positional argument: say so before f fails on it."""
    import inspect

    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    variadic = any(p.kind == p.VAR_POSITIONAL for p in params)
    if count < len(required) or (count > len(positional) and not variadic):
        names = ", ".join(p.name for p in positional)
        raise UsageError(
            f"{path}:{name} takes {len(required)} positional argument(s) ({names}); "
            f"got {count} --shape; give one --shape per argument"
        )


def _split_target(target: str) -> tuple[Path, str]:
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise UsageError(f"expected FILE.py:FUNC, got {target!r}")
    if not name.isidentifier():
        raise UsageError(f"{name!r} is not a Python function name")
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"{file}: no such file")
    return path, name


def _shape(text: str) -> tuple[int, ...]:
    text = text.strip().strip("()[]")
    if not text:
        return ()
    try:
        shape = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--shape: expected integers separated by commas, got {text!r}") from None
    if any(s < 0 for s in shape):
        raise UsageError(f"--shape: sizes must be non-negative, got {text!r}")
    return shape


def _random(rng: Any, shape: tuple[int, ...], dtype: str) -> Any:
    import numpy as np

    values = rng.standard_normal(shape)
    if dtype.startswith("complex"):
        values = values + 1j * rng.standard_normal(shape)
    return np.asarray(values, dtype=dtype)


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
