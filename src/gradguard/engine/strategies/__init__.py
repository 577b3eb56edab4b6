"""Ways of measuring, one module each; :mod:`gradguard.engine.run` picks one.

- :mod:`.probes`: random probes u . J . v (probe mode); a wrong one is split
  until the wrong entries are named (:mod:`.locate`, :mod:`.locate_forward`).
- :mod:`.columns`: column by column, every Jacobian entry (full mode).
- :mod:`.colouring`: columns that share no output, one stencil per group,
  from the analytical Jacobian's pattern (settles before the stencil).
- :mod:`.screen`: columns from two points x +- h (settles before the stencil).
- :mod:`.settled`: what a settler is, and the book settled columns share.
- :mod:`.reverse_jacobian`: the analytical Jacobian from one-hot cotangents.
"""

from __future__ import annotations

from typing import Protocol


class Strategy(Protocol):
    """A way of measuring: compares the two sides and records it in the ledger."""

    def measure(self) -> None: ...
