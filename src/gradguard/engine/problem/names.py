"""Whose signature names f's arguments.

A ``torch.autograd.Function`` is called as ``Scale.apply(weight, bias)``;
``apply`` takes ``*args``, so the report would say ``args[0]``. The names are
those of ``forward``, less its ``ctx`` (absent when the Function defines
``setup_context``). Recognised by shape (a class's ``apply`` next to a
``forward``), so that no framework is imported.
"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["named_like_forward"]


def named_like_forward(f: Any) -> Any:
    """``f``, or for a Function's ``apply`` a stand-in whose signature is
    ``forward``'s (what :func:`inspect.signature` reads); never called."""
    owner = getattr(f, "__self__", None)
    forward = getattr(owner, "forward", None)
    if not (isinstance(owner, type) and getattr(f, "__name__", "") == "apply"):
        return f
    if not callable(forward):
        return f
    try:
        signature = inspect.signature(forward)
    except (TypeError, ValueError):
        return f
    params = list(signature.parameters.values())
    if params and not _has_setup_context(owner):
        params = params[1:]  # forward(ctx, ...)

    def stand_in(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - only named
        raise NotImplementedError

    stand_in.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return stand_in


def _has_setup_context(owner: type) -> bool:
    """A Function written with ``setup_context`` has a ``forward`` without ctx;
    torch's own base classes define one that only raises."""
    return any(
        "setup_context" in vars(c)
        for c in owner.__mro__
        if not (c.__module__ or "").startswith("torch")
    )
