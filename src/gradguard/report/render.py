"""Terminal rendering with rich: the same content as ``str(report)``, as tables.

Imported only when a report is shown on a terminal, so that ``rich`` stays
optional and ``import gradguard`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .comparison import Comparison
    from .report import Report

__all__ = ["rich_comparison", "rich_report"]

STYLES = {"pass": "bold green", "fail": "bold red", "inconclusive": "bold yellow"}
HEADLINES = {
    "pass": "the gradient agrees with finite differences",
    "fail": "the gradient disagrees with finite differences",
    "inconclusive": "finite differences cannot decide",
}
STATUS = {"wrong": "red", "uncertain": "yellow", "ok": "green"}


def badge(verdict: str) -> Any:
    from rich.text import Text

    return Text(f" {verdict.upper()} ", style=f"reverse {STYLES.get(verdict, 'bold')}")


def _table(title: str | None = None) -> Any:
    from rich import box
    from rich.table import Table

    return Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        header_style="bold",
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )


def rich_report(report: Report) -> Any:
    from rich.console import Group
    from rich.text import Text

    from .format import format_ratio
    from .rows import folded_note, shown_rows, shown_value

    parts: list[Any] = []
    head = Text.assemble(badge(report.verdict), " ", (HEADLINES[report.verdict], "bold"))
    parts.append(head)
    parts.append(
        Text(
            f"{report.framework}, mode={report.mode}, direction={report.direction}, "
            f"order={report.order}, numerical side in {report.precision}, "
            f"{report.path} evaluation",
            style="dim",
        )
    )
    parts.append(
        Text.assemble(
            "relative error ",
            (f"{report.relative_error:.3g}", "bold"),
            f"; {report.checked} compared, ",
            (f"{report.wrong} wrong", "red" if report.wrong else ""),
            ", ",
            (f"{report.uncertain} undecided", "yellow" if report.uncertain else ""),
            f"; {report.evaluations} evaluations of f in {report.seconds:.3g} s "
            f"(seed {report.seed})",
        )
    )
    for text in report.diagnosis:
        parts.append(Text.assemble(("diagnosis: ", "bold red"), text))
    for text in report.reasons:
        parts.append(Text.assemble(("why undecided: ", "bold yellow"), text))
    bad, folded = shown_rows(report.worst)
    if bad:
        table = _table("worst entries")
        table.add_column("status", no_wrap=True)
        table.add_column(
            "where", overflow="fold", min_width=min(40, max(len(m.where()) for m in bad))
        )
        # The same columns as str(report): the tolerance is what the error is held to.
        for name in ("analytical", "numerical", "|error|", "tolerance", "error/tol"):
            table.add_column(name, justify="right", no_wrap=True)
        for m in bad:
            table.add_row(
                Text(m.status, style=STATUS.get(m.status, "")),
                m.where(),
                shown_value(m.analytical, m.numerical, m.tolerance),
                shown_value(m.numerical, m.analytical, m.tolerance),
                f"{m.error:.3g}",
                f"{m.tolerance:.3g}",
                format_ratio(m.ratio),
            )
        parts.append(table)
        if folded:
            parts.append(Text(folded_note(folded, report.num_outputs == 1), style="dim"))
    if len(report.arguments) > 1 and report.verdict != "pass":
        table = _table("by argument")
        for name in ("argument", "shape", "dtype"):
            table.add_column(name)
        for name in ("relative error", "wrong", "checked"):
            table.add_column(name, justify="right", no_wrap=True)
        for a in report.arguments:
            # No entry of its own compared (probe mode): no error of its own.
            own = a.checked > 0
            table.add_row(
                a.name,
                str(a.shape),
                a.dtype,
                f"{a.relative_error:.3g}" if own else "-",
                Text(str(a.wrong), style="red" if a.wrong else "") if own else "-",
                str(a.checked) if own or report.mode != "probe" else "in the probes",
            )
        parts.append(table)
    for text in report.notes:
        parts.append(Text(f"note: {text}", style="dim"))
    return Group(*parts)


def rich_comparison(comparison: Comparison) -> Any:
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [
        Text.assemble(badge(comparison.verdict), " ", (comparison.headline(), "bold"))
    ]
    table = _table()
    table.add_column("framework")
    table.add_column("value", justify="right")
    table.add_column("gradient", justify="right")
    table.add_column("vs finite differences")
    for row in comparison.rows():
        name, value, gradient, check_verdict, check_error = row
        table.add_row(
            name,
            value,
            gradient,
            Text.assemble(
                (check_verdict, STYLES.get(check_verdict, "")), f" (relative error {check_error})"
            ),
        )
    parts.append(table)
    if comparison.disagreements:
        table = _table("disagreements")
        table.add_column("who")
        table.add_column("what")
        table.add_column("where")
        for name in ("theirs", "the others", "|difference|", "tolerance"):
            table.add_column(name, justify="right", no_wrap=True)
        for d in comparison.disagreements:
            table.add_row(
                Text(d.framework, style="red"),
                d.quantity,
                d.where,
                f"{d.value:.6g}",
                f"{d.expected:.6g}",
                f"{d.difference:.3g}",
                f"{d.tolerance:.3g}",
            )
        parts.append(table)
    for text in comparison.notes:
        parts.append(Text(f"note: {text}", style="dim"))
    return Group(*parts)
