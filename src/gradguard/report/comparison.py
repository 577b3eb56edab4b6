"""The result of :func:`gradguard.compare`: one verdict over several frameworks'
implementations, each one's own :class:`~gradguard.Report`, and where they disagree."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from .format import is_terminal
from .report import Report, _encode

__all__ = ["Comparison", "Disagreement"]


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

        rows: list[tuple[str, str, str, str, str]] = []
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
            color = is_terminal(file)
        if color:
            try:
                from rich.console import Console
            except ImportError:
                pass
            else:
                from .render import rich_comparison

                console = Console(file=file, highlight=False)
                console.print(rich_comparison(self))
                for name in self.frameworks:
                    if self.checks[name].verdict != "pass":
                        console.print(f"[bold]{name}'s own check:[/bold]")
                        console.print(self.checks[name].__rich__())
                return
        print(str(self), file=file)

    def __rich__(self) -> Any:
        from .render import rich_comparison

        return rich_comparison(self)


def _times(ratio: float) -> str:
    return "inf x" if math.isinf(ratio) else f"{ratio:.3g} x"
