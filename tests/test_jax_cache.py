"""JAX checks reuse compiled code across checks of the same function.

Compilations are counted by JAX's own monitoring event for a backend
compile; traces by a Python side effect in ``f``, which runs only while JAX
traces it (or evaluates it eagerly). Nothing is mocked.
"""

from __future__ import annotations

import gc
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradguard  # noqa: E402
from gradguard.adapters import jax as jax_adapter  # noqa: E402

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@pytest.fixture
def compiles():
    """A list that receives one entry per XLA compilation while the test runs."""
    seen: list[str] = []

    def listener(event, duration, **kwargs):
        if event == COMPILE_EVENT:
            seen.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield seen
    jax.monitoring.unregister_event_duration_listener(listener)


def randn(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def same_result(a, b):
    da, db = a.to_dict(), b.to_dict()
    da.pop("seconds"), db.pop("seconds")
    return da == db


@pytest.mark.parametrize(
    ("mode", "direction"), [("full", "rev"), ("probe", "rev"), ("full", "fwd"), ("probe", "fwd")]
)
def test_second_check_compiles_nothing(compiles, mode, direction):
    traces = []

    def f(x):
        if isinstance(x, jax.core.Tracer):
            traces.append(1)
        return jnp.sin(x) * x

    x = randn(12)
    first = gradguard.check(f, x, mode=mode, direction=direction)
    assert first.passed and first.path == "vectorized"
    assert compiles, "the first check compiles"
    traced_first = len(traces)
    compiles.clear()
    traces.clear()
    second = gradguard.check(f, x, mode=mode, direction=direction)
    assert compiles == []
    # One trace (no compilation) that makes sure f still computes the same,
    # and those of eager pullbacks, where the first check took them so (a
    # few rows at shapes an earlier test saw: see EAGER_EQUATIONS).
    assert 1 <= len(traces) <= traced_first
    assert same_result(first, second)


def test_other_values_in_a_non_differentiated_array(compiles):
    def f(x, y):
        return jnp.sin(x) * y + x * jnp.sum(y**2)

    x, y = randn(6), randn(6, seed=1)
    # Flipped signs: stale values baked into the compiled code would make the
    # batched evaluation disagree with f (and the gradient with the differences).
    flipped = -2.0 * y
    assert gradguard.check(f, x, y, wrt=0, mode="full").passed
    compiles.clear()
    other = gradguard.check(f, x, flipped, wrt=0, mode="full")
    assert other.passed and other.path == "vectorized"
    assert compiles == [], "y is an argument of the compiled code, not a constant"


def test_a_changed_closure_is_seen():
    state = {"w": randn(5, seed=2)}

    def f(x):
        return jnp.sin(x) * state["w"]

    x = randn(5)
    assert gradguard.check(f, x, mode="full").passed
    state["w"] = -3.0 * state["w"]
    again = gradguard.check(f, x, mode="full")
    assert again.passed and again.path == "vectorized"


def test_python_scalars_are_part_of_the_key(compiles):
    def f(x, a, kind):
        return jnp.sin(a * x) if kind == "sin" else jnp.cos(a * x)

    x = randn(4)
    assert gradguard.check(f, x, 2.0, "sin", wrt=0, mode="full").passed
    for a, kind in [(-3.0, "sin"), (2.0, "cos"), (-0.5, "cos")]:
        report = gradguard.check(f, x, a, kind, wrt=0, mode="full")
        assert report.passed and report.path == "vectorized", (a, kind)
    compiles.clear()
    assert gradguard.check(f, x, 2.0, "sin", wrt=0, mode="full").passed
    assert compiles == []


def test_a_wrong_rule_fails_every_time():
    @jax.custom_vjp
    def sin(x):
        return jnp.sin(x)

    sin.defvjp(lambda x: (jnp.sin(x), x), lambda x, c: (-c * jnp.cos(x),))
    x = randn(5)
    first = gradguard.check(sin, x, mode="full")
    second = gradguard.check(sin, x, mode="full")
    assert first.verdict == "fail" and first.wrong > 0
    assert same_result(first, second)


def test_other_leaves_are_not_cached(compiles):
    class Settings:  # mutable, hashed by identity: no safe key
        scale = 2.0

    def f(x, settings):
        return jnp.sin(settings.scale * x)

    x, settings = randn(4), Settings()
    assert gradguard.check(f, x, settings, wrt=0, mode="full").passed
    settings.scale = -3.0
    compiles.clear()
    report = gradguard.check(f, x, settings, wrt=0, mode="full")
    assert report.passed and report.path == "vectorized"
    assert compiles, "compiled afresh"


def test_thread_pool_shares_the_cache(compiles):
    def f(x):
        return jnp.tanh(x) * x

    x = randn(40)
    with ThreadPoolExecutor(2) as pool:
        first = gradguard.check(f, x, mode="full", executor=pool)
        compiles.clear()
        second = gradguard.check(f, x, mode="full", executor=pool)
    assert first.passed and second.passed
    assert compiles == []


def test_cache_is_bounded_and_lets_functions_go(monkeypatch):
    monkeypatch.setattr(jax_adapter, "CACHE_SIZE", 2)
    jax_adapter.clear_cache()
    x = randn(3)
    refs = []
    for scale in (1.0, 2.0, 3.0, 4.0):

        def f(x, scale=scale):
            return jnp.sin(scale * x)

        refs.append(weakref.ref(f))
        assert gradguard.check(f, x, mode="full").passed
        del f
    assert len(jax_adapter._cache) == 2
    gc.collect()
    assert [r() is None for r in refs] == [True, True, False, False]
    jax_adapter.clear_cache()
    gc.collect()
    assert all(r() is None for r in refs)
