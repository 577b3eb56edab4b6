"""Which cells of the per-entry map the check left undecided.

The map (``Report.error_map``) holds error / tolerance; above 1 is wrong
only where ``f`` is smooth and the measurement decides. A picture that
paints every cell above 1 red would call undecided entries (a kink, noise)
wrong: the report lists those cells, and the picture gives them their own colour.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.verdict import Entries

__all__ = ["undecided_cells"]


def undecided_cells(
    entries: Entries, start: int, to_numpy: Callable[[Any], np.ndarray]
) -> list[tuple[int, int]]:
    """``(output, input)`` of the undecided entries of a batch of Jacobian
    entries laid out ``(inputs, outputs)``, its first input at ``start``."""
    if not entries.exceeding:
        return []  # compare()'s quick path: nothing exceeds, nothing is undecided
    flags = entries.uncertain
    host = flags if isinstance(flags, np.ndarray) else to_numpy(flags)
    inputs, outputs = np.nonzero(np.asarray(host, dtype=bool))
    return [(int(o), start + int(i)) for i, o in zip(inputs, outputs)]
