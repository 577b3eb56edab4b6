"""JAX: ``jax.vjp`` / ``jax.jvp``, and ``jax.vmap`` (jitted) for batches.

The core works on NumPy copies of JAX arrays, converting at the edge as for
TensorFlow: JAX compiles every eager operation for every new shape, so the
core's many small bookkeeping operations would cost a compilation each
(seconds per check). Only ``f`` and its derivatives run in JAX, jitted and
vmapped over whole batches.

Compiled functions outlive a check
----------------------------------
A check builds a new wrapper of ``f`` (a :class:`~.base.LeafCall`) every time, so
jitting the wrapper itself would compile anew on every check: about 0.1 s,
where the check's own work at small sizes is milliseconds. The jitted
evaluation, VJP and JVP are therefore kept in a small module-level cache,
keyed on what decides the compiled code: ``f`` itself (by identity), the
arguments' structure, which leaves are differentiated, the Python scalars
and strings among the other leaves (by value), and the shapes and dtypes.
The other JAX arrays among the arguments are arguments of the compiled
functions, not constants baked into them, so a later check with other
values in them reuses the code and sees the new values.

What ``f`` reads from elsewhere (a global array, a closure, an attribute of
the object a bound method belongs to) would be baked in as a constant. So
every check traces ``f`` once more (``jax.make_jaxpr``, no compilation) and
uses the cached code only if the program and its constants are the same as
when it was compiled; otherwise it compiles afresh. Functions that cannot
be traced, arguments with other leaves, and second-order checks go the
uncached way, as before.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import _tree
from .._errors import UnsupportedError
from .base import Adapter, LeafCall, LeafFunction
from .parameters import Parameters

#: Compiled functions kept across checks. An entry holds ``f`` and the
#: constants it reads alive (and the compiled code, which refers to them),
#: so the cache must be bounded: a test suite checks hundreds of functions,
#: and each is usually checked again right away (other modes, the same case
#: repeated), so the last few suffice.
CACHE_SIZE = 32

_cache: OrderedDict[Hashable, _Compiled] = OrderedDict()
#: Per wrapper (by id, while it lives): shapes -> (entry, other arrays) or
#: None, so that the trace that validates an entry runs once per check.
_resolved: dict[int, tuple[weakref.ref[Any], dict[Hashable, Any]]] = {}
_lock = threading.RLock()

#: Leaves other than arrays that may be part of a cache key: immutable, and
#: told apart by ``(type, repr)`` (which, unlike ``==``, separates 0.0 from
#: -0.0 and matches NaN with NaN).
_STATIC_TYPES = (type(None), bool, int, float, complex, str, bytes, np.generic, np.dtype)


def clear_cache() -> None:
    """Forget every compiled function kept across checks."""
    with _lock:
        _cache.clear()
        _resolved.clear()


class JaxAdapter(Adapter):
    name = "jax"
    module = "jax"
    has_autodiff = True

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, jax.Array)

    def namespace(self, core_array: Any) -> Any:
        import array_api_compat.numpy

        return array_api_compat.numpy

    def to_core(self, array: Any) -> Any:
        host = np.asarray(array)
        if host.dtype.kind == "V":
            # bfloat16 / float8 (ml_dtypes), which NumPy's dtype machinery
            # does not know: float32 holds them exactly.
            host = host.astype(np.float32)
        return host

    def from_core(self, array: Any, like: Any) -> Any:
        if isinstance(array, jax.Array):
            return array
        devices = like.devices() if isinstance(like, jax.Array) else None
        device = next(iter(devices)) if devices else None
        return jax.device_put(np.asarray(array), device)

    def to_numpy(self, core_array: Any) -> Any:
        return np.asarray(core_array)

    def float64_available(self, array: Any) -> bool:
        return bool(jax.config.read("jax_enable_x64"))

    def vectorize(self, fn: LeafFunction) -> LeafFunction:
        if _split(fn) is None:
            return jax.jit(jax.vmap(fn))
        uncached: list[LeafFunction] = []

        def batched(*xs: Any) -> Any:
            found = _compiled(fn, [_aval(x, batched=True) for x in xs])
            if found is None:
                if not uncached:
                    uncached.append(jax.jit(jax.vmap(fn)))
                return uncached[0](*xs)
            entry, arrays = found
            return entry.forward(*xs, *arrays)

        return batched

    def scatter_into(self, base: Any, mask: Any, positions: Any, values: Any) -> Any:
        taken = jnp.take(values, positions, axis=0).reshape(base.shape)
        return jnp.where(mask, taken, base.astype(values.dtype))

    def hidden_arrays(self, obj: Any) -> int:
        leaves = jax.tree_util.tree_leaves(obj)
        if len(leaves) == 1 and leaves[0] is obj:
            return 0  # not a container JAX knows
        return sum(
            1
            for leaf in leaves
            if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)
        )

    def parameters(
        self,
        f: Any,
        leaves: Sequence[Any],
        paths: Sequence[str],
        kwargs: Mapping[str, Any],
    ) -> Parameters | None:
        # A model that is a pytree and callable (an equinox Module): its
        # arrays are its parameters. Arguments that are pytrees are
        # flattened with the other arguments (gradguard._tree).
        pairs, treedef = jax.tree_util.tree_flatten_with_path(f)
        if jax.tree_util.treedef_is_leaf(treedef):
            return None
        keep = [
            k
            for k, (_, leaf) in enumerate(pairs)
            if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.inexact)
        ]
        if not keep:
            return None
        names = tuple(_tree.key_path_name(pairs[k][0]).lstrip(".") for k in keep)
        substitute = _Rebuilt(treedef, tuple(leaf for _, leaf in pairs))
        arrays = tuple(pairs[k][1] for k in keep)
        return Parameters(names, arrays, (True,) * len(keep), tuple(keep), substitute)

    def vjp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        cotangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        found = _compiled(fn, [_aval(p) for p in primals]) if vectorize else None
        rows, arrays = (
            (found[0].vjp, found[1])
            if found
            else (jax.jit(partial(_vjp_rows, fn, one_by_one=not vectorize)), [])
        )
        try:
            return list(rows(list(primals), arrays, list(cotangents)))
        except Exception:
            pass
        # Not traceable as a whole (Python control flow on values):
        # one pullback per cotangent, eagerly.
        out, pullback = jax.vjp(fn, *primals)
        cots = [jnp.conj(c).astype(o.dtype) for c, o in zip(cotangents, out)]
        k = cots[0].shape[0]
        grads = [pullback([c[r] for c in cots]) for r in range(k)]
        return [jnp.conj(jnp.stack([row[i] for row in grads])) for i in range(len(primals))]

    def jvp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        tangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        try:
            found = _compiled(fn, [_aval(p) for p in primals]) if vectorize else None
            rows, arrays = (
                (found[0].jvp, found[1])
                if found
                else (jax.jit(partial(_jvp_rows, fn, one_by_one=not vectorize)), [])
            )
            return list(rows(list(primals), arrays, list(tangents)))
        except TypeError as exc:
            if "custom_vjp" in str(exc) or "forward-mode" in str(exc):
                raise UnsupportedError(
                    f"forward mode is not defined for this function ({exc}); "
                    "check a jax.custom_vjp rule with direction='rev'"
                ) from exc
            raise

    def differentiable_vjp(self, fn: LeafFunction, cotangents: list[Any]) -> LeafFunction:
        cots = [jnp.conj(c) for c in cotangents]

        def first_derivative(*xs: Any) -> list[Any]:
            _, pullback = jax.vjp(fn, *xs)
            return [jnp.conj(g) for g in pullback(cots)]

        return first_derivative


@dataclass(frozen=True)
class _Rebuilt:
    """A pytree model rebuilt with other arrays in place of some of its
    leaves, and called: the caller's model is never changed."""

    treedef: Any
    leaves: tuple[Any, ...]

    def __call__(
        self,
        f: Callable[..., Any],
        targets: Sequence[int],
        values: Sequence[Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        leaves = list(self.leaves)
        for k, value in zip(targets, values):
            leaves[k] = value
        return jax.tree_util.tree_unflatten(self.treedef, leaves)(*args, **kwargs)


# -- compiled functions kept across checks ------------------------------------


class _Compiled:
    """The jitted evaluation, VJP and JVP of one canonical function
    ``call(*differentiated, *other arrays)``."""

    def __init__(self, f: Any, text: str, consts: list[Any], call: LeafFunction, nd: int, na: int):
        self.f = f  # held, so that its id in the key stays its own
        self.text = text
        self.consts = consts

        self.forward: Callable[..., Any] = jax.jit(jax.vmap(call, in_axes=(0,) * nd + (None,) * na))
        self.vjp: Callable[..., Any] = jax.jit(partial(_vjp_rows, call))
        self.jvp: Callable[..., Any] = jax.jit(partial(_jvp_rows, call))


def _vjp_rows(
    call: Any, primals: list[Any], arrays: list[Any], cots: list[Any], one_by_one: bool = False
) -> Any:
    """VJPs of ``call(*primals, *arrays)`` for every row of ``cots``. JAX's
    cotangents are conjugates of ours; the pullback wants them in the
    outputs' own dtypes."""
    out, pullback = jax.vjp(lambda *p: call(*p, *arrays), *primals)
    cots = [jnp.conj(c).astype(o.dtype) for c, o in zip(cots, out)]
    grads = _over_rows(lambda *c: pullback(list(c)), cots, one_by_one)
    return [jnp.conj(g) for g in grads]


def _jvp_rows(
    call: Any, primals: list[Any], arrays: list[Any], tangents: list[Any], one_by_one: bool = False
) -> Any:
    """JVPs of ``call(*primals, *arrays)`` for every row of ``tangents``."""
    tangents = [t.astype(p.dtype) for t, p in zip(tangents, primals)]

    def one(*t: Any) -> Any:
        return jax.jvp(lambda *p: call(*p, *arrays), tuple(primals), tuple(t))[1]

    return _over_rows(one, tangents, one_by_one)


def _over_rows(one: Callable[..., Any], batches: list[Any], one_by_one: bool) -> Any:
    """``one`` over the rows of ``batches``: vmapped, or (vectorize=False) a
    sequential lax.map."""
    if one_by_one:
        return jax.lax.map(lambda rows: one(*rows), tuple(batches))
    return jax.vmap(one)(*batches)


def _split(fn: Any) -> tuple[LeafFunction, list[Any], tuple[Hashable, ...]] | None:
    """``fn`` as a canonical function of (differentiated leaves, other JAX
    arrays), those arrays, and the part of the cache key that ``fn`` decides;
    None when ``fn`` cannot be cached (not a check's wrapper of ``f``, or an
    argument leaf that is neither a JAX array nor an immutable scalar)."""
    if not isinstance(fn, LeafCall):
        return None
    diff = list(fn.diff)
    template: list[Any] = list(fn.leaves)
    arrays: list[int] = []
    static: list[tuple[int, type, str]] = []
    for i, leaf in enumerate(fn.leaves):
        if i in diff:
            template[i] = None
        elif isinstance(leaf, jax.Array) and not isinstance(leaf, jax.core.Tracer):
            arrays.append(i)
            template[i] = None
        elif isinstance(leaf, _STATIC_TYPES):
            static.append((i, type(leaf), repr(leaf)))
        else:
            return None
    try:
        hash(fn.treedef)
    except TypeError:
        return None
    call = fn.replacing(template, diff + arrays)
    # repr too: 1, 1.0 and True are equal dict keys, and equal treedefs.
    key = (id(fn.f), fn.treedef, repr(fn.treedef), tuple(diff), tuple(arrays), tuple(static))
    return call, [fn.leaves[i] for i in arrays], key


def _aval(x: Any, batched: bool = False) -> jax.ShapeDtypeStruct:
    shape = tuple(x.shape[1:] if batched else x.shape)
    return jax.ShapeDtypeStruct(shape, x.dtype, weak_type=bool(getattr(x, "weak_type", False)))


def _signature(avals: list[Any]) -> tuple[Hashable, ...]:
    return tuple(
        (tuple(a.shape), str(a.dtype), bool(getattr(a, "weak_type", False))) for a in avals
    )


def _compiled(fn: Any, diff_avals: list[Any]) -> tuple[_Compiled, list[Any]] | None:
    """The cached compiled functions for ``fn`` at these shapes (compiling
    lazily on first use), with the arrays to pass them; None when ``fn`` goes
    the uncached way."""
    shapes = _signature(diff_avals)
    with _lock:
        seen = _resolved.get(id(fn))
        if seen is not None and seen[0]() is fn and shapes in seen[1]:
            result: tuple[_Compiled, list[Any]] | None = seen[1][shapes]
            return result
    result = _lookup(fn, diff_avals, shapes)
    with _lock:
        seen = _resolved.get(id(fn))
        if seen is None or seen[0]() is not fn:
            try:
                ref = weakref.ref(fn, _forget(id(fn)))
            except TypeError:
                return result
            seen = (ref, {})
            _resolved[id(fn)] = seen
        seen[1][shapes] = result
    return result


def _forget(key: int) -> Callable[[Any], None]:
    def forget(_: Any) -> None:
        _resolved.pop(key, None)

    return forget


def _lookup(fn: Any, diff_avals: list[Any], shapes: tuple[Hashable, ...]) -> Any:
    split = _split(fn)
    if split is None:
        return None
    call, arrays, fn_key = split
    try:
        # Traced, not compiled: what f computes now, with its constants.
        closed = jax.make_jaxpr(call)(*diff_avals, *arrays)
    except Exception:
        return None  # not traceable (values in Python control flow, ...)
    try:
        # Printing may fail (KeyError: 'out_dtype' for lax.mul_p bound
        # without its parameters): such an f goes the uncached way.
        text = str(closed.jaxpr)
    except Exception:
        return None
    consts = list(closed.consts)
    key = (
        fn_key,
        shapes,
        _signature(arrays),
        bool(jax.config.read("jax_enable_x64")),
    )
    with _lock:
        entry = _cache.get(key)
        if (
            entry is not None
            and entry.f is fn.f
            and entry.text == text
            and _same_constants(entry.consts, consts)
        ):
            _cache.move_to_end(key)
            return entry, arrays
        entry = _Compiled(fn.f, text, consts, call, len(diff_avals), len(arrays))
        _cache[key] = entry
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return entry, arrays


def _same_constants(old: list[Any], new: list[Any]) -> bool:
    """The constants ``f`` read when its code was compiled are those it reads now."""
    if len(old) != len(new):
        return False
    try:
        for a, b in zip(old, new):
            if a is b:
                continue
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape or a.dtype != b.dtype:
                return False
            nan = a.dtype.kind in "fc"
            if not np.array_equal(a, b, equal_nan=nan):
                return False
    except Exception:
        return False  # not comparable: compile afresh
    return True
