"""The result of a check: a verdict, the numbers behind it, and where it went wrong."""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Literal

from .format import format_index, format_ratio, is_terminal
from .rows import folded_note, shown_rows, shown_value

__all__ = ["ArgumentSummary", "Mismatch", "Report", "Verdict"]

#: What a check answers; type checkers see a typo (``== "passed"``) as an error.
Verdict = Literal["pass", "fail", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "inconclusive")


@dataclass(frozen=True)
class Mismatch:
    """One compared quantity that disagrees (or could not be decided).

    For a full check it is one Jacobian entry: d ``output[output_index]`` /
    d ``argument[index]``. For a probe it is a random projection
    ``u . J . v`` (``kind="probe"``) and the indices are empty.
    """

    kind: str  # "entry", "cotangent", "probe"
    argument: str
    index: tuple[int, ...]
    output: str
    output_index: tuple[int, ...]
    analytical: float
    numerical: float
    error: float
    tolerance: float
    status: str  # "wrong" or "uncertain"
    part: str = ""  # "real" / "imag" for complex coordinates

    @property
    def ratio(self) -> float:
        return self.error / self.tolerance if self.tolerance > 0 else float("inf")

    def where(self) -> str:
        if self.kind == "probe":
            return self.argument
        arg = f"{self.argument}{format_index(self.index)}"
        if self.part:
            arg += f" ({self.part})"
        out = f"{self.output}{format_index(self.output_index)}"
        if self.kind == "cotangent":
            return f"{arg} (random cotangent {out})"
        return f"d {out} / d {arg}"


