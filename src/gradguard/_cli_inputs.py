"""What ``gradguard check`` reads from its command line: the target, its inputs, its options.

The target is ``FILE.py:NAME`` or ``FILE.py:Class.attr`` (``Model.apply`` of a
``torch.autograd.Function``). Its positional inputs come, first found first:

1. ``--inputs FILE.npy`` (one argument per file) or ``FILE.npz`` (its arrays:
   keys named like FUNC's parameters, or ``arr_0, arr_1, ...`` in order);
2. ``--shape`` (random inputs, normal or uniform in ``--range``);
3. a factory ``FUNC_inputs()`` (or ``FUNC_inputs(rng)``) defined next to FUNC.

Every mistake is a :class:`UsageError` worded in the command's flags.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Target",
    "UsageError",
    "factory_inputs",
    "keyword_arguments",
    "positional_names",
    "random_inputs",
    "read_inputs",
    "required_count",
    "resolve",
    "shape",
    "value_range",
    "wrt_positions",
]


class UsageError(Exception):
    """A mistake in the command line or in what it points to: a message, no traceback."""


class Target:
    """The function named on the command line and what the file defines next to it."""

    def __init__(self, path: Path, name: str, module: Any) -> None:
        self.path = path
        self.name = name  # as typed: "loss" or "Model.apply"
        self.module = module
        self.container, self.function = _lookup(module, path, name)
        # Rules and the factory are looked up next to FUNC: in the class for Class.attr.
        self.leaf = name.rsplit(".", 1)[-1]

    def beside(self, suffix: str) -> Callable[..., Any] | None:
        """``FUNC_suffix`` next to FUNC (for ``Class.attr``: ``Class.attr_suffix``,
        or ``Class_suffix`` at the top of the file)."""
        found = getattr(self.container, f"{self.leaf}_{suffix}", None)
        if found is None and "." in self.name:
            found = getattr(self.module, f"{self.name.split('.', 1)[0]}_{suffix}", None)
        return found if callable(found) else None


def resolve(target: str) -> tuple[Path, str]:
    """``FILE.py:NAME`` (NAME dotted for an attribute) as a path and a name."""
    file, sep, name = target.rpartition(":")
    if not sep or not file or not name:
        raise UsageError(f"expected FILE.py:FUNC (or FILE.py:Class.apply), got {target!r}")
    if not all(part.isidentifier() for part in name.split(".")):
        raise UsageError(f"{name!r} is not a Python name (FUNC, or Class.apply)")
    path = Path(file)
    if not path.is_file():
        raise UsageError(f"{file}: no such file")
    return path, name


def _lookup(module: Any, path: Path, name: str) -> tuple[Any, Any]:
    """The object at the dotted ``name`` in ``module`` and the one that holds it."""
    container: Any = module
    parts = name.split(".")
    for depth, part in enumerate(parts):
        found = getattr(container, part, None)
        if found is None:
            where = f"{path}" if depth == 0 else f"{path}:{'.'.join(parts[:depth])}"
            defined = sorted(
                k for k, v in vars(container).items() if callable(v) and not k.startswith("_")
            )
            raise UsageError(
                f"{where} defines no {part!r}"
                + (f" (it defines {', '.join(defined)})" if defined else "")
            )
        if depth == len(parts) - 1:
            if not callable(found):
                raise UsageError(f"{path}:{name} is a {type(found).__name__}, not a function")
            return container, found
        container = found
    raise AssertionError("unreachable")  # pragma: no cover


def positional_names(f: Any) -> list[str] | None:
    """f's positional parameter names, or None when f takes ``*args`` (or has no
    signature). A torch Function's ``apply`` has the names of its ``forward``."""
    params = _parameters(f)
    if params is None or any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def required_count(f: Any, given: Collection[str] = ()) -> int | None:
    """How many positional arguments f needs at least, besides the ``given``
    keyword arguments (None: unknown)."""
    params = _parameters(f)
    if params is None:
        return None
    return sum(
        1
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        and p.default is p.empty
        and p.name not in given
    )


def _parameters(f: Any) -> list[inspect.Parameter] | None:
    from .engine.problem.names import named_like_forward

    try:
        return list(inspect.signature(named_like_forward(f)).parameters.values())
    except (TypeError, ValueError):
        return None


# -- options ------------------------------------------------------------------


def shape(text: str) -> tuple[int, ...]:
    text = text.strip().strip("()[]")
    if not text:
        return ()
    try:
        result = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UsageError(f"--shape: expected integers separated by commas, got {text!r}") from None
    if any(s < 0 for s in result):
        raise UsageError(f"--shape: sizes must be non-negative, got {text!r}")
    return result


