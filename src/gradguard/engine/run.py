"""One check: its parts built, one strategy picked, the books made a Report.

The strategies (:mod:`.strategies`) are chosen here and only here
(:meth:`_Run._strategy`): probe mode measures random projections; full mode
compares every entry column by column, float64 reverse checks first
settling what they can (coloured columns that share no output, then, for
large checks, columns from two points). Tolerances, verdicts and diagnosis
come from :mod:`gradguard.core`.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

from ..report.report import Report
from .analytical import Analytical
from .confirm import Confirmation
from .evaluation import Evaluator
from .ledger import Ledger
from .numerical import Numerical
from .parts import Parts
from .problem import _Problem, _rng
from .report_writer import write_report
from .strategies import Strategy, colouring, probes, screen
from .strategies.colouring import Colouring
from .strategies.columns import ColumnByColumn, SettlerKind
from .strategies.probes import RandomProbes
from .strategies.screen import Screen


class _Run:
    """The numerical and analytical sides of one check, and their comparison."""

    def __init__(
        self,
        problem: _Problem,
        *,
        seed: int,
        eps: float | None,
        accuracy: int | None,
        method: str,
        rtol: Any,
        atol: Any,
        vectorize: bool,
        executor: Executor | None,
        progress: bool | None,
    ):
        self.seed = seed
        rng = _rng(seed)
        numerical = Numerical(
            problem,
            rng,
            eps=eps,
            accuracy=accuracy,
            method=method,
            vectorize=vectorize,
            executor=executor,
            progress=progress,
        )
        ledger = Ledger(
            problem,
            rtol=rtol,
            atol=atol,
            eps_values=numerical.eps_values,
            floor_scale=numerical.floor_scale,
        )
        self.parts = Parts(
            problem,
            rng,
            numerical,
            Analytical(problem, rng),
            Confirmation(numerical, ledger),
            ledger,
        )

    @property
    def evaluator(self) -> Evaluator:
        return self.parts.evaluator

    def measure(self, mode: str, direction: str, probe_count: int | None = None) -> None:
        """Compare the two sides in ``mode`` ("full" or "probe") and ``direction``."""
        self._strategy(mode, direction, probe_count).measure()

    def _strategy(self, mode: str, direction: str, probe_count: int | None) -> Strategy:
        """The one place where a way of measuring is chosen."""
        parts = self.parts
        if mode == "probe":
            if probe_count is None:
                return RandomProbes(parts, direction, self.default_probes(), second_if_open=True)
            return RandomProbes(parts, direction, probe_count, second_if_open=False)
        # Settlers, in order: coloured columns first, then columns from two points.
        settlers: list[SettlerKind] = []
        if colouring.applies(parts, direction):
            settlers.append(Colouring)
        if screen.applies(parts, direction):
            settlers.append(Screen)
        return ColumnByColumn(parts, direction, settlers)

    def default_probes(self) -> int:
        return probes.default_count(self.parts)

    def report(self, mode: str, direction: str, order: int, seconds: float) -> Report:
        return write_report(self.parts, mode, direction, order, seconds, self.seed)
