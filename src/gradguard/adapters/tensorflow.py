"""TensorFlow: ``tf.GradientTape`` and ``tf.autodiff.ForwardAccumulator``.

TensorFlow has no Array API namespace, so this adapter converts at the
edge: the core sees NumPy arrays, the function sees tensors.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from .._errors import ArgumentError, UnsupportedError
from .base import Adapter, GraphFacts, LeafFunction
from .parameters import (
    FreeVariable,
    ParameterList,
    Parameters,
    free_arrays,
    reachable_objects,
    swapped,
)

#: Rows of cotangents (tangents) from which the derivatives run in one
#: traced loop (tracing costs some 0.1 s, once per check; an eager row a few
#: ms): at n = 100, 100 VJPs of sin(x) * x took 156 ms traced against 492 ms
#: eagerly, at n = 1000 0.40 s against 4.4 s. A full check of sin(x) * x at
#: n = 1000 took 0.30-0.37 s, against 0.58 s with tf.vectorized_map.
TRACED_ROWS = 32
#: Rows a traced loop runs at once (tf.map_fn's parallel_iterations).
PARALLEL_ROWS = 16
#: Rows up to which a batch of points is evaluated eagerly, one call of f
#: per row, instead of in a traced, vectorised program: a probe's few rows
#: took 5 ms eagerly against 18-35 ms with a trace (sin(x) * x, n = 12 and
#: 1000), but an eager row costs 0.2-1 ms (an operation, a conversion per
#: argument), and at 97 rows (two arguments of 12 entries, a full check)
#: eager checks took 2-3x as long as traced ones (benchmarks/small.py).
EAGER_ROWS = 32


class TensorflowAdapter(Adapter):
    name = "tensorflow"
    module = "tensorflow"
    has_autodiff = True

    def owns(self, obj: Any) -> bool:
        return isinstance(obj, (tf.Tensor, tf.Variable)) or _is_keras_variable(obj)

    def namespace(self, core_array: Any) -> Any:
        import array_api_compat.numpy

        return array_api_compat.numpy

    def to_core(self, array: Any) -> Any:
        # A copy: the caller's tensor or variable stays untouched.
        return np.array(array.numpy() if hasattr(array, "numpy") else array)

    def from_core(self, array: Any, like: Any) -> Any:
        if isinstance(array, (tf.Tensor, tf.Variable)):
            return array
        with tf.device(like.device) if getattr(like, "device", "") else _nullcontext():
            return tf.convert_to_tensor(np.asarray(array))

    def to_numpy(self, core_array: Any) -> Any:
        return np.asarray(core_array)

    def scatter_into(self, base: Any, mask: Any, positions: Any, values: Any) -> Any:
        # gather and where: differentiable on the tape and by the forward
        # accumulator, and vectorised by pfor.
        taken = tf.reshape(tf.gather(values, positions, axis=0), tf.shape(base))
        return tf.where(mask, taken, tf.cast(base, values.dtype))

    def parameters(
        self,
        f: Any,
        leaves: Sequence[Any],
        paths: Sequence[str],
        kwargs: Mapping[str, Any],
    ) -> Parameters | None:
        found = ParameterList()
        layers = [
            item for item in reachable_objects(f, leaves, paths, kwargs) if _is_layer(item[1])
        ]
        for prefix, layer, is_own in sorted(layers, key=lambda item: not item[2]):
            if not layer.built and not is_own:
                continue  # f builds it when it runs; its weights are named then
            if not layer.built:
                raise ArgumentError(
                    f"f: the Keras layer {prefix.rstrip('.') or type(layer).__name__} is not "
                    "built, so it has no weights yet: call it once (layer(x)) or "
                    "layer.build(input_shape) before checking it"
                )
            for variable in layer.trainable_variables:
                found.add(variable.path, variable, is_own, variable)
        # Variables f reads by name (a closure's, a global), swapped for tensors.
        for name, variable, free in free_arrays(f, _trainable_variable):
            found.add(name, variable, False, free)
        return found.parameters(_substituted)

    def vectorize(self, fn: LeafFunction) -> LeafFunction:
        # One traced program per check (and signature), whatever the number
        # of chunks: tf.vectorized_map called eagerly traces f anew on every
        # call (80 traces in a check of tanh(X @ W) at n = 3000). Its batch
        # size is fixed, the largest so far, shorter chunks padded to it: pfor
        # over a batch of unknown size took twice as long (37 against 16 ms).
        programs: dict[Any, tuple[int, Callable[..., Any]]] = {}

        def batched(*leaves: Any) -> list[Any]:
            k = int(leaves[0].shape[0])
            if 0 < k <= EAGER_ROWS:
                return _eager_rows(fn, leaves)
            key = tuple((tuple(x.shape[1:]), x.dtype) for x in leaves)
            rows, program = programs.get(key, (0, None))
            if program is None or rows < k:
                rows, program = programs[key] = k, _vectorized(fn, _batch_specs(leaves, k))
            padded = [_pad_rows(x, rows) for x in leaves] if rows > k else list(leaves)
            with _quiet_retracing():
                return [np.asarray(o)[:k] for o in program(padded)]

        return batched

    def vjp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        cotangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        # Never tf.vectorized_map: pfor over tape.gradient kills the process
        # on some ops (tf.linalg.expm in float32: a segfault or "double
        # free"; tape.jacobian too), where a plain tape.gradient works.
        if vectorize and cotangents[0].shape[0] >= TRACED_ROWS:
            try:
                with _quiet_retracing():
                    traced = _traced(
                        fn,
                        ("vjp", _signature(primals, cotangents)),
                        lambda: _traced_vjps(fn, *_specs(primals, cotangents)),
                    )
                    return list(traced(list(primals), list(cotangents)))
            except Exception:
                pass  # f cannot be traced (Python control flow on values, .numpy())
        inputs = [tf.identity(p) for p in primals]
        with tf.GradientTape(persistent=True) as tape:
            for x in inputs:
                tape.watch(x)
            outputs = fn(*inputs)

        def one(cots: Any) -> list[Any]:
            grads = tape.gradient(
                outputs,
                inputs,
                output_gradients=list(cots),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return [tf.convert_to_tensor(g) for g in grads]

        return _row_by_row(one, cotangents)

    def jvp(
        self,
        fn: LeafFunction,
        primals: list[Any],
        tangents: list[Any],
        vectorize: bool = True,
    ) -> list[Any]:
        def one(tans: Any) -> list[Any]:
            with tf.autodiff.ForwardAccumulator(primals=list(primals), tangents=list(tans)) as acc:
                outputs = fn(*primals)
            return [acc.jvp(o, unconnected_gradients=tf.UnconnectedGradients.ZERO) for o in outputs]

        try:
            first = one([t[0] for t in tangents])
            if vectorize and tangents[0].shape[0] >= TRACED_ROWS:
                out_specs = [tf.TensorSpec(o.shape, o.dtype) for o in first]
                try:
                    with _quiet_retracing():
                        traced = _traced(
                            fn,
                            ("jvp", _signature(primals, tangents), tuple(map(str, out_specs))),
                            lambda: _traced_jvps(fn, *_specs(primals, tangents), out_specs),
                        )
                        return list(traced(list(primals), list(tangents)))
                except Exception:
                    pass  # f cannot be traced: row by row, eagerly
            rest = _row_by_row(one, [t[1:] for t in tangents]) if tangents[0].shape[0] > 1 else None
            if rest is None:
                return [o[None] for o in first]
            return [tf.concat([o[None], r], axis=0) for o, r in zip(first, rest)]
        except Exception as exc:  # pragma: no cover - depends on the op
            raise UnsupportedError(f"forward mode failed on this function: {exc}") from exc

    def graph_facts(self, fn: LeafFunction, primals: list[Any]) -> GraphFacts:
        inputs = [tf.identity(p) for p in primals]
        try:
            with tf.GradientTape() as tape:
                for x in inputs:
                    tape.watch(x)
                fn(*inputs)
        except Exception:
            return GraphFacts()  # the VJP itself will say what is wrong
        # The tape watches every trainable variable f reads (a Keras layer's
        # kernel): what the gradient of a training step would reach.
        return GraphFacts(
            other_leaves=tuple(
                f"{v.name} {tuple(int(s) for s in v.shape)} {v.dtype.name}"
                for v in tape.watched_variables()
            )
        )

    def differentiable_vjp(self, fn: LeafFunction, cotangents: list[Any]) -> LeafFunction:
        def first_derivative(*xs: Any) -> list[Any]:
            with tf.GradientTape() as tape:
                for x in xs:
                    tape.watch(x)
                outputs = fn(*xs)
            return list(
                tape.gradient(
                    outputs,
                    list(xs),
                    output_gradients=list(cotangents),
                    unconnected_gradients=tf.UnconnectedGradients.ZERO,
                )
            )

        return first_derivative


def _is_keras_variable(obj: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Variable)


def _is_layer(obj: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Layer)


def _trainable_variable(obj: Any) -> bool:
    if isinstance(obj, tf.Variable):
        return bool(obj.trainable)
    return _is_keras_variable(obj) and bool(obj.trainable)


def _substituted(
    f: Callable[..., Any],
    targets: Sequence[Any],
    values: Sequence[Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
) -> Any:
    """f with ``values`` in place of the variables ``targets``: a layer's
    through Keras's own StatelessScope, in which a variable reads as the
    value mapped to it (differentiably) and assignments stay in the scope,
    off the caller's variables; those f reads by name swapped for tensors
    while it runs."""
    free = [(t, v) for t, v in zip(targets, values) if isinstance(t, FreeVariable)]
    mapping = [(t, v) for t, v in zip(targets, values) if not isinstance(t, FreeVariable)]
    with contextlib.ExitStack() as stack:
        if mapping:
            import keras

            stack.enter_context(keras.StatelessScope(state_mapping=mapping))
        stack.enter_context(swapped([t for t, _ in free], [v for _, v in free]))
        return f(*args, **kwargs)


#: Per function of a check (by id, while it lives): its traced VJPs, one per
#: signature of the primals, so that a check traces them once, not once per
#: batch of cotangents (0.1 s each).
_traced_functions: dict[int, tuple[Any, dict[Any, Any]]] = {}
_traced_lock = threading.Lock()


def _traced(fn: LeafFunction, key: Any, build: Callable[[], Any]) -> Any:
    """The traced derivatives of ``fn`` under ``key`` (their kind and
    signature), built once per check by ``build``."""
    with _traced_lock:
        held = _traced_functions.get(id(fn))
        if held is None or held[0]() is not fn:
            try:
                ref = weakref.ref(fn, _forget(id(fn)))
            except TypeError:  # not weakly referenceable: traced per call
                return build()
            held = (ref, {})
            _traced_functions[id(fn)] = held
        found = held[1].get(key)
        if found is None:
            found = held[1][key] = build()
    return found


def _signature(primals: list[Any], batches: list[Any]) -> Any:
    """What decides a trace: the primals' shapes and dtypes, the batches' but
    for their number of rows."""
    return (
        tuple((tuple(p.shape), p.dtype) for p in primals),
        tuple((tuple(b.shape[1:]), b.dtype) for b in batches),
    )


def _specs(primals: list[Any], batches: list[Any]) -> tuple[list[Any], list[Any]]:
    """Input signatures: the primals as they are, batches of any length."""
    return (
        [tf.TensorSpec(p.shape, p.dtype) for p in primals],
        [tf.TensorSpec((None, *b.shape[1:]), b.dtype) for b in batches],
    )


def _forget(key: int) -> Callable[[Any], None]:
    # The dict itself, not the module global: at interpreter exit the
    # globals are gone before the last callbacks run.
    functions = _traced_functions

    def forget(_: Any) -> None:
        functions.pop(key, None)

    return forget


def _traced_vjps(fn: LeafFunction, specs: list[Any], rows_specs: list[Any]) -> Callable[..., Any]:
    """VJPs for every row of the cotangents in one traced function: f and
    its gradient built once, a while loop over the rows (tf.map_fn)."""

    @tf.function(autograph=False, input_signature=[specs, rows_specs])
    def rows(primals: list[Any], cotangents: list[Any]) -> Any:
        with tf.GradientTape(persistent=True) as tape:
            for x in primals:
                tape.watch(x)
            outputs = fn(*primals)

        def one(cots: Any) -> list[Any]:
            return tape.gradient(
                outputs,
                primals,
                output_gradients=list(cots),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )

        return tf.map_fn(
            one, tuple(cotangents), fn_output_signature=specs, parallel_iterations=PARALLEL_ROWS
        )

    return rows


def _batch_specs(batches: Any, rows: int) -> list[Any]:
    """Input signature of batches of ``rows`` rows."""
    return [tf.TensorSpec((rows, *b.shape[1:]), b.dtype) for b in batches]


def _pad_rows(batch: Any, rows: int) -> Any:
    """``batch`` with copies of its first row appended up to ``rows`` rows
    (values f accepts, unlike zeros), on its device."""
    host = batch.numpy()
    extra = np.broadcast_to(host[:1], (rows - host.shape[0], *host.shape[1:]))
    with tf.device(batch.device) if getattr(batch, "device", "") else _nullcontext():
        return tf.convert_to_tensor(np.concatenate([host, extra]))


def _vectorized(fn: LeafFunction, specs: list[Any]) -> Callable[..., Any]:
    """``fn`` over the rows of its batches, vectorised (pfor) in one traced
    function of a fixed signature: traced once."""

    @tf.function(autograph=False, input_signature=[specs])
    def rows(batches: list[Any]) -> Any:
        return tf.vectorized_map(lambda elems: fn(*elems), tuple(batches))

    return rows


def _eager_rows(fn: LeafFunction, batches: Any) -> list[Any]:
    """``fn`` at each row of ``batches``, eagerly, stacked on the host (the
    core's arrays): rows made on the host and placed on each batch's device."""
    host = [b.numpy() if hasattr(b, "numpy") else np.asarray(b) for b in batches]
    results = []
    for r in range(host[0].shape[0]):
        row = []
        for h, b in zip(host, batches):
            with tf.device(b.device) if getattr(b, "device", "") else _nullcontext():
                row.append(tf.convert_to_tensor(h[r]))
        results.append([np.asarray(o) for o in fn(*row)])
    return [np.stack([res[j] for res in results]) for j in range(len(results[0]))]


def _traced_jvps(
    fn: LeafFunction, specs: list[Any], rows_specs: list[Any], out_specs: list[Any]
) -> Callable[..., Any]:
    """JVPs for every row of the tangents in one traced function (a while
    loop over the rows, tf.map_fn), of a fixed signature: traced once."""

    @tf.function(autograph=False, input_signature=[specs, rows_specs])
    def rows(primals: list[Any], tangents: list[Any]) -> Any:
        def one(tans: Any) -> list[Any]:
            with tf.autodiff.ForwardAccumulator(primals=list(primals), tangents=list(tans)) as acc:
                outputs = fn(*primals)
            return [acc.jvp(o, unconnected_gradients=tf.UnconnectedGradients.ZERO) for o in outputs]

        return tf.map_fn(
            one, tuple(tangents), fn_output_signature=out_specs, parallel_iterations=PARALLEL_ROWS
        )

    return rows


def _row_by_row(one: Callable[[Any], list[Any]], batches: list[Any]) -> list[Any]:
    """``one`` (a list of arrays -> a list of tensors) for every row of
    ``batches``, stacked."""
    rows = [one([b[r] for b in batches]) for r in range(batches[0].shape[0])]
    return [tf.stack([row[j] for row in rows]) for j in range(len(rows[0]))]


class _RetracingFilter(logging.Filter):
    """Drops TensorFlow's warning that vectorized_map's internal function
    retraced: each call traces anew by design, and the warning would repeat
    for every batch of a check."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_FILTER = _RetracingFilter()
_FILTER_LOCK = threading.Lock()
_filter_users = 0


@contextlib.contextmanager
def _quiet_retracing() -> Iterator[None]:
    """The filter on TensorFlow's logger while gradguard vectorises, and only
    then (counted, so that checks in threads can overlap)."""
    global _filter_users
    logger = logging.getLogger("tensorflow")
    with _FILTER_LOCK:
        if _filter_users == 0:
            logger.addFilter(_FILTER)
        _filter_users += 1
    try:
        yield
    finally:
        with _FILTER_LOCK:
            _filter_users -= 1
            if _filter_users == 0:
                logger.removeFilter(_FILTER)


def _nullcontext() -> Any:
    import contextlib

    return contextlib.nullcontext()
