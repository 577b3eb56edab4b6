"""gradguard.check on hand-written NumPy derivatives, passed as ``grad=`` or ``vjp=``.

NumPy has no autodiff: the student writes the gradient (of a scalar f) or the
vector-Jacobian product (of any f) by hand, and gradguard checks it.
"""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")

import gradguard  # noqa: E402
from reports import assert_fail_at, diagnosis  # noqa: E402

MODES = ("full", "probe")


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# -- scalar functions with grad= ---------------------------------------------


def quadratic(x):
    return np.sum(x**2) + np.sum(x[:-1] * x[1:])


def quadratic_grad(x):
    g = 2 * x
    g[:-1] += x[1:]
    g[1:] += x[:-1]
    return g


def quadratic_grad_sign_flipped(x):
    return -quadratic_grad(x)


def x_sin_x_sum(x):
    return np.sum(x * np.sin(x))


def x_sin_x_grad(x):
    return np.sin(x) + x * np.cos(x)


def x_sin_x_grad_missing_term(x):
    return x * np.cos(x)


def sin_times(x, y):
    return np.sum(np.sin(x) * y)


def sin_times_grad(x, y):
    return np.cos(x) * y, np.sin(x)


def sin_times_grad_wrong_x(x, y):
    return np.cos(x), np.sin(x)


# -- array functions with vjp= ------------------------------------------------


def tanh(x):
    return np.tanh(x)


def tanh_vjp(g, x):
    return g * (1 - np.tanh(x) ** 2)


def tanh_vjp_ignores_g(g, x):
    return 1 - np.tanh(x) ** 2


def matvec(w, x):
    return w @ x


def matvec_vjp(g, w, x):
    return np.outer(g, x), w.T @ g


def matvec_vjp_transposed(g, w, x):
    return np.outer(g, x), w @ g


def sum_of_squares(x):
    return np.sum(x * x)


def sum_of_squares_vjp_ignores_g(g, x):
    return 2 * x


def relu(x):
    return np.maximum(x, 0.0)


def relu_vjp(g, x):
    return g * (x > 0)


def relu_vjp_wrong_negative(g, x):
    return np.where(x > 0, g, 0.5 * g)


KINKED = np.array([-2.0, -0.7, 0.4, 1.5, -0.3, 0.8, -1.6, 2.5])


CORRECT = {
    "quadratic/grad": (quadratic, dict(grad=quadratic_grad), lambda: (randn(6, seed=1),)),
    "x_sin_x/grad": (x_sin_x_sum, dict(grad=x_sin_x_grad), lambda: (randn(6, seed=2),)),
    "sin_times/grad": (
        sin_times,
        dict(grad=sin_times_grad),
        lambda: (randn(3, seed=3), randn(3, seed=4)),
    ),
    "tanh/vjp": (tanh, dict(vjp=tanh_vjp), lambda: (randn(5, seed=5),)),
    "matvec/vjp": (matvec, dict(vjp=matvec_vjp), lambda: (randn(4, 4, seed=6), randn(4, seed=7))),
    "relu/vjp": (relu, dict(vjp=relu_vjp), lambda: (KINKED,)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_hand_written_rule_passes(name, mode):
    f, rule, make_args = CORRECT[name]
    report = gradguard.check(f, *make_args(), mode=mode, **rule)
    assert report.verdict == "pass", str(report)
    assert report.relative_error < 1e-6


@pytest.mark.parametrize("mode", MODES)
def test_sign_error_fails(mode):
    report = gradguard.check(
        quadratic, randn(6, seed=1), grad=quadratic_grad_sign_flipped, mode=mode
    )
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")


def test_sign_error_diagnosed_for_scalar_output_whatever_the_seed():
    x = randn(6, seed=1)
    for seed in range(6):
        report = gradguard.check(
            quadratic, x, grad=quadratic_grad_sign_flipped, mode="full", seed=seed
        )
        assert report.verdict == "fail"
        text = diagnosis(report)
        assert "sign flipped" in text, (seed, str(report))
        # grad= rules are multiplied by the cotangent by gradguard itself:
        # they cannot ignore it.
        assert "ignores the incoming gradient" not in text, (seed, str(report))


@pytest.mark.parametrize("mode", MODES)
def test_missing_product_rule_term_fails(mode):
    report = gradguard.check(
        x_sin_x_sum, randn(6, seed=2), grad=x_sin_x_grad_missing_term, mode=mode
    )
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")


@pytest.mark.parametrize("mode", MODES)
def test_wrong_for_one_of_several_inputs(mode):
    report = gradguard.check(
        sin_times, randn(3, seed=3), randn(3, seed=4), grad=sin_times_grad_wrong_x, mode=mode
    )
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        summary = {a.name: a.wrong for a in report.arguments}
        assert summary["x"] > 0 and summary["y"] == 0, str(report)
        assert "only x" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_transpose_fails(mode):
    args = randn(4, 4, seed=6), randn(4, seed=7)
    report = gradguard.check(matvec, *args, vjp=matvec_vjp_transposed, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "transposed" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_ignores_incoming_gradient_fails(mode):
    report = gradguard.check(tanh, randn(5, seed=5), vjp=tanh_vjp_ignores_g, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "ignores the incoming gradient" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_ignores_incoming_gradient_fails_for_scalar_output(mode):
    report = gradguard.check(
        sum_of_squares, randn(5, seed=8), vjp=sum_of_squares_vjp_ignores_g, mode=mode
    )
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "ignores the incoming gradient" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_on_one_branch_fails_only_there(mode):
    report = gradguard.check(relu, KINKED, vjp=relu_vjp_wrong_negative, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        negative = [(i,) for i in range(8) if KINKED[i] < 0]
        assert_fail_at(report, "x", negative)
        assert "only" in diagnosis(report), str(report)


def test_norm_at_its_kink_is_no_false_alarm():
    # sqrt(sum x**2) at 0 with the subgradient 0: never "fail", and no warning.
    report = gradguard.check(
        lambda x: np.sqrt(np.sum(x * x)), np.zeros(3), grad=lambda x: np.zeros(3), mode="full"
    )
    assert report.verdict in ("pass", "inconclusive"), str(report)


def test_float32_input_checked_in_float64():
    x = randn(10, seed=9).astype(np.float32)
    report = gradguard.check(tanh, x, vjp=tanh_vjp, mode="full")
    assert report.verdict == "pass", str(report)
    assert "float64" in report.precision
    assert x.dtype == np.float32


def test_without_a_rule_numpy_is_refused_clearly():
    with pytest.raises(gradguard.UnsupportedError, match=r"grad=|vjp="):
        gradguard.check(tanh, randn(3))


def test_second_order_needs_autodiff():
    with pytest.raises(gradguard.GradguardError, match="order"):
        gradguard.check(tanh, randn(3), vjp=tanh_vjp, order=2)


def test_the_callers_array_is_not_mutated():
    x = randn(6, seed=1)
    before = x.copy()

    def mutating_grad(x):
        g = quadratic_grad(x)
        return g

    gradguard.check(quadratic, x, grad=mutating_grad, mode="full")
    np.testing.assert_array_equal(x, before)
