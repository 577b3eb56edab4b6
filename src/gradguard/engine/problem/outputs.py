"""What f returns: the outputs compared, and outputs that cannot be checked
refused with the fix."""

from __future__ import annotations

import numbers
from typing import Any

from ..._errors import ArgumentError, ArgumentTypeError
from ...adapters import Adapter
from ...core.norms import all_finite
from .precision import _describe


def _check_outputs(outputs: list[Any], names: list[str], xp: Any) -> None:
    """f must be finite at x (empty outputs are: nothing to compare)."""
    for o, name in zip(outputs, names):
        if not all_finite(o, xp):
            raise ArgumentError(
                f"f: returned NaN or inf in {name} at the point itself; finite differences "
                "need f finite at x: check at another x"
            )


def _differentiable_outputs(
    outputs: list[Any],
    paths: list[str],
    xp: Any,
    undifferentiated: list[int],
    notes: list[str],
) -> list[int]:
    """The positions of the outputs to compare, noting the others: integer
    and bool outputs (indices, pivots, masks), and floating outputs the
    framework does not differentiate while it does others (torch's
    native_layer_norm's mean and rstd). As gradcheck: when no floating
    output is differentiated, all are compared (their derivative is then 0:
    a detached f is caught)."""
    floating = [
        j
        for j, o in enumerate(outputs)
        if xp.isdtype(o.dtype, ("real floating", "complex floating"))
    ]
    numeric = ("integral", "bool")
    integers = [j for j, o in enumerate(outputs) if xp.isdtype(o.dtype, numeric)]
    others = [j for j in range(len(outputs)) if j not in floating and j not in integers]
    if others:
        j = others[0]
        raise ArgumentTypeError(
            f"f: output {_name('out', paths[j])} has dtype {outputs[j].dtype}; "
            "every output must be a numeric array or scalar"
        )
    skipped = [j for j in floating if j in undifferentiated]
    if len(skipped) == len(floating):
        skipped = []
    if integers:
        described = ", ".join(
            f"{_name('out', paths[j])} ({_describe([outputs[j].dtype])})" for j in integers
        )
        notes.append(f"not compared: {described}; integer and bool outputs have no derivative")
    if skipped:
        described = ", ".join(_name("out", paths[j]) for j in skipped)
        notes.append(
            f"not compared: {described}; the framework does not differentiate "
            "these outputs (they do not require grad), as gradcheck leaves them out"
        )
    return [j for j in floating if j not in skipped]


def _name(prefix: str, path: str) -> str:
    return path if path.startswith(prefix) else f"{prefix}{path}" if path else prefix


def _output_arrays(outs: list[Any], paths: list[str], adapter: Adapter, like: Any) -> list[Any]:
    """f's output leaves as framework arrays; refuses what cannot be one."""
    if not outs:
        raise ArgumentTypeError("f: returned an empty container; it must return a float array")
    arrays = []
    for out, path in zip(outs, paths):
        if adapter.owns(out):
            arrays.append(out)
        elif isinstance(out, numbers.Number) and not isinstance(out, bool):
            arrays.append(adapter.asarray_like(out, like))
        else:
            raise ArgumentTypeError(
                f"f: output {_name('out', path)} is {type(out).__name__}; f must return "
                f"{adapter.name} arrays or floats (or containers of them)"
            )
    return arrays
