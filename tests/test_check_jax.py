"""gradguard.check on real ``jax.custom_jvp`` / ``jax.custom_vjp`` rules.

The rules follow JAX's "Custom derivative rules" tutorial (log1pexp,
``f(x, y) = sin(x) * y``, clipping, a safe norm). Correct rules pass in full
and probe mode (and forward mode for ``custom_jvp``); deliberately wrong ones
fail in both, located and diagnosed in full mode.
"""

from __future__ import annotations

import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

from functools import partial  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradguard  # noqa: E402
from reports import assert_fail_at, diagnosis, wrong  # noqa: E402

MODES = ("full", "probe")


def randn(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


# -- custom_jvp: log1pexp (the tutorial's first example) ---------------------


@jax.custom_jvp
def log1pexp(x):
    return jnp.log(1.0 + jnp.exp(x))


@log1pexp.defjvp
def _log1pexp_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    ans = log1pexp(x)
    return ans, x_dot * (1.0 - 1.0 / (1.0 + jnp.exp(x)))


@jax.custom_jvp
def log1pexp_sign_flipped(x):
    return jnp.log(1.0 + jnp.exp(x))


@log1pexp_sign_flipped.defjvp
def _log1pexp_sign_flipped_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    return log1pexp_sign_flipped(x), -x_dot * (1.0 - 1.0 / (1.0 + jnp.exp(x)))


# -- custom_jvp: a sine whose tangent rule is right only at first order ------


@jax.custom_jvp
def sine(x):
    return jnp.sin(x)


sine.defjvps(lambda x_dot, ans, x: jnp.cos(x) * x_dot)


@jax.custom_jvp
def sine_stopped(x):
    return jnp.sin(x)


# The tangent is right, but its own derivative (in x) is lost.
sine_stopped.defjvps(lambda x_dot, ans, x: jnp.cos(jax.lax.stop_gradient(x)) * x_dot)


# -- custom_jvp: safe norm ---------------------------------------------------


@jax.custom_jvp
def safe_norm(x):
    return jnp.sqrt(jnp.sum(x * x))


@safe_norm.defjvp
def _safe_norm_jvp(primals, tangents):
    (x,), (x_dot,) = primals, tangents
    y = safe_norm(x)
    safe_y = jnp.where(y == 0.0, 1.0, y)
    return y, jnp.where(y == 0.0, 0.0, jnp.vdot(x, x_dot) / safe_y)


# -- custom_vjp: f(x, y) = sin(x) * y (the tutorial's example) ---------------


@jax.custom_vjp
def sin_times(x, y):
    return jnp.sin(x) * y


def _sin_times_fwd(x, y):
    return sin_times(x, y), (jnp.cos(x), jnp.sin(x), y)


def _sin_times_bwd(res, g):
    cos_x, sin_x, y = res
    return (cos_x * g * y, sin_x * g)


sin_times.defvjp(_sin_times_fwd, _sin_times_bwd)


@jax.custom_vjp
def sin_times_missing_y(x, y):
    return jnp.sin(x) * y


def _sin_times_missing_y_bwd(res, g):
    cos_x, sin_x, _ = res
    return (cos_x * g, sin_x * g)  # the factor y of d/dx is missing


sin_times_missing_y.defvjp(_sin_times_fwd, _sin_times_missing_y_bwd)


# -- custom_vjp: x * sin(x), with and without the product rule ---------------


@jax.custom_vjp
def x_sin_x_missing_term(x):
    return x * jnp.sin(x)


sin_fwd = lambda x: (x * jnp.sin(x), x)  # noqa: E731
x_sin_x_missing_term.defvjp(sin_fwd, lambda x, g: (g * x * jnp.cos(x),))


# -- custom_vjp: clipping ----------------------------------------------------

LO, HI = -1.0, 1.0


@jax.custom_vjp
def clip(x):
    return jnp.clip(x, LO, HI)


clip.defvjp(lambda x: (clip(x), x), lambda x, g: (g * ((x > LO) & (x < HI)),))


@jax.custom_vjp
def clip_wrong_above(x):
    return jnp.clip(x, LO, HI)


# Passes the gradient through above HI: wrong only on that branch.
clip_wrong_above.defvjp(lambda x: (clip_wrong_above(x), x), lambda x, g: (g * (x > LO),))


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def clip_gradient(lo, hi, x):
    """The tutorial's clip_gradient: identity forward, clipped cotangent. Not
    the derivative of the identity, on purpose: a checker must say so."""
    return x


def _clip_gradient_fwd(lo, hi, x):
    return x, None


def _clip_gradient_bwd(lo, hi, _, g):
    return (jnp.clip(g, lo, hi),)


clip_gradient.defvjp(_clip_gradient_fwd, _clip_gradient_bwd)

# Away from the kinks at +-1.
KINKED = jnp.asarray([-2.0, -0.7, 0.4, 1.5, -0.3, 0.8, -1.6, 2.5])


# -- custom_vjp: matrix-vector product with a square matrix ------------------


@jax.custom_vjp
def matvec(w, x):
    return w @ x


matvec.defvjp(lambda w, x: (w @ x, (w, x)), lambda res, g: (jnp.outer(g, res[1]), res[0].T @ g))


@jax.custom_vjp
def matvec_transposed(w, x):
    return w @ x


matvec_transposed.defvjp(
    lambda w, x: (w @ x, (w, x)), lambda res, g: (jnp.outer(g, res[1]), res[0] @ g)
)


# -- custom_vjp: scalar output that ignores its cotangent --------------------


@jax.custom_vjp
def sum_of_squares(x):
    return jnp.sum(x * x)


sum_of_squares.defvjp(lambda x: (sum_of_squares(x), x), lambda x, g: (2.0 * x * g,))


@jax.custom_vjp
def sum_of_squares_ignores_g(x):
    return jnp.sum(x * x)


sum_of_squares_ignores_g.defvjp(lambda x: (sum_of_squares_ignores_g(x), x), lambda x, g: (2.0 * x,))


def square_w():
    return randn(4, 4, seed=1), randn(4, seed=2)


CORRECT = {
    "log1pexp": (log1pexp, lambda: (randn(6, seed=3),)),
    "sine": (sine, lambda: (randn(5, seed=4),)),
    "safe_norm": (safe_norm, lambda: (randn(5, seed=5),)),
    "sin_times": (sin_times, lambda: (randn(3, seed=6), randn(3, seed=7))),
    "clip": (clip, lambda: (KINKED,)),
    "matvec": (matvec, square_w),
    "sum_of_squares": (sum_of_squares, lambda: (randn(5, seed=8),)),
}
JVP_RULES = ("log1pexp", "sine", "safe_norm")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_rule_passes(name, mode):
    f, make_args = CORRECT[name]
    report = gradguard.check(f, *make_args(), mode=mode)
    assert report.verdict == "pass", str(report)
    assert report.framework == "jax"
    assert report.precision == "float64"
    assert report.relative_error < 1e-6


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", JVP_RULES)
def test_custom_jvp_passes_forward_mode(name, mode):
    f, make_args = CORRECT[name]
    report = gradguard.check(f, *make_args(), mode=mode, direction="both")
    assert report.verdict == "pass", str(report)


def test_custom_jvp_passes_forward_mode_alone():
    report = gradguard.check(log1pexp, randn(6, seed=3), mode="full", direction="fwd")
    assert report.verdict == "pass", str(report)


def test_safe_norm_at_zero_is_not_a_false_alarm():
    # The norm has a kink at 0: the safe rule's 0 is a subgradient. Never "fail".
    report = gradguard.check(safe_norm, jnp.zeros(3), mode="full")
    assert report.verdict in ("pass", "inconclusive"), str(report)


def test_custom_vjp_in_forward_mode_is_refused_clearly():
    with pytest.raises(gradguard.UnsupportedError, match=r"custom_vjp|forward"):
        gradguard.check(sin_times, randn(3, seed=6), randn(3, seed=7), direction="fwd")


# -- wrong rules -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "direction"), [("full", "rev"), ("full", "fwd"), ("probe", "rev"), ("probe", "both")]
)
def test_sign_error_fails(mode, direction):
    x = randn(6, seed=3)
    report = gradguard.check(log1pexp_sign_flipped, x, mode=mode, direction=direction)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x", [(i,) for i in range(6)])
        assert "sign flipped" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_missing_product_rule_term_fails(mode):
    report = gradguard.check(x_sin_x_missing_term, randn(6, seed=9), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert all(m.index == m.output_index for m in wrong(report) if m.kind == "entry")


@pytest.mark.parametrize("mode", MODES)
def test_wrong_for_one_of_several_inputs(mode):
    report = gradguard.check(sin_times_missing_y, randn(3, seed=6), randn(3, seed=7), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        summary = {a.name: a.wrong for a in report.arguments}
        assert summary["x"] > 0 and summary["y"] == 0, str(report)
        assert "only x" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_transpose_fails(mode):
    report = gradguard.check(matvec_transposed, *square_w(), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "transposed" in diagnosis(report), str(report)
        assert {a.name: a.wrong for a in report.arguments}["w"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_ignores_incoming_gradient_fails_for_scalar_output(mode):
    report = gradguard.check(sum_of_squares_ignores_g, randn(5, seed=8), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "ignores the incoming gradient" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_on_one_branch_fails_only_there(mode):
    report = gradguard.check(clip_wrong_above, KINKED, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        above = [(i,) for i in range(len(KINKED)) if KINKED[i] > HI]
        assert_fail_at(report, "x", above)
        assert report.wrong >= len(above)
        assert "only" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_clip_gradient_is_not_the_derivative(mode):
    # The cotangents gradguard draws exceed the clipping range: the tutorial's
    # clip_gradient is not a derivative of the identity, and must not pass.
    x = randn(6, seed=10)
    report = gradguard.check(clip_gradient, LO, HI, x, mode=mode)
    assert report.verdict == "fail", str(report)
    # lo and hi (nondiff_argnums, Python floats) are passed through untouched.
    assert [a.name for a in report.arguments] == ["x"]
    # Clipping far beyond any cotangent gradguard draws is the identity's derivative.
    wide = gradguard.check(clip_gradient, -1e6, 1e6, x, mode=mode)
    assert wide.verdict == "pass", str(wide)


@pytest.mark.parametrize("mode", MODES)
def test_jitted_function_with_custom_rules(mode):
    @jax.jit
    def model(x, y):
        return log1pexp(sin_times(x, y)) + clip(x)

    report = gradguard.check(model, randn(4, seed=12), randn(4, seed=13), mode=mode)
    assert report.verdict == "pass", str(report)

    @jax.jit
    def bad_model(x, y):
        return log1pexp(sin_times_missing_y(x, y)) + clip(x)

    report = gradguard.check(bad_model, randn(4, seed=12), randn(4, seed=13), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")


@pytest.mark.parametrize("mode", MODES)
def test_second_order(mode):
    x = randn(5, seed=4)
    assert gradguard.check(sine, x, mode=mode, order=2).verdict == "pass"
    first = gradguard.check(sine_stopped, x, mode=mode, order=1)
    assert first.verdict == "pass", str(first)
    second = gradguard.check(sine_stopped, x, mode=mode, order=2)
    assert second.verdict == "fail", str(second)
    if mode == "full":
        assert_fail_at(second, "x")
        assert "zero" in diagnosis(second), str(second)


@pytest.mark.parametrize("mode", MODES)
def test_second_order_forward_mode(mode):
    x = randn(5, seed=4)
    right = gradguard.check(sine, x, mode=mode, order=2, direction="both")
    assert right.verdict == "pass", str(right)
    wrong_rule = gradguard.check(sine_stopped, x, mode=mode, order=2, direction="fwd")
    assert wrong_rule.verdict == "fail", str(wrong_rule)


@pytest.mark.parametrize("mode", MODES)
def test_float32_correct_rule_passes_in_float64(mode):
    x = randn(20, seed=11).astype(jnp.float32)
    report = gradguard.check(log1pexp, x, mode=mode)
    assert report.verdict == "pass", str(report)
    assert "float64" in report.precision
