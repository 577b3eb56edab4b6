"""Few compilations, few traces: counts that load cannot disturb.

A JAX check compiles at most one evaluation and one derivative program for
a function and shapes, whatever the number of chunks, and a second check of
the same function and shapes compiles nothing; a small JAX check evaluates
f eagerly, reusing what its setup's call compiled, and at shapes seen before
takes its derivatives eagerly too, compiling nothing. A TensorFlow check
traces f a fixed number of times, not once per chunk. XLA compilations are
counted by JAX's monitoring event, traces by a Python side effect in ``f``
that runs only on symbolic values. Nothing is mocked.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradguard

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n)


# -- JAX ---------------------------------------------------------------------------


@pytest.fixture
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.fixture
def compiles(jax):
    """A list that receives one entry per XLA compilation while the test runs."""
    seen: list[str] = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listener)


def _jax_function(jax, traces):
    import jax.numpy as jnp

    def f(x):
        if isinstance(x, jax.core.Tracer):
            traces.append(1)
        return jnp.sin(x) * x

    return f


@pytest.mark.parametrize("direction", ["rev", "fwd"])
@pytest.mark.parametrize("n", [300, 1000])
def test_jax_check_of_new_shapes_compiles_two_programs(jax, compiles, direction, n):
    from gradguard.adapters import jax as jax_adapter

    # At n = 1000 the evaluations come in several chunks (the last one
    # shorter), the VJP rows in batches, then two dense probes: every batch
    # size must reuse the same two programs.
    assert n > jax_adapter.EAGER_ROWS
    traces: list[int] = []
    f = _jax_function(jax, traces)
    x = jax.device_put(_x(n))
    f(x)  # f's own eager operations, compiled as the setup's call would
    compiles.clear()
    first = gradguard.check(f, x, mode="full", direction=direction)
    assert first.passed and first.path == "vectorized"
    assert 1 <= len(compiles) <= 2, "one evaluation program and one derivative program"
    compiles.clear()
    traces.clear()
    second = gradguard.check(f, x, mode="full", direction=direction)
    assert second.passed
    assert compiles == [], "the same function and shapes compile nothing again"
    assert len(traces) == 1, "one trace (no compilation) that validates the cached code"


def test_jax_small_checks_at_seen_shapes_compile_nothing(jax, compiles):
    import jax.numpy as jnp

    from gradguard.adapters import jax as jax_adapter

    jax_adapter.clear_cache()
    traces: list[int] = []
    f = _jax_function(jax, traces)
    x = jax.device_put(_x(12).reshape(3, 4))
    f(x)  # as a test would: f's own operations are compiled
    compiles.clear()

    def g(x):  # another function of the same operations, checked before
        return jnp.cos(x) * x

    first = gradguard.check(g, x)
    assert first.passed
    # New shapes: the points evaluated eagerly (on what g(x) compiled), the
    # VJP rows (the dense probes padded to them) in one program.
    assert len(compiles) == 2, "g's cos, eagerly, and the VJP program"
    # Seen shapes, few operations: derivatives eagerly (compiling sin's, x's
    # and the sum's derivative operations at these shapes).
    assert gradguard.check(lambda x: jnp.sin(x) * x + x, x).passed
    compiles.clear()
    report = gradguard.check(f, x)
    assert report.passed
    # The derivative rows too ran eagerly, on operations compiled by the
    # earlier checks.
    assert compiles == []
    assert len(traces) == 3, "the cache's validating trace and two eager pullbacks'"


def test_jax_small_check_still_fails_a_wrong_rule(jax):
    import jax.numpy as jnp

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x) * x

    def backward(x, g):
        grad = jnp.cos(x) * x + jnp.sin(x)
        return (g * grad.at[1, 2].multiply(1 + 1e-4),)

    f.defvjp(lambda x: (f(x), x), backward)
    x = jax.device_put(_x(12).reshape(3, 4))
    report = gradguard.check(f, x)
    assert report.verdict == "fail" and report.wrong >= 1
    assert report.path == "vectorized"


def test_jax_padded_chunks_give_the_unpadded_values(jax):
    import jax.numpy as jnp

    from gradguard.adapters import jax as jax_adapter

    fn = jax.jit(jax.vmap(lambda x: jnp.sin(x) * x))
    padded = jax_adapter._Padded(jax.jit(lambda fixed, rows: [fn(*rows)]))
    big = jax.device_put(_x(40).reshape(10, 4))
    small = jax.device_put(_x(12, seed=1).reshape(3, 4))
    assert padded([], [big])[0].shape == (10, 4)
    out = padded([], [small])[0]
    assert padded.rows == 10 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, np.asarray(fn(small)))


# -- TensorFlow ---------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["rev", "fwd"])
def test_tensorflow_check_traces_f_a_fixed_number_of_times(direction):
    tf = pytest.importorskip("tensorflow")
    from gradguard.adapters import tensorflow as tf_adapter

    traces: list[int] = []

    def f(x):
        if not tf.executing_eagerly():
            traces.append(1)
        return tf.sin(x) * x

    # n = 1000: the points come in several chunks and the VJP rows in
    # batches; each batch size must reuse one trace.
    x = tf.constant(_x(1000))
    report = gradguard.check(f, x, mode="full", direction=direction)
    assert report.passed and report.path == "vectorized"
    assert 1000 > tf_adapter.EAGER_ROWS
    assert 1 <= len(traces) <= 2, "one vectorised evaluation and one derivative program"


def test_tensorflow_probe_check_runs_eagerly():
    tf = pytest.importorskip("tensorflow")

    traces: list[int] = []

    def f(x):
        if not tf.executing_eagerly():
            traces.append(1)
        return tf.sin(x) * x

    report = gradguard.check(f, tf.constant(_x(1000)), mode="probe")
    assert report.passed
    assert traces == [], "a few points and VJPs cost less eagerly than one trace"
