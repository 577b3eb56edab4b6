"""Entries of the point that are not finite (NaN, inf: an attention mask's
-inf): held fixed, and the check differentiates the finite entries alone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...adapters import Adapter
from ...core.layout import FlatLayout
from ...core.norms import all_finite
from .arrays import _device


@dataclass(frozen=True)
class _Held:
    """A differentiated argument with entries that are not finite (NaN,
    ±inf: an attention mask's -inf). Those are held fixed; the check
    differentiates the 1-D array of the finite entries, which the leaf call
    puts back into the argument (``Adapter.scatter_into``)."""

    #: The argument (the check's copy, held entries and all), framework array.
    base: Any
    #: Framework bool array shaped like ``base``: True where finite.
    mask: Any
    #: Framework int array, one per entry of ``base`` (flat): its place among
    #: the finite entries (0 where held).
    positions: Any
    #: NumPy: the flat index in the argument of each finite entry, in order.
    finite: Any
    #: The same, as a core array (to take the finite entries of a gradient).
    finite_core: Any
    shape: tuple[int, ...]

    def compact(self, core: Any, xp: Any) -> Any:
        """The finite entries' part of ``core``, an array shaped like the argument."""
        return xp.take(xp.reshape(core, (-1,)), self.finite_core, axis=0)


def _hold_nonfinite(
    core: Any, leaf: Any, name: str, adapter: Adapter, xp: Any, notes: list[str]
) -> tuple[_Held, Any] | None:
    """For an argument with entries that are not finite: how they are held
    fixed, and the 1-D core array of its finite entries, with a note that
    says so; None when every entry is finite."""
    if all_finite(core, xp):
        return None
    import numpy as np

    host = np.asarray(adapter.to_numpy(core)).reshape(-1)
    is_finite = np.isfinite(host)
    finite = np.flatnonzero(is_finite)
    positions = np.zeros(host.size, dtype=np.int32)
    positions[finite] = np.arange(finite.size, dtype=np.int32)
    device = _device(core)
    finite_core = xp.asarray(finite, device=device)
    held = _Held(
        base=leaf,
        mask=adapter.from_core(
            xp.asarray(is_finite.reshape(tuple(core.shape)), device=device), like=leaf
        ),
        positions=adapter.from_core(xp.asarray(positions, device=device), like=leaf),
        finite=finite,
        finite_core=finite_core,
        shape=tuple(int(s) for s in core.shape),
    )
    count = host.size - finite.size
    entries = "1 entry that is not finite" if count == 1 else f"{count} entries that are not finite"
    fixed = (
        "is held fixed; its derivative is not compared"
        if count == 1
        else "are held fixed; their derivatives are not compared"
    )
    notes.append(f"{name}: {entries} ({_nonfinite_kinds(host)}) {fixed}")
    return held, held.compact(core, xp)


def _nonfinite_kinds(host: Any) -> str:
    """Which of NaN, inf and -inf a NumPy array holds (in either part)."""
    import numpy as np

    parts = [host.real, host.imag] if np.iscomplexobj(host) else [host]
    kinds = [
        kind
        for kind, test in (("NaN", np.isnan), ("inf", np.isposinf), ("-inf", np.isneginf))
        if any(bool(test(p).any()) for p in parts)
    ]
    return ", ".join(kinds)


class _HeldLayout(FlatLayout):
    """The layout of the differentiated arrays where some are the finite
    entries of their argument alone (see _Held): ``owner`` names an entry by
    its index in the argument itself, as the caller knows it."""

    def __init__(self, layout: FlatLayout, held: list[_Held | None]) -> None:
        slots = layout.slots
        super().__init__([s.shape for s in slots], [s.is_complex for s in slots])
        self.held = held

    def owner(self, coordinate: int) -> tuple[int, tuple[int, ...], str]:
        slot, index, part = super().owner(coordinate)
        held = self.held[slot]
        if held is None:
            return slot, index, part
        return slot, _unravel(int(held.finite[index[0]]), held.shape), part


def _unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    import numpy as np

    return tuple(int(i) for i in np.unravel_index(flat_index, shape)) if shape else ()
