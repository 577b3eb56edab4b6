"""Which of a report's worst entries its table shows, and how their values read.

A reverse check compares each Jacobian entry as itself (``d out / d x[i]``,
a one-hot cotangent) and inside products with random cotangents (``u . J``).
Where an entry is wrong, the products that contain it are wrong too: for a
scalar output they are the same entry times a random ``u``. Listing all of
them shows one entry three times with three analytical values. The table
shows each input entry once (the entry itself when it is among the worst)
and says how many product rows it folded; ``report.worst`` and the JSON
keep them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import Mismatch

__all__ = ["folded_note", "shown_rows", "shown_value"]

#: A value this much smaller than the other side's and within the tolerance
#: reads as zero: what f resolves there is rounding, not a derivative.
NEGLIGIBLE = 1e-3


def shown_rows(worst: tuple[Mismatch, ...]) -> tuple[list[Mismatch], int]:
    """The undecided and wrong rows to show, and how many product rows at the
    same input entries they stand for."""
    bad = [m for m in worst if m.status != "ok"]
    entries = {_input(m) for m in bad if m.kind == "entry"}
    shown: list[Mismatch] = []
    seen: set[tuple[str, tuple[int, ...], str]] = set()
    folded = 0
    for m in bad:
        key = _input(m)
        if m.kind == "cotangent" and (key in entries or key in seen):
            folded += 1
            continue
        seen.add(key)
        shown.append(m)
    return shown, folded


def folded_note(folded: int, scalar_output: bool) -> str:
    if not folded:
        return ""
    what = "for a scalar f, the entry times a random u" if scalar_output else "sums over outputs"
    return (
        f"(one row per input entry; {folded} more at these entries are products with random "
        f"cotangents u · J ({what}): report.worst and the JSON keep them)"
    )


def shown_value(value: float, other: float, tolerance: float) -> str:
    """``value`` as the table prints it: ``~0`` where it is rounding next to
    zero (within the tolerance, and negligible beside the other side)."""
    if value == 0:
        return "0"  # -0.0 too: a sign on zero says nothing here
    if abs(value) <= tolerance and abs(value) <= NEGLIGIBLE * abs(other):
        return "~0"
    return f"{value:.6g}"


def _input(m: Mismatch) -> tuple[str, tuple[int, ...], str]:
    return (m.argument, m.index, m.part)
