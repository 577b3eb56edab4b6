"""gradguard.check on real ``tf.custom_gradient`` rules.

The rules follow the ``tf.custom_gradient`` documentation (log1pexp, a
two-input op, a matmul). Correct rules pass in full and probe mode;
deliberately wrong ones fail in both, located and diagnosed in full mode.
Forward mode is checked on TensorFlow's own ops (ForwardAccumulator).
"""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402

import gradguard  # noqa: E402
from reports import assert_fail_at, diagnosis, wrong  # noqa: E402

MODES = ("full", "probe")


def randn(*shape, seed=0, dtype=tf.float64):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


# -- log1pexp (the documentation's example) ---------------------------------


@tf.custom_gradient
def log1pexp(x):
    e = tf.exp(x)

    def grad(upstream):
        return upstream * (1 - 1 / (1 + e))

    return tf.math.log(1 + e), grad


@tf.custom_gradient
def log1pexp_sign_flipped(x):
    e = tf.exp(x)

    def grad(upstream):
        return -upstream * (1 - 1 / (1 + e))

    return tf.math.log(1 + e), grad


@tf.custom_gradient
def log1pexp_stopped(x):
    """Right gradient, built from a stopped tensor: its own derivative is lost."""
    e = tf.exp(x)

    def grad(upstream):
        return upstream * (1 - 1 / (1 + tf.stop_gradient(e)))

    return tf.math.log(1 + e), grad


# -- x * sin(x) --------------------------------------------------------------


@tf.custom_gradient
def x_sin_x(x):
    def grad(upstream):
        return upstream * (tf.sin(x) + x * tf.cos(x))

    return x * tf.sin(x), grad


@tf.custom_gradient
def x_sin_x_missing_term(x):
    def grad(upstream):
        return upstream * x * tf.cos(x)

    return x * tf.sin(x), grad


# -- a two-input op: x * y**2 ------------------------------------------------


@tf.custom_gradient
def x_y_squared(x, y):
    def grad(upstream):
        return upstream * y * y, upstream * 2.0 * x * y

    return x * y * y, grad


@tf.custom_gradient
def x_y_squared_wrong_y(x, y):
    def grad(upstream):
        return upstream * y * y, upstream * x * y  # the 2 is missing

    return x * y * y, grad


# -- a matmul ----------------------------------------------------------------


@tf.custom_gradient
def matmul(a, b):
    def grad(upstream):
        return upstream @ tf.transpose(b), tf.transpose(a) @ upstream

    return a @ b, grad


@tf.custom_gradient
def matmul_transposed(a, b):
    def grad(upstream):
        return upstream @ b, tf.transpose(a) @ upstream  # b is square: a missing transpose

    return a @ b, grad


def matmul_args():
    return randn(3, 4, seed=1), randn(4, 4, seed=2)


# -- scalar output -----------------------------------------------------------


@tf.custom_gradient
def sum_of_squares(x):
    def grad(upstream):
        return 2.0 * x * upstream

    return tf.reduce_sum(x * x), grad


@tf.custom_gradient
def sum_of_squares_ignores_upstream(x):
    def grad(upstream):
        return 2.0 * x

    return tf.reduce_sum(x * x), grad


# -- piecewise: leaky relu ---------------------------------------------------

SLOPE = 0.1


@tf.custom_gradient
def leaky_relu(x):
    def grad(upstream):
        return tf.where(x > 0, upstream, SLOPE * upstream)

    return tf.where(x > 0, x, SLOPE * x), grad


@tf.custom_gradient
def leaky_relu_wrong_negative(x):
    def grad(upstream):
        return tf.where(x > 0, upstream, -SLOPE * upstream)  # sign error for x < 0

    return tf.where(x > 0, x, SLOPE * x), grad


KINKED = tf.constant([-2.0, -0.7, 0.4, 1.5, -0.3, 0.8, -1.6, 2.5], dtype=tf.float64)


