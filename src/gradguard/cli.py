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
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ._cli_check import check_command, drop_stdout
from ._cli_check import color as color_flag
from ._cli_inputs import UsageError

__all__ = ["main"]

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
        return check_command(options)
    except UsageError as exc:
        print(f"gradguard: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("gradguard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gradguard ... | head`: the reader left, nothing to say
        drop_stdout()
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

    _add_demo(commands)
    check = _add_check(commands)
    _add_inputs_options(check)
    _add_check_options(check)
    _add_output_options(check)
    return parser


def _add_demo(commands: Any) -> None:
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


def _add_check(commands: Any) -> argparse.ArgumentParser:
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
    return check


def _add_inputs_options(check: argparse.ArgumentParser) -> None:
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


def _add_check_options(check: argparse.ArgumentParser) -> None:
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


def _add_output_options(check: argparse.ArgumentParser) -> None:
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
    color = color_flag(options.color)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