def value_range(text: str) -> tuple[float, float]:
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise UsageError(f"--range: expected LOW,HIGH (two numbers), got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UsageError(f"--range: expected finite LOW < HIGH, got {text!r}")
    return low, high


def keyword_arguments(items: Sequence[str]) -> dict[str, Any]:
    """``--kwarg name=value``: value as a Python literal (``2``, ``0.5``, ``(1, 2)``,
    ``True``, ``'mean'``), or else as the text itself."""
    kwargs: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier():
            raise UsageError(f"--kwarg: expected NAME=VALUE, got {item!r}")
        if name in kwargs:
            raise UsageError(f"--kwarg: {name} is given twice")
        try:
            kwargs[name] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            kwargs[name] = text
    return kwargs


def wrt_positions(text: str, names: list[str] | None, count: int) -> tuple[int, ...]:
    """``--wrt 0,2`` or ``--wrt w,b``: positions among the ``count`` arguments."""
    positions = []
    for item in (part.strip() for part in text.split(",")):
        if item.lstrip("-").isdigit():
            p = int(item)
            if not -count <= p < count:
                raise UsageError(
                    f"--wrt: {p} is out of range for {count} argument(s); use 0 .. {count - 1}"
                )
            positions.append(p % count)
        elif names is not None and item in names[:count]:
            positions.append(names.index(item))
        else:
            known = ", ".join(names[:count]) if names else "none: f takes *args"
            raise UsageError(
                f"--wrt: {item!r} is neither an argument position (0 .. {count - 1}) nor the "
                f"name of one (names: {known})"
            )
    return tuple(dict.fromkeys(positions))


# -- inputs ---------------------------------------------------------------------


def random_inputs(
    shapes: list[tuple[int, ...]],
    ranges: list[tuple[float, float]],
    dtype: str,
    seed: int,
) -> list[Any]:
    """Random NumPy inputs: standard normal, or uniform in their ``--range``."""
    import numpy as np

    if len(ranges) not in (0, 1, len(shapes)):
        raise UsageError(
            f"--range: give one (for every argument) or one per --shape ({len(shapes)}); "
            f"got {len(ranges)}"
        )
    rng = np.random.default_rng(seed)
    inputs = []
    for p, size in enumerate(shapes):
        bounds = ranges[p if len(ranges) > 1 else 0] if ranges else None
        inputs.append(_random(rng, size, dtype, bounds))
    return inputs


def _random(rng: Any, size: tuple[int, ...], dtype: str, bounds: Any) -> Any:
    import numpy as np

    def draw() -> Any:
        return rng.standard_normal(size) if bounds is None else rng.uniform(*bounds, size=size)

    values = draw()
    if dtype.startswith("complex"):
        values = values + 1j * draw()
    return np.asarray(values, dtype=dtype)


def read_inputs(paths: Sequence[str], names: list[str] | None) -> list[Any]:
    """The arrays of ``--inputs`` files, in argument order."""
    arrays: list[Any] = []
    for path in paths:
        if path.endswith(".npz"):
            arrays += _npz(path, names)
        elif path.endswith(".npy"):
            arrays.append(_load_array(path))
        else:
            raise UsageError(f"--inputs: {path} is neither a .npy nor a .npz file")
    return arrays


def _load_array(path: str) -> Any:
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UsageError(f"--inputs: {path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--inputs: cannot read {path}: {exc}") from None


def _npz(path: str, names: list[str] | None) -> list[Any]:
    archive = _load_array(path)
    with archive:
        keys = list(archive.files)
        numbered = [f"arr_{p}" for p in range(len(keys))]
        if sorted(keys) == sorted(numbered):
            return [archive[k] for k in numbered]
        unknown = [k for k in keys if names is None or k not in names]
        if unknown:
            known = ", ".join(names) if names else "none: f takes *args"
            raise UsageError(
                f"--inputs: {path} holds {', '.join(unknown)}, which are not FUNC's parameter "
                f"names ({known}); name its arrays like the parameters, or save them "
                "unnamed (np.savez(path, x, y)) in argument order"
            )
        assert names is not None
        order = [n for n in names if n in keys]
        missing = names[: len(order)]
        if order != missing:
            raise UsageError(
                f"--inputs: {path} holds {', '.join(order)} but not "
                f"{', '.join(n for n in missing if n not in keys)}; the positional "
                "arguments before the last given one are needed"
            )
        return [archive[n] for n in order]


def factory_inputs(factory: Callable[..., Any], name: str, seed: int) -> list[Any]:
    """The arguments ``FUNC_inputs()`` returns (given a NumPy Generator seeded by
    ``--seed`` when it takes one parameter)."""
    import numpy as np

    try:
        wants_rng = len(inspect.signature(factory).parameters) >= 1
    except (TypeError, ValueError):
        wants_rng = False
    made = factory(np.random.default_rng(seed)) if wants_rng else factory()
    if isinstance(made, (tuple, list)):
        return list(made)
    if isinstance(made, dict):
        raise UsageError(
            f"{name}: returned a dict; return the positional arguments of FUNC as a tuple "
            "(keyword arguments go on the command line: --kwarg NAME=VALUE)"
        )
    return [made]