@dataclass(frozen=True)
class ArgumentSummary:
    """How one differentiated argument (a leaf of the inputs) fared."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    relative_error: float
    checked: int
    wrong: int
    uncertain: int


@dataclass
class Report:
    """What :func:`gradguard.check` found.

    ``verdict`` is ``"pass"``, ``"fail"`` or ``"inconclusive"``;
    ``relative_error`` is the seed metric ``||num - ana|| / (||num|| + ||ana||)``
    over everything compared; ``worst`` lists the worst compared entries
    (wrong or uncertain first).
    """

    verdict: Verdict
    relative_error: float
    framework: str
    mode: str
    direction: str
    order: int
    precision: str
    path: str
    evaluations: int
    seconds: float
    seed: int
    num_inputs: int
    num_outputs: int
    checked: int
    wrong: int
    uncertain: int
    worst: tuple[Mismatch, ...] = ()
    arguments: tuple[ArgumentSummary, ...] = ()
    diagnosis: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: For pictures (:meth:`plot`); empty by default. The V curve takes extra
    #: evaluations of f: ``report.plot(path, f, *args)`` computes it.
    #: ``(step, error, tolerance)`` of one random probe ``u . J . v`` along
    #: ``h * max(1, |x|) * v`` at a range of steps ``h``, both relative to
    #: the size of the terms summed: the error-versus-step V curve.
    step_curve: tuple[tuple[float, float, float], ...] = ()
    #: ``(step, error, tolerance)`` of the same probe at the check's own step.
    chosen_step: tuple[float, ...] = ()
    #: Full checks (filled by :func:`gradguard.check`): ``error / tolerance`` of
    #: every Jacobian entry, one row per (flattened) output entry, one column
    #: per (flattened) input entry.
    error_map: tuple[tuple[float, ...], ...] = ()
    #: ``(output, input)`` cells of ``error_map`` the check left undecided (a
    #: kink, noise, a tolerance too wide): pictures do not call them wrong.
    undecided_entries: tuple[tuple[int, int], ...] = ()

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """Strict JSON (NaN and infinities written as the strings ``"NaN"``,
        ``"Infinity"``, ``"-Infinity"``); :meth:`from_json` reads it back."""
        return json.dumps(_encode(self.to_dict()), indent=indent, default=str)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Inverse of :meth:`to_dict` (and of ``json.loads(report.to_json())``).
        Keys this version does not know are kept in ``extra``."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        extra = dict(data.get("extra") or {})
        for key, value in data.items():
            if key == "extra":
                continue
            if key not in known:
                extra[key] = value
            elif key == "worst":
                values[key] = tuple(_mismatch(m) for m in value)
            elif key == "arguments":
                values[key] = tuple(_argument(a) for a in value)
            else:
                values[key] = _decode(value)
        return cls(**values, extra=extra)

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return (
            f"<Report {self.verdict}: relative error {self.relative_error:.3g}, "
            f"{self.wrong} wrong and {self.uncertain} undecided of {self.checked} "
            f"({self.framework}, {self.mode})>"
        )

    def show(self, file: IO[str] | None = None, color: bool | None = None) -> None:
        """Print the report: a rich table on a terminal (when ``rich`` is
        installed and ``NO_COLOR`` is unset), plain text elsewhere."""
        file = sys.stdout if file is None else file
        if color is None:
            color = is_terminal(file)
        if color:
            try:
                from rich.console import Console
            except ImportError:
                color = False
            else:
                Console(file=file, highlight=False).print(self.__rich__())
                return
        print(str(self), file=file)

    def __rich__(self) -> Any:
        from .render import rich_report

        return rich_report(self)

    def plot(self, path: str | os.PathLike[str], f: Any = None, *args: Any, **options: Any) -> Path:
        """Draw the report's pictures into ``path`` (PNG, SVG, PDF: by suffix).

        The error-versus-step curve and, for full checks, the per-entry map
        of error / tolerance. A report that does not carry them draws them
        from ``f`` and ``args`` (the same as given to the check, with the
        same options, e.g. ``grad=``) when they are passed; otherwise its
        worst entries. Needs matplotlib (``pip install gradguard[plot]``).
        """
        from . import plot

        report = self
        if f is not None and plot.measure_step_curve is not None:
            report = plot.measure_step_curve(self, f, *args, **options)
        return plot.plot_report(report, path)

    def __str__(self) -> str:
        head = {
            "pass": "PASS: the gradient agrees with finite differences",
            "fail": "FAIL: the gradient disagrees with finite differences",
            "inconclusive": "INCONCLUSIVE: finite differences cannot decide",
        }[self.verdict]
        lines = [f"gradguard {head}"]
        lines.append(
            f"  {self.framework}, mode={self.mode}, direction={self.direction}, "
            f"order={self.order}, numerical side in {self.precision}, {self.path} evaluation"
        )
        lines.append(
            f"  relative error {self.relative_error:.3g}; {self.checked} compared, "
            f"{self.wrong} wrong, {self.uncertain} undecided; "
            f"{self.evaluations} evaluations of f in {self.seconds:.3g} s (seed {self.seed})"
        )
        for text in self.diagnosis:
            lines.append(f"  diagnosis: {text}")
        for text in self.reasons:
            lines.append(f"  why undecided: {text}")
        bad, folded = shown_rows(self.worst)
        if bad:
            lines.append("  worst entries:")
            width = max(len(m.where()) for m in bad)
            lines.append(
                f"    {'where':<{width}}  {'analytical':>13} {'numerical':>13} "
                f"{'|error|':>10} {'tolerance':>10} {'error/tol':>9}  status"
            )
            for m in bad:
                analytical = shown_value(m.analytical, m.numerical, m.tolerance)
                numerical = shown_value(m.numerical, m.analytical, m.tolerance)
                lines.append(
                    f"    {m.where():<{width}}  {analytical:>13} {numerical:>13} "
                    f"{m.error:>10.3g} {m.tolerance:>10.3g} {format_ratio(m.ratio):>9}  {m.status}"
                )
            if folded:
                lines.append(f"    {folded_note(folded, self.num_outputs == 1)}")
        if len(self.arguments) > 1 and self.verdict != "pass":
            lines.append("  by argument:")
            for a in self.arguments:
                lines.append(f"    {a.name} {a.shape} {a.dtype}: {_argument_result(a, self.mode)}")
        for text in self.notes:
            lines.append(f"  note: {text}")
        return "\n".join(lines)


def _argument_result(a: ArgumentSummary, mode: str) -> str:
    # Probe mode compares projections over every argument at once: an
    # argument with no entry of its own compared has no error of its own.
    if a.checked == 0:
        if mode == "probe":
            return "compared only within the probes, not entry by entry"
        return "nothing compared"
    return f"relative error {a.relative_error:.3g}, {a.wrong} of {a.checked} wrong"


# -- JSON --------------------------------------------------------------------

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode(value: Any) -> Any:
    """Non-finite floats as strings, so that the JSON is strict."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    """Lists back to tuples, the strings of :func:`_encode` back to floats."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, (list, tuple)):
        return tuple(_decode(v) for v in value)
    return value


def _mismatch(data: Any) -> Mismatch:
    if isinstance(data, Mismatch):
        return data
    known = {f.name for f in fields(Mismatch)}
    return Mismatch(**{k: _decode(v) for k, v in data.items() if k in known})


def _argument(data: Any) -> ArgumentSummary:
    if isinstance(data, ArgumentSummary):
        return data
    known = {f.name for f in fields(ArgumentSummary)}
    return ArgumentSummary(**{k: _decode(v) for k, v in data.items() if k in known})
