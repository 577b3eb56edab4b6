"""What every strategy measures with: the parts of one check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .analytical import Analytical
from .confirm import Confirmation
from .evaluation import Evaluator
from .ledger import Ledger
from .numerical import Numerical
from .problem import _device, _Problem


@dataclass
class Parts:
    """The problem, its two sides, the re-measures at other steps and the
    books, as one check's strategies share them. ``rng`` is the check's one
    generator: the order of draws is part of what makes a check repeatable."""

    problem: _Problem
    rng: np.random.Generator
    numerical: Numerical
    analytical: Analytical
    confirmation: Confirmation
    ledger: Ledger

    @property
    def xp(self) -> Any:
        return self.problem.xp

    @property
    def device(self) -> Any:
        return _device(self.problem.x0)

    @property
    def evaluator(self) -> Evaluator:
        return self.numerical.evaluator
