"""The result of a check: a verdict, the numbers behind it, and where it went wrong."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["ArgumentSummary", "Mismatch", "Report"]

VERDICTS = ("pass", "fail", "inconclusive")


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
        arg = f"{self.argument}{_index(self.index)}"
        if self.part:
            arg += f" ({self.part})"
        out = f"{self.output}{_index(self.output_index)}"
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

    verdict: str
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

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        bad = [m for m in self.worst if m.status != "ok"]
        if bad:
            lines.append("  worst entries:")
            width = max(len(m.where()) for m in bad)
            lines.append(
                f"    {'where':<{width}}  {'analytical':>13} {'numerical':>13} "
                f"{'|error|':>10} {'tolerance':>10}  status"
            )
            for m in bad:
                lines.append(
                    f"    {m.where():<{width}}  {m.analytical:>13.6g} {m.numerical:>13.6g} "
                    f"{m.error:>10.3g} {m.tolerance:>10.3g}  {m.status}"
                )
        if len(self.arguments) > 1 and self.verdict != "pass":
            lines.append("  by argument:")
            for a in self.arguments:
                lines.append(
                    f"    {a.name} {a.shape} {a.dtype}: relative error {a.relative_error:.3g}, "
                    f"{a.wrong} of {a.checked} wrong"
                )
        for text in self.notes:
            lines.append(f"  note: {text}")
        return "\n".join(lines)


def _index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]" if index else ""
