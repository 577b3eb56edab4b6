"""A model's parameters, as the check differentiates them: the arrays f
reads besides its arguments (a torch module's parameters, a Keras layer's
trainable variables, a JAX pytree model's arrays, a tensor in f's closure),
found by each framework's adapter (``Adapter.parameters``), and how f is
called with other values in their place without writing to them."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "FreeVariable",
    "ParameterList",
    "Parameters",
    "Substitute",
    "free_arrays",
    "reachable_objects",
    "swapped",
]


class Substitute(Protocol):
    """Calls ``f(*args, **kwargs)`` with ``values`` in place of the
    parameters ``targets`` (see :class:`Parameters`)."""

    def __call__(
        self,
        f: Callable[..., Any],
        targets: Sequence[Any],
        values: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any: ...


@dataclass(frozen=True)
class Parameters:
    """Arrays ``f`` reads besides its arguments (a model's weights), and how
    to call ``f`` with other values in their place: the check
    differentiates them like arguments without ever writing to them."""

    #: As the framework names them: ``encoder.0.weight``, ``dense/kernel``.
    names: tuple[str, ...]
    #: The framework arrays themselves (the caller's: never written to).
    arrays: tuple[Any, ...]
    #: Whether each is ``f``'s own (f is the model, a method of it, or takes
    #: it as an argument): checked by default. The others f reaches through
    #: a closure or a global: checked when ``wrt=`` asks.
    own: tuple[bool, ...]
    #: What ``substitute`` needs to find each (opaque to the engine).
    targets: tuple[Any, ...]
    substitute: Substitute

    def narrowed(self, keep: Sequence[int]) -> Parameters:
        """These parameters alone (by position), in this order."""
        return Parameters(
            tuple(self.names[k] for k in keep),
            tuple(self.arrays[k] for k in keep),
            tuple(self.own[k] for k in keep),
            tuple(self.targets[k] for k in keep),
            self.substitute,
        )

    def call(
        self,
        f: Callable[..., Any],
        values: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """``f(*args, **kwargs)`` with ``values`` in place of these parameters."""
        return self.substitute(f, self.targets, values, args, kwargs)


class ParameterList:
    """Parameters as an adapter finds them, each array once (the first way
    it is reached), made into :class:`Parameters` at the end."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.arrays: list[Any] = []
        self.own: list[bool] = []
        self.targets: list[Any] = []
        self._seen: set[int] = set()

    def add(self, name: str, array: Any, own: bool, target: Any) -> None:
        if id(array) in self._seen:
            return
        self._seen.add(id(array))
        self.names.append(name)
        self.arrays.append(array)
        self.own.append(own)
        self.targets.append(target)

    def parameters(self, substitute: Substitute) -> Parameters | None:
        """What was found (None: nothing), called through ``substitute``."""
        if not self.names:
            return None
        return Parameters(
            tuple(self.names),
            tuple(self.arrays),
            tuple(self.own),
            tuple(self.targets),
            substitute,
        )


def reachable_objects(
    f: Any, leaves: Sequence[Any], paths: Sequence[str], kwargs: Mapping[str, Any]
) -> list[tuple[str, Any, bool]]:
    """The objects that may hold ``f``'s parameters, as ``(prefix, object,
    own)``: ``f`` itself, the object it is a method of, what a partial
    wraps, the argument leaves (own, prefixed by their paths), and the
    keyword arguments, the objects f's closure and the globals it names
    hold (not own: passed through as they are; prefixed by their names).
    Each object once, the first way it is reached."""
    found: list[tuple[str, Any, bool]] = [("", f, True)]
    if isinstance(f, functools.partial):
        found.append(("", f.func, True))
        f = f.func
    bound = getattr(f, "__self__", None)
    if bound is not None:
        found.append(("", bound, True))
    found += [(f"{path}.", leaf, True) for leaf, path in zip(leaves, paths)]
    found += [(f"{name}.", value, False) for name, value in kwargs.items()]
    found += [(f"{name}.", value, False) for name, value, _ in _free_variables(f)]
    unique: dict[int, tuple[str, Any, bool]] = {}
    for item in found:
        unique.setdefault(id(item[1]), item)
    return list(unique.values())


@dataclass(frozen=True)
class FreeVariable:
    """A variable f reads by name when it runs, not through its arguments:
    a cell of its closure, or a name among its globals. The check swaps
    another value in while f runs (see :func:`swapped`)."""

    space: Any  # the cell, or the globals dict
    name: str

    def get(self) -> Any:
        if isinstance(self.space, dict):
            return self.space[self.name]
        return self.space.cell_contents

    def set(self, value: Any) -> None:
        if isinstance(self.space, dict):
            self.space[self.name] = value
        else:
            self.space.cell_contents = value


def free_arrays(f: Any, wanted: Callable[[Any], bool]) -> list[tuple[str, Any, FreeVariable]]:
    """The arrays f reads from its closure or its globals for which
    ``wanted`` holds (a tensor requiring grad), with their names."""
    f = f.func if isinstance(f, functools.partial) else f
    return [item for item in _free_variables(f) if wanted(item[1])]


def _free_variables(f: Any) -> Iterator[tuple[str, Any, FreeVariable]]:
    """``(name, value, variable)`` of what f reads by name: the cells of
    its closure (those assigned), then the globals its code names."""
    code = getattr(f, "__code__", None)
    if code is None:
        return
    for name, cell in zip(code.co_freevars, getattr(f, "__closure__", None) or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell: the variable is not assigned yet
            continue
        yield name, value, FreeVariable(cell, name)
    spaces = getattr(f, "__globals__", {})
    for name in code.co_names:
        if name in spaces:
            yield name, spaces[name], FreeVariable(spaces, name)


_SWAP = threading.RLock()


@contextlib.contextmanager
def swapped(variables: Sequence[FreeVariable], values: Sequence[Any]) -> Iterator[None]:
    """``values`` in the variables while the block runs, the old ones back
    after it, whatever happens. One block at a time (threads take turns)."""
    with _SWAP:
        old = [v.get() for v in variables]
        try:
            for variable, value in zip(variables, values):
                variable.set(value)
            yield
        finally:
            for variable, value in zip(variables, old):
                variable.set(value)
