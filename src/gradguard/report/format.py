"""Small text helpers shared by the report's plain and rich renderings."""

from __future__ import annotations

import math
import os
from typing import IO

__all__ = ["format_index", "format_ratio", "is_terminal"]


def format_index(index: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(i) for i in index) + "]" if index else ""


def format_ratio(ratio: float) -> str:
    if math.isinf(ratio):
        return "inf"
    return f"{ratio:.3g}" if ratio < 1e4 else f"{ratio:.1e}"


def is_terminal(file: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed file
        return False
