"""The dtypes of the numerical side: float64 when f accepts it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..._errors import ArgumentError
from ...adapters import Adapter
from .arrays import _device


def _widest(xp: Any, dtypes: list[Any]) -> Any:
    return xp.result_type(*dtypes) if len(dtypes) > 1 else dtypes[0]


def _real_dtype(xp: Any, dtype: Any) -> Any:
    if xp.isdtype(dtype, "complex floating"):
        return xp.float64 if dtype == xp.complex128 else xp.float32
    return dtype


def _wide_dtype(xp: Any, dtype: Any) -> Any:
    return xp.complex128 if xp.isdtype(dtype, "complex floating") else xp.float64


def _choose_precision(
    fn: Callable[..., list[Any]],
    adapter: Adapter,
    xp: Any,
    diff_core: list[Any],
    primals: list[Any],
    precision: str,
    notes: list[str],
) -> tuple[list[Any], list[Any], str]:
    """Dtypes for the numerical side: float64 if f accepts it, else float32
    for inputs narrower than that, else the inputs' own."""
    native = [c.dtype for c in diff_core]
    ladder = [(xp.float64, xp.complex128)]
    if precision == "native":
        ladder = []
    elif precision == "auto":
        ladder.append((xp.float32, xp.complex64))
    reasons: list[str] = []
    for real, complex_ in ladder:
        wanted = [complex_ if xp.isdtype(d, "complex floating") else real for d in native]
        if wanted == native:
            if reasons:
                notes.append(f"numerical side in {_describe(native)} because " + "; ".join(reasons))
            return native, primals, _describe(native)
        if any(_bits(xp, w) < _bits(xp, d) for w, d in zip(wanted, native)):
            continue  # never evaluate below the caller's own precision
        if real == xp.float64 and not adapter.float64_available(primals[0]):
            reason = f"{adapter.name} has float64 disabled here"
            if adapter.name == "jax":
                reason += " (jax.config.update('jax_enable_x64', True) enables it)"
            reasons.append(reason)
            continue
        like = [
            adapter.from_core(xp.astype(c, d), like=p)
            for c, d, p in zip(diff_core, wanted, primals)
        ]
        try:
            with adapter.no_grad():
                outs = [adapter.to_core(o) for o in fn(*like)]
        except Exception as exc:  # f refuses this dtype: a float32-only kernel, say
            reasons.append(f"f raised {type(exc).__name__} on {_describe([real])} input")
            continue
        if all(_bits(xp, o.dtype) >= _bits(xp, real) for o in outs):
            if reasons:
                notes.append(
                    "numerical side in " + _describe(wanted) + " because " + "; ".join(reasons)
                )
            return wanted, like, _describe(wanted)
        reasons.append(f"f returns lower precision for {_describe([real])} input")
    if precision == "float64":
        raise ArgumentError(f"precision: 'float64' is not possible: {'; '.join(reasons)}")
    if reasons:
        notes.append("numerical side in the input dtype because " + "; ".join(reasons))
    return native, primals, _describe(native)


def _bits(xp: Any, dtype: Any) -> int:
    """Precision rank of a floating dtype (complex counts by its parts)."""
    real = _real_dtype(xp, dtype)
    return int(-math.log2(float(xp.finfo(real).eps)))


def _describe(dtypes: list[Any]) -> str:
    """Dtype names as people write them: float32, not torch.float32 or a class."""

    def name(d: Any) -> str:
        text = getattr(d, "__name__", None) or str(d)
        return text.replace("torch.", "").replace("dtype(", "").strip("')")

    return "/".join(sorted({name(d) for d in dtypes}))


def _wide_rule_runs(
    adapter: Adapter,
    fn: Callable[..., list[Any]],
    wide: list[Any],
    out_core: list[Any],
    outputs0: list[Any],
    xp: Any,
    vectorize: bool,
) -> bool:
    """Whether the framework's VJP runs at the numerical side's wider dtypes
    (TensorFlow has no float64 CPU kernel for a dilated conv2d's backward):
    one VJP with a zero cotangent."""
    cotangents = [
        adapter.from_core(
            xp.zeros((1, *o.shape), dtype=_wide_dtype(xp, o.dtype), device=_device(o)), like=fw
        )
        for o, fw in zip(out_core, outputs0)
    ]
    try:
        adapter.vjp(fn, wide, cotangents, vectorize=vectorize)
    except Exception:
        return False
    return True