CORRECT = {
    "log1pexp": (log1pexp, lambda: (randn(6, seed=3),)),
    "x_sin_x": (x_sin_x, lambda: (randn(6, seed=4),)),
    "x_y_squared": (x_y_squared, lambda: (randn(3, seed=5), randn(3, seed=6))),
    "matmul": (matmul, matmul_args),
    "sum_of_squares": (sum_of_squares, lambda: (randn(5, seed=7),)),
    "leaky_relu": (leaky_relu, lambda: (KINKED,)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_rule_passes(name, mode):
    f, make_args = CORRECT[name]
    report = gradguard.check(f, *make_args(), mode=mode)
    assert report.verdict == "pass", str(report)
    assert report.framework == "tensorflow"
    assert report.relative_error < 1e-6


def plain_op(a, b):
    """TensorFlow's own derivatives (no custom gradient): forward mode works."""
    return tf.sin(a) @ b + tf.reduce_sum(a * a)


@pytest.mark.parametrize("direction", ["fwd", "both"])
@pytest.mark.parametrize("mode", MODES)
def test_forward_mode_on_builtin_ops_passes(mode, direction):
    report = gradguard.check(plain_op, *matmul_args(), mode=mode, direction=direction)
    assert report.verdict == "pass", str(report)


@pytest.mark.parametrize("mode", MODES)
def test_custom_gradient_inside_tf_function(mode):
    @tf.function
    def model(x, y):
        return log1pexp(x_y_squared(x, y)) * 2.0

    report = gradguard.check(model, randn(4, seed=10), randn(4, seed=11), mode=mode)
    assert report.verdict == "pass", str(report)

    @tf.function
    def bad_model(x, y):
        return log1pexp(x_y_squared_wrong_y(x, y)) * 2.0

    report = gradguard.check(bad_model, randn(4, seed=10), randn(4, seed=11), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "y")


def test_variable_input():
    v = tf.Variable(randn(5, seed=12))
    before = v.numpy().copy()
    assert gradguard.check(log1pexp, v, mode="full").verdict == "pass"
    assert gradguard.check(log1pexp_sign_flipped, v, mode="full").verdict == "fail"
    np.testing.assert_array_equal(v.numpy(), before)


# -- wrong rules -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sign_error_fails(mode):
    report = gradguard.check(log1pexp_sign_flipped, randn(6, seed=3), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x", [(i,) for i in range(6)])
        assert "sign flipped" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_missing_product_rule_term_fails(mode):
    report = gradguard.check(x_sin_x_missing_term, randn(6, seed=4), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert all(m.index == m.output_index for m in wrong(report) if m.kind == "entry")


@pytest.mark.parametrize("mode", MODES)
def test_wrong_for_one_of_several_inputs(mode):
    report = gradguard.check(x_y_squared_wrong_y, randn(3, seed=5), randn(3, seed=6), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "y")
        summary = {a.name: a.wrong for a in report.arguments}
        assert summary["x"] == 0 and summary["y"] > 0, str(report)
        assert "only y" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_transpose_fails(mode):
    report = gradguard.check(matmul_transposed, *matmul_args(), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "a")
        assert "transposed" in diagnosis(report), str(report)
        assert {s.name: s.wrong for s in report.arguments}["b"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_ignores_upstream_fails_for_scalar_output(mode):
    report = gradguard.check(sum_of_squares_ignores_upstream, randn(5, seed=7), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "ignores the incoming gradient" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_on_one_branch_fails_only_there(mode):
    report = gradguard.check(leaky_relu_wrong_negative, KINKED, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        negative = [(i,) for i in range(8) if float(KINKED[i]) < 0]
        assert_fail_at(report, "x", negative)
        assert "only" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_second_order(mode):
    x = randn(5, seed=8)
    assert gradguard.check(log1pexp, x, mode=mode, order=2).verdict == "pass"
    first = gradguard.check(log1pexp_stopped, x, mode=mode, order=1)
    assert first.verdict == "pass", str(first)
    second = gradguard.check(log1pexp_stopped, x, mode=mode, order=2)
    assert second.verdict == "fail", str(second)
    if mode == "full":
        assert_fail_at(second, "x")
        assert "zero" in diagnosis(second), str(second)


@pytest.mark.parametrize("mode", MODES)
def test_float32_correct_rule_passes_in_float64(mode):
    x = randn(20, seed=9, dtype=tf.float32)
    report = gradguard.check(x_sin_x, x, mode=mode)
    assert report.verdict == "pass", str(report)
    assert "float64" in report.precision


# -- the batched VJP ------------------------------------------------------------


def test_batched_vjp_equals_one_backward_per_cotangent():
    """The adapter's vectorised VJP gives what a backward per row gives
    custom rules included, and TensorFlow's retracing warning stays quiet."""
    import logging

    from gradguard.adapters.tensorflow import TensorflowAdapter

    seen = []
    handler = logging.Handler()
    handler.emit = seen.append
    logging.getLogger("tensorflow").addHandler(handler)
    try:
        adapter = TensorflowAdapter()
        x, w = randn(30, seed=1), randn(30, seed=2)
        cots = randn(7, 30, seed=3)

        def fn(x, w):
            return [log1pexp(x) * tf.sin(w), tf.reduce_sum(x * w)[None]]

        for _ in range(6):  # TensorFlow warns after 5 retraces
            batched = adapter.vjp(fn, [x, w], [cots, tf.reduce_sum(cots, axis=1)[:, None]])
    finally:
        logging.getLogger("tensorflow").removeHandler(handler)
    for r in range(7):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, w])
            outs = fn(x, w)
        one = tape.gradient(outs, [x, w], output_gradients=[cots[r], tf.reduce_sum(cots[r])[None]])
        for got, want in zip(batched, one):
            # Same sums, perhaps added in another order: equal to rounding.
            np.testing.assert_allclose(got[r].numpy(), want.numpy(), rtol=1e-14, atol=1e-15)
    assert not [r for r in seen if "retracing" in r.getMessage()]


def test_vjp_of_an_op_without_a_vectorisation_rule_still_checks():
    """tf.py_function has no pfor rule: the batched backward pass runs as a
    loop (TensorFlow's fallback, or gradguard's), and the check still reaches
    its verdict."""

    @tf.custom_gradient
    def opaque(x):
        y = tf.py_function(lambda v: tf.sin(v) * v, [x], tf.float64)
        y.set_shape(x.shape)

        def grad(g):
            return g * tf.py_function(lambda v: tf.cos(v) * v + tf.sin(v), [x], tf.float64)

        return y, grad

    report = gradguard.check(opaque, randn(6, seed=4), mode="full")
    assert report.verdict == "pass", str(report)


def test_batched_jvp_equals_one_forward_pass_per_tangent():
    from gradguard.adapters.tensorflow import TensorflowAdapter

    adapter = TensorflowAdapter()
    x, w = randn(30, seed=5), randn(30, seed=6)
    tangents = [randn(9, 30, seed=7), randn(9, 30, seed=8)]

    def fn(x, w):
        return [tf.sin(x) * w, tf.reduce_sum(x * x * w)[None]]

    batched = adapter.jvp(fn, [x, w], tangents)
    for r in range(9):
        with tf.autodiff.ForwardAccumulator(
            primals=[x, w], tangents=[tangents[0][r], tangents[1][r]]
        ) as acc:
            outs = fn(x, w)
        for got, out in zip(batched, outs):
            np.testing.assert_allclose(got[r].numpy(), acc.jvp(out).numpy(), rtol=1e-14, atol=1e-15)
    report = gradguard.check(fn, x, w, mode="full", direction="fwd")
    assert report.verdict == "pass", str(report)
