"""The seed contract: ``check_gradient(f, x, analytical_grad, epsilon=1e-7)``.

Every test runs on every array kind (``xp_backend``); lists of floats have
their own tests. Test functions only index and use arithmetic operators, or
the backend's own ``exp``/``sin``/``sum``, so the same ``f`` runs on each.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

import gradguard

# (name, f, x, true gradient, relative error DESIGN.md quotes)
WORKED_EXAMPLES = [
    ("squares", lambda x: x[0] ** 2 + x[1] ** 2, [3.0, 4.0], [6.0, 8.0], 1e-9),
    ("sum", lambda x: x[0] + x[1] + x[2], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0], 1.9e-9),
    ("cubes", lambda x: x[0] ** 3 + x[1] ** 3, [2.0, -1.0], [12.0, 3.0], 3e-10),
]
EXAMPLE_IDS = [e[0] for e in WORKED_EXAMPLES]


def _weighted_squares(x):
    """sum_ij c_ij x_ij**2 for a (2, 3) x, written with indexing only."""
    total = 0.0
    for i in range(2):
        for j in range(3):
            total = total + (1 + i + 2 * j) * x[i, j] ** 2
    return total


def _weighted_squares_grad(x: np.ndarray) -> np.ndarray:
    c = np.array([[1 + i + 2 * j for j in range(3)] for i in range(2)], dtype=float)
    return 2 * c * x


def _epsilons_named(message: str) -> list[float]:
    return [float(m) for m in re.findall(r"epsilon\s*=\s*([0-9][0-9.eE+-]*)", message)]


# -- the three worked examples ----------------------------------------------


@pytest.mark.parametrize(("name", "f", "x", "grad", "quoted"), WORKED_EXAMPLES, ids=EXAMPLE_IDS)
def test_worked_examples(xp_backend, name, f, x, grad, quoted):
    xs = xp_backend.asarray(x)
    numerical, error = gradguard.check_gradient(f, xs, xp_backend.asarray(grad), epsilon=1e-7)
    assert xp_backend.is_native(numerical)
    np.testing.assert_allclose(xp_backend.to_numpy(numerical), grad, rtol=1e-7)
    assert type(error) is float
    assert 0.0 < error < 1e-8
    # "About" the quoted figure: the same order of magnitude.
    assert quoted / 10 < error < quoted * 10


@pytest.mark.parametrize(("name", "f", "x", "grad", "quoted"), WORKED_EXAMPLES, ids=EXAMPLE_IDS)
def test_worked_examples_with_lists(name, f, x, grad, quoted):
    numerical, error = gradguard.check_gradient(f, list(x), list(grad), epsilon=1e-7)
    assert type(numerical) is np.ndarray
    assert numerical.dtype == np.float64
    assert numerical.shape == (len(x),)
    np.testing.assert_allclose(numerical, grad, rtol=1e-7)
    assert type(error) is float
    assert 0.0 < error < 1e-8
    assert quoted / 10 < error < quoted * 10


def test_default_epsilon_is_1e_7():
    f, x, grad = WORKED_EXAMPLES[0][1:4]
    default_grad, default_error = gradguard.check_gradient(f, x, grad)
    explicit_grad, explicit_error = gradguard.check_gradient(f, x, grad, epsilon=1e-7)
    other_grad, _ = gradguard.check_gradient(f, x, grad, epsilon=1e-5)
    assert np.array_equal(default_grad, explicit_grad)
    assert default_error == explicit_error
    assert not np.array_equal(default_grad, other_grad)


def test_centred_difference_formula_exactly():
    """numerical[i] is (f(x + eps e_i) - f(x - eps e_i)) / (2 eps), computed as written."""
    x = np.array([0.3, -1.7, 2.5])
    eps = 1e-7

    def f(v):
        return v[0] ** 3 + v[0] * v[1] + math.e * v[2] ** 2

    numerical, _ = gradguard.check_gradient(f, x, np.zeros(3), epsilon=eps)
    expected = np.empty(3)
    for i in range(3):
        up, down = x.copy(), x.copy()
        up[i] += eps
        down[i] -= eps
        expected[i] = (f(up) - f(down)) / (2 * eps)
    np.testing.assert_allclose(numerical, expected, rtol=1e-12, atol=0)


# -- what comes back --------------------------------------------------------


def test_result_has_the_kind_shape_and_dtype_of_x(xp_backend):
    x0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]])
    x = xp_backend.asarray(x0)
    grad = _weighted_squares_grad(x0)
    numerical, error = gradguard.check_gradient(_weighted_squares, x, xp_backend.asarray(grad))
    assert xp_backend.is_native(numerical)
    assert tuple(numerical.shape) == (2, 3)
    assert xp_backend.dtype_name(numerical) == "float64"
    np.testing.assert_allclose(xp_backend.to_numpy(numerical), grad, rtol=1e-6)
    assert type(error) is float
    assert error < 1e-8


def test_relative_error_is_exactly_zero_when_both_are_zero(xp_backend):
    x = xp_backend.asarray([1.0, -2.0, 3.0])

    def constant(v):
        return v[0] * 0.0 + 7.0

    numerical, error = gradguard.check_gradient(constant, x, xp_backend.asarray([0.0, 0.0, 0.0]))
    assert np.all(xp_backend.to_numpy(numerical) == 0.0)
    assert error == 0.0
    assert type(error) is float


def test_relative_error_reports_a_wrong_gradient(xp_backend):
    f, x, grad = WORKED_EXAMPLES[0][1:4]
    wrong = [-g for g in grad]
    _, error = gradguard.check_gradient(f, xp_backend.asarray(x), xp_backend.asarray(wrong))
    # ||num - ana|| / (||num|| + ||ana||) with ana = -num is exactly 1.
    assert error == pytest.approx(1.0, abs=1e-9)
    _, error = gradguard.check_gradient(f, xp_backend.asarray(x), xp_backend.asarray([6.0, 0.0]))
    assert error == pytest.approx(8.0 / (10.0 + 6.0), rel=1e-6)


def test_x_is_never_modified(xp_backend):
    x0 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -3.0]])
    x = xp_backend.asarray(x0)
    grad = xp_backend.asarray(_weighted_squares_grad(x0))
    snapshot = xp_backend.to_numpy(x).copy()
    gradguard.check_gradient(_weighted_squares, x, grad)
    gradguard.numerical_gradient(_weighted_squares, x, order=4)
    assert np.array_equal(xp_backend.to_numpy(x), snapshot)
    assert xp_backend.dtype_name(x) == "float64"
    assert tuple(x.shape) == (2, 3)


def test_list_input_is_not_modified():
    x = [3.0, 4.0]
    gradguard.check_gradient(WORKED_EXAMPLES[0][1], x, [6.0, 8.0])
    assert x == [3.0, 4.0]


def test_torch_tensor_that_requires_grad_is_left_alone():
    torch = pytest.importorskip("torch")
    x = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    numerical, error = gradguard.check_gradient(
        WORKED_EXAMPLES[0][1], x, torch.tensor([6.0, 8.0], dtype=torch.float64)
    )
    assert error < 1e-8
    assert x.requires_grad
    assert x.grad is None
    assert torch.equal(x.detach(), torch.tensor([3.0, 4.0], dtype=torch.float64))
    assert not numerical.requires_grad


# -- precision ----------------------------------------------------------------


def test_float32_with_default_epsilon_warns_and_evaluates_in_float64(xp_backend):
    f, x, grad = WORKED_EXAMPLES[0][1:4]
    seen = []

    def spy(v):
        seen.append(xp_backend.dtype_name(v))
        return f(v)

    x32 = xp_backend.asarray(x, dtype="float32")
    with pytest.warns(gradguard.PrecisionWarning):
        numerical, error = gradguard.check_gradient(
            spy, x32, xp_backend.asarray(grad, dtype="float32")
        )
    assert "float64" in seen
    assert xp_backend.is_native(numerical)
    assert xp_backend.dtype_name(numerical) == "float32"
    np.testing.assert_allclose(xp_backend.to_numpy(numerical), grad, rtol=1e-6)
    assert error < 1e-6


def test_float32_function_that_refuses_float64_raises_naming_a_working_epsilon(xp_backend):
    f, x, grad = WORKED_EXAMPLES[0][1:4]

    def float32_only(v):
        if xp_backend.dtype_name(v) != "float32":
            raise TypeError(f"float32 only, got {xp_backend.dtype_name(v)}")
        return f(v)

    x32 = xp_backend.asarray(x, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradguard.PrecisionWarning)
        with pytest.raises(gradguard.PrecisionError) as info:
            gradguard.check_gradient(float32_only, x32, xp_backend.asarray(grad, dtype="float32"))
    named = _epsilons_named(str(info.value))
    assert named, f"no epsilon named in: {info.value}"
    numerical, error = gradguard.check_gradient(
        float32_only, x32, xp_backend.asarray(grad, dtype="float32"), epsilon=named[0]
    )
    assert xp_backend.dtype_name(numerical) == "float32"
    np.testing.assert_allclose(xp_backend.to_numpy(numerical), grad, rtol=1e-3)
    assert error < 1e-3


def test_step_lost_in_float64_raises_naming_a_working_epsilon(xp_backend):
    f = WORKED_EXAMPLES[0][1]
    x = [1e12, -2e12]
    grad = [2e12, -4e12]
    with pytest.raises(gradguard.PrecisionError) as info:
        gradguard.check_gradient(f, xp_backend.asarray(x), xp_backend.asarray(grad))
    assert isinstance(info.value, ValueError)
    named = _epsilons_named(str(info.value))
    assert named, f"no epsilon named in: {info.value}"
    numerical, error = gradguard.check_gradient(
        f, xp_backend.asarray(x), xp_backend.asarray(grad), epsilon=named[0]
    )
    np.testing.assert_allclose(xp_backend.to_numpy(numerical), grad, rtol=1e-8)
    assert error < 1e-8


def test_step_lost_in_float64_for_lists_too():
    with pytest.raises(gradguard.PrecisionError):
        gradguard.check_gradient(WORKED_EXAMPLES[0][1], [1e12, 1.0], [2e12, 2.0])


# -- numerical_gradient with steps chosen per entry -------------------------


@pytest.mark.parametrize("order", [2, 4, 6])
def test_numerical_gradient_orders_are_accurate(xp_backend, order):
    x0 = np.array([[0.3, -1.2, 2.0], [0.0, 5.5, -0.7]])
    exp, sin, total = xp_backend.exp, xp_backend.sin, xp_backend.sum

    def f(v):
        return total(exp(v) + sin(v) * v)

    true = np.exp(x0) + np.cos(x0) * x0 + np.sin(x0)
    x = xp_backend.asarray(x0)
    numerical = gradguard.numerical_gradient(f, x, order=order)
    assert xp_backend.is_native(numerical)
    assert tuple(numerical.shape) == (2, 3)
    assert xp_backend.dtype_name(numerical) == "float64"
    assert gradguard.relative_error(xp_backend.to_numpy(numerical), true) < 1e-8
    np.testing.assert_allclose(xp_backend.to_numpy(numerical), true, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("order", [2, 4, 6])
def test_higher_orders_are_more_accurate(order):
    """Order p has error ~ eps**(p/(p+1)): each order beats the one before."""
    x = np.linspace(-2.0, 2.0, 9)
    true = np.exp(x) * (np.sin(x) + np.cos(x))
    errors = {
        p: gradguard.relative_error(
            gradguard.numerical_gradient(lambda v: np.sum(np.exp(v) * np.sin(v)), x, order=p),
            true,
        )
        for p in (2, 4, 6)
    }
    assert errors[order] < {2: 1e-9, 4: 1e-11, 6: 1e-11}[order]
    assert errors[4] < errors[2]


def test_numerical_gradient_float32_without_epsilon_needs_no_float64(xp_backend):
    x0 = np.array([0.5, -1.5, 3.0])

    def f(v):
        if xp_backend.dtype_name(v) != "float32":
            raise TypeError("float32 only")
        return xp_backend.sum(xp_backend.sin(v))

    with warnings.catch_warnings():
        warnings.simplefilter("error", gradguard.PrecisionWarning)
        numerical = gradguard.numerical_gradient(f, xp_backend.asarray(x0, dtype="float32"))
    assert xp_backend.dtype_name(numerical) == "float32"
    np.testing.assert_allclose(xp_backend.to_numpy(numerical), np.cos(x0), rtol=1e-3, atol=1e-4)


def test_numerical_gradient_rejects_unknown_order():
    with pytest.raises(gradguard.ArgumentError):
        gradguard.numerical_gradient(lambda v: v[0], [1.0], order=3)


# -- relative_error -----------------------------------------------------------


def test_relative_error_is_symmetric_and_zero_for_equal(xp_backend):
    a = xp_backend.asarray([[1.0, -2.0], [0.5, 4.0]])
    b = xp_backend.asarray([[1.5, -2.0], [0.5, 3.0]])
    ab = gradguard.relative_error(a, b)
    assert type(ab) is float
    assert ab == gradguard.relative_error(b, a)
    expected = np.linalg.norm([0.5, 1.0]) / (
        np.linalg.norm([1.0, 2.0, 0.5, 4.0]) + np.linalg.norm([1.5, 2.0, 0.5, 3.0])
    )
    assert ab == pytest.approx(expected, rel=1e-12)
    assert gradguard.relative_error(a, a) == 0.0
    assert gradguard.relative_error(a, xp_backend.to_numpy(a)) == 0.0


def test_relative_error_of_lists():
    assert gradguard.relative_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert gradguard.relative_error([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert gradguard.relative_error([1.0, 0.0], [-1.0, 0.0]) == 1.0
