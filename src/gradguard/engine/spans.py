"""Ranges of columns ``(first, stop)``: runs of flags, gaps, merging."""

from __future__ import annotations


def runs(flags: list[bool]) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal flags: ``(first, stop, flag)``."""
    found: list[tuple[int, int, bool]] = []
    for i, flag in enumerate(flags):
        if found and found[-1][2] == flag:
            found[-1] = (found[-1][0], i + 1, flag)
        else:
            found.append((i, i + 1, flag))
    return found


def extend(ranges: list[tuple[int, int]], first: int, last: int) -> None:
    """Append ``first:last`` to sorted ``ranges``, merging with the last if adjacent."""
    if ranges and ranges[-1][1] == first:
        ranges[-1] = (ranges[-1][0], last)
    else:
        ranges.append((first, last))


def chunks(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Each range cut into pieces of at most ``size`` columns, in order."""
    return [
        (start, min(last, start + size))
        for first, last in ranges
        for start in range(first, last, size)
    ]


Ranges = list[tuple[int, int]]


def subtract(ranges: Ranges, removed: Ranges) -> Ranges:
    """The parts of the sorted, disjoint ``ranges`` outside the sorted,
    disjoint ``removed``."""
    left = []
    for lo, hi in ranges:
        at = lo
        for a, b in removed:
            if b <= at or a >= hi:
                continue
            if a > at:
                left.append((at, a))
            at = max(at, b)
        if at < hi:
            left.append((at, hi))
    return left
