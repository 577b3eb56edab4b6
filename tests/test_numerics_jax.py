"""Float64 error estimates and verdicts on JAX's own operations (issue 16).

Families 3 (float64 inputs, narrower outputs), 4 (forward mode as safe as
reverse), 5 (one entry off by 1e-4 still fails), 11 (functions that lose
precision inside) and 12 (tolerance floors), with x64 enabled.
"""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradguard  # noqa: E402


def randn(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


@pytest.mark.parametrize("direction", ["rev", "fwd"])
def test_float32_output_of_float64_input_passes(direction):
    r = gradguard.check(
        lambda x: jnp.sin(x).astype(jnp.float32), randn(5, 4), mode="full", direction=direction
    )
    assert r.verdict == "pass", str(r)


def test_complex64_output_of_float64_input_passes():
    r = gradguard.check(lambda x: jnp.exp(1j * x).astype(jnp.complex64), randn(5, 4))
    assert r.verdict == "pass", str(r)


@pytest.mark.parametrize("direction", ["rev", "fwd"])
def test_exact_zero_difference_against_analytical_rounding(direction):
    def f(x):
        return jnp.exp(x) + 1j * (jnp.sin(x) ** 2 + jnp.cos(x) ** 2 - 1)

    r = gradguard.check(f, randn(5, 4), mode="full", direction=direction)
    assert r.verdict == "pass", str(r)


def _off_entry_function(relative):
    """f(x) = W @ sin(x) whose VJP has J[1, 2] off by ``relative``."""
    w = randn(4, 5, seed=7)
    scale = np.ones((4, 5))
    scale[1, 2] += relative
    scale = jnp.asarray(scale)

    @jax.custom_vjp
    def f(x):
        return w @ jnp.sin(x)

    def fwd(x):
        return f(x), x

    def bwd(x, g):
        return (((w * jnp.cos(x)[None, :]) * scale).T @ g,)

    f.defvjp(fwd, bwd)
    return f


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_one_entry_off_by_1e4_relative_fails(mode):
    x = randn(5, seed=4)
    assert gradguard.check(_off_entry_function(0.0), x, mode=mode).verdict == "pass"
    r = gradguard.check(_off_entry_function(1e-4), x, mode=mode)
    assert r.verdict == "fail", str(r)


@pytest.mark.parametrize("seed", range(3))
def test_sine_of_a_large_cumulative_sum_is_no_false_alarm(seed):
    x = 30 * randn(7, 19, seed=seed)
    r = gradguard.check(lambda x: jnp.sin(jnp.cumsum(x * x, -1)), x, mode="full")
    assert r.wrong == 0, str(r)


def test_a_staircase_is_never_a_failure():
    r = gradguard.check(lambda x: ((x + 1e8) - 1e8) * 2.0, randn(5), mode="full")
    assert r.verdict != "fail", str(r)


def _layer_norm(x):
    centred = x - x.mean(-1, keepdims=True)
    return centred / jnp.sqrt((centred * centred).mean(-1, keepdims=True) + 1e-5)


@pytest.mark.parametrize("direction", ["rev", "fwd"])
def test_layer_norm_of_equal_entries_is_no_false_alarm(direction):
    x = np.array(randn(3, 5))
    x[0] = 2.5  # a row of equal entries
    for y in (jnp.asarray(x), randn(4, 1)):
        r = gradguard.check(_layer_norm, y, mode="full", direction=direction)
        assert r.verdict != "fail", str(r)


def test_a_derivative_below_what_differences_resolve_is_inconclusive():
    x = randn(4)
    r = gradguard.check(
        lambda x: (1 + 1e-12 * jnp.sin(x)).sum(), x, grad=lambda x: -1e-12 * jnp.cos(x)
    )
    assert r.verdict == "inconclusive", str(r)
