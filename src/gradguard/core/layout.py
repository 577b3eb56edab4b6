"""Many arrays of any shape, real or complex, as one flat real vector.

The checks work in real coordinates: a complex entry is two coordinates
(real part, imaginary part). That makes one definition of "the Jacobian"
serve every framework, whatever its complex-gradient convention; adapters
only say how their cotangents map onto these coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from array_api_compat import device

__all__ = ["FlatLayout", "Slot"]


@dataclass(frozen=True)
class Slot:
    """Where one array lives in the flat vector."""

    shape: tuple[int, ...]
    is_complex: bool
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def width(self) -> int:
        """Real coordinates this array takes."""
        return self.size * (2 if self.is_complex else 1)


class FlatLayout:
    """Maps a list of arrays to ``(k, n)`` real coordinates and back, batched."""

    def __init__(self, shapes: list[tuple[int, ...]], complex_flags: list[bool]) -> None:
        slots = []
        offset = 0
        for shape, is_complex in zip(shapes, complex_flags):
            slot = Slot(tuple(int(s) for s in shape), bool(is_complex), offset)
            slots.append(slot)
            offset += slot.width
        self.slots: tuple[Slot, ...] = tuple(slots)
        self.size = offset

    @classmethod
    def of(cls, arrays: list[Any], xp: Any) -> FlatLayout:
        return cls(
            [tuple(a.shape) for a in arrays],
            [xp.isdtype(a.dtype, "complex floating") for a in arrays],
        )

    def flatten(self, batched: list[Any], xp: Any, dtype: Any) -> Any:
        """``[(k, *shape_i)] -> (k, n)`` real ``dtype``."""
        k = batched[0].shape[0] if batched else 0
        return self._join(batched, (k,), xp, dtype)

    def flatten_one(self, arrays: list[Any], xp: Any, dtype: Any) -> Any:
        """``[shape_i] -> (n,)``."""
        return self._join(arrays, (), xp, dtype)

    def _join(self, arrays: list[Any], lead: tuple[int, ...], xp: Any, dtype: Any) -> Any:
        # Arrays already in shape and dtype pass through untouched: these
        # calls run several times per check, where each skipped call counts.
        columns = []
        for slot, a in zip(self.slots, arrays):
            shape = (*lead, slot.size)
            flat = a if tuple(a.shape) == shape else xp.reshape(a, shape)
            if slot.is_complex:
                columns.append(xp.astype(xp.real(flat), dtype, copy=False))
                columns.append(xp.astype(xp.imag(flat), dtype, copy=False))
            else:
                columns.append(flat if flat.dtype == dtype else xp.astype(flat, dtype, copy=False))
        if not columns:
            return xp.zeros((*lead, 0), dtype=dtype, device=device(arrays[0]) if arrays else None)
        if len(columns) == 1:
            return columns[0]
        return xp.concat(columns, axis=-1)

    def unflatten(self, flat: Any, xp: Any, dtypes: list[Any]) -> list[Any]:
        """``(k, n) -> [(k, *shape_i)]`` with each array cast to ``dtypes[i]``
        (a complex dtype for complex slots)."""
        k = flat.shape[0]
        out = []
        for slot, dtype in zip(self.slots, dtypes):
            start = slot.offset
            if slot.is_complex:
                real = flat[:, start : start + slot.size]
                imag = flat[:, start + slot.size : start + 2 * slot.size]
                unit = xp.asarray(1j, dtype=dtype)
                part = xp.astype(real, dtype) + xp.astype(imag, dtype) * unit
            else:
                whole = start == 0 and slot.size == flat.shape[1]
                part = flat if whole else flat[:, start : start + slot.size]
                part = part if part.dtype == dtype else xp.astype(part, dtype, copy=False)
            shape = (k, *slot.shape)
            out.append(part if tuple(part.shape) == shape else xp.reshape(part, shape))
        return out

    def owner(self, coordinate: int) -> tuple[int, tuple[int, ...], str]:
        """Which array, which index and which part (``""``, ``"real"``,
        ``"imag"``) a flat coordinate belongs to."""
        for i, slot in enumerate(self.slots):
            if slot.offset <= coordinate < slot.offset + slot.width:
                local = coordinate - slot.offset
                part = ""
                if slot.is_complex:
                    part = "real" if local < slot.size else "imag"
                    local %= slot.size
                index = _unravel(local, slot.shape)
                return i, index, part
        raise IndexError(coordinate)


def _unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    index = []
    for dim in reversed(shape):
        index.append(flat_index % dim if dim else 0)
        flat_index = flat_index // dim if dim else 0
    return tuple(reversed(index))
