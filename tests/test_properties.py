"""Property tests (hypothesis) over the public API and the core.

- Random polynomials with known derivatives, on random shapes (0-d
  included) and dtypes (float32, float64): ``check`` passes,
  ``check_gradient`` gives a small error, ``numerical_gradient`` is close.
- The same wrong derivative never passes.
- ``relative_error`` is symmetric, lies in [0, 1] and is 0 exactly when the
  arrays are equal, for any finite arrays; the core's norm agrees.
- Empty arrays of any shape are refused by every function that takes a point.
"""

from __future__ import annotations

import warnings
from fractions import Fraction

import array_api_compat.numpy as npx
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradguard
from gradguard.core import norms

SETTINGS = settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
float_dtypes = st.sampled_from([np.float32, np.float64])


def _uniform(dtype, shape, low, high):
    return hnp.arrays(
        dtype,
        shape,
        elements=st.floats(low, high, width=np.dtype(dtype).itemsize * 8),
    )


@st.composite
def polynomials(draw, dtypes=float_dtypes):
    """x and coefficients of f(x) = sum(a x + b x**2 + c x**3) + d (sum x)**2.

    With a in [2, 3], |b|, |c| <= 1 and |x| <= 1/2 every entry of the gradient
    is at least 1/4 away from zero before the coupling term d, so the error
    is relative to a gradient that is not itself rounding noise.
    """
    dtype = draw(dtypes)
    shape = draw(shapes)
    x = np.asarray(draw(_uniform(dtype, shape, -0.5, 0.5)))
    a = draw(_uniform(np.float64, shape, 2.0, 3.0))
    b = draw(_uniform(np.float64, shape, -1.0, 1.0))
    c = draw(_uniform(np.float64, shape, -1.0, 1.0))
    d = draw(st.floats(-0.1, 0.1))
    return x, (a, b, c, d)


def poly(coefficients):
    a, b, c, d = coefficients

    def f(x):
        return (a * x + b * x**2 + c * x**3).sum() + d * x.sum() ** 2

    def grad(x):
        # In x's dtype, as a hand-written rule would return it.
        return (a + 2 * b * x + 3 * c * x**2 + 2 * d * x.sum()).astype(np.asarray(x).dtype)

    return f, grad


@SETTINGS
@given(polynomials())
def test_check_passes_polynomials_with_their_derivative(case):
    x, coefficients = case
    f, grad = poly(coefficients)
    report = gradguard.check(f, x, grad=grad, progress=False)
    assert report.verdict == "pass", str(report)
    assert report.num_inputs == x.size
    assert report.arguments[0].shape == x.shape
    assert report.wrong == 0


@SETTINGS
@given(polynomials(), st.sampled_from([-1.0, 0.5, 1.5]))
def test_check_fails_a_scaled_derivative(case, factor):
    x, coefficients = case
    f, grad = poly(coefficients)
    report = gradguard.check(f, x, grad=lambda v: grad(v) * factor, progress=False)
    assert report.verdict == "fail", str(report)
    assert not report.passed


@SETTINGS
@given(polynomials(st.just(np.float64)))
def test_check_gradient_of_polynomials_has_a_small_error(case):
    x, coefficients = case
    f, grad = poly(coefficients)
    numerical, error = gradguard.check_gradient(f, x, grad(x))
    assert type(error) is float
    assert 0.0 <= error < 1e-6
    assert numerical.shape == x.shape and numerical.dtype == x.dtype
    assert np.isfinite(numerical).all()


@SETTINGS
@given(polynomials(st.just(np.float32)))
def test_check_gradient_in_float32_steps_into_float64(case):
    """epsilon=1e-7 is lost in float32 (at x or in f): f is evaluated in float64
    with a warning and the error is as small as in float64."""
    x, coefficients = case
    f, grad = poly(coefficients)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradguard.PrecisionWarning)
        numerical, error = gradguard.check_gradient(f, x, grad(x).astype(np.float64))
    assert numerical.shape == x.shape and numerical.dtype == np.float32
    assert error < 1e-6


@SETTINGS
@given(polynomials(), st.sampled_from([2, 4, 6]))
def test_numerical_gradient_of_polynomials(case, order):
    x, coefficients = case
    f, grad = poly(coefficients)
    numerical = gradguard.numerical_gradient(f, x, order=order)
    assert numerical.shape == x.shape and numerical.dtype == x.dtype
    true = grad(x.astype(np.float64))
    rtol = 1e-2 if x.dtype == np.float32 else 1e-6
    np.testing.assert_allclose(numerical, true, rtol=rtol, atol=rtol)


@SETTINGS
@given(polynomials())
def test_torch_check_passes_polynomials(case):
    torch = pytest.importorskip("torch")
    x, (a, b, c, d) = case
    ta, tb, tc = (torch.tensor(v) for v in (a, b, c))

    def f(v):
        return (ta * v + tb * v**2 + tc * v**3).sum() + d * v.sum() ** 2

    report = gradguard.check(f, torch.tensor(x), progress=False)
    assert report.verdict == "pass", str(report)


@pytest.mark.parametrize(
    ("f", "wrong", "x"),
    [
        (lambda x: np.sum(2 * x), lambda x: -2 * np.ones_like(x), np.full(3, 1e-20)),
        (lambda x: np.sum(2 * x + 0.5 * x**2), lambda x: -(2 + x), np.zeros(3)),
    ],
    ids=["linear-near-0", "quadratic-at-0"],
)
def test_wrong_gradient_fails_where_f_is_zero(f, wrong, x):
    """The sign-flipped gradient fails at x = 1e-3 and at x ~ 0 (f(x) ~ 0) too."""
    assert gradguard.check(f, x + 1e-3, grad=wrong).verdict == "fail"
    report = gradguard.check(f, x, grad=wrong)
    assert report.verdict == "fail", str(report)


# -- relative_error -----------------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def array_pairs(draw, elements=finite):
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    a = draw(hnp.arrays(np.float64, shape, elements=elements))
    b = draw(hnp.arrays(np.float64, shape, elements=elements))
    return a, b


#: Everything but the top of float64's range (see the extremes test for that).
moderate = st.floats(-1e300, 1e300)


@SETTINGS
@given(array_pairs(moderate))
def test_relative_error_is_symmetric_and_within_0_and_1(pair):
    a, b = pair
    ab = gradguard.relative_error(a, b)
    assert type(ab) is float
    assert ab == gradguard.relative_error(b, a)
    assert 0.0 <= ab <= 1.0
    assert gradguard.relative_error(a, a) == 0.0
    opposite = gradguard.relative_error(a, -a)
    assert opposite == (pytest.approx(1.0, abs=1e-15) if np.any(a != 0) else 0.0)


@SETTINGS
@given(array_pairs(moderate))
def test_relative_error_is_zero_only_for_equal_arrays(pair):
    a, b = pair
    error = gradguard.relative_error(a, b)
    assert (error == 0.0) == bool(np.array_equal(a, b))


@SETTINGS
@given(array_pairs(moderate), st.sampled_from([np.float32, np.float64]))
def test_relative_error_takes_lists_and_dtypes_alike(pair, dtype):
    a, b = pair
    with np.errstate(over="ignore"):
        a, b = a.astype(dtype), b.astype(dtype)
    assume(np.isfinite(a).all() and np.isfinite(b).all())
    assert gradguard.relative_error(a, b) == gradguard.relative_error(a.tolist(), b.tolist())


@SETTINGS
@given(array_pairs(moderate))
def test_core_relative_error_matches_the_public_one(pair):
    a, b = pair
    assert norms.relative_error(a, b, npx) == gradguard.relative_error(a, b)


@settings(deadline=None, max_examples=200, derandomize=True)
@given(array_pairs(finite))
def test_relative_error_is_exact_at_the_extremes_of_float64(pair):
    a, b = pair
    error = gradguard.relative_error(a, b)
    assert 0.0 <= error <= 1.0
    if np.array_equal(a, b):
        assert error == 0.0
    else:
        # Unequal arrays give a positive error wherever that error is a normal
        # float64 (|a - b| / max|entry| below 1e-300 rounds to 0 correctly).
        largest = max(abs(Fraction(float(v))) for v in np.concatenate([a.ravel(), b.ravel()]))
        apart = max(abs(Fraction(float(u)) - Fraction(float(v))) for u, v in zip(a.flat, b.flat))
        assume(apart > Fraction(1e-300) * largest)
        assert error > 0.0
    # Scale-free: the same for the arrays scaled by a power of two.
    scale = (
        2.0**-900 if np.max(np.abs(np.concatenate([a.ravel(), b.ravel(), [0.0]]))) > 1 else 2.0**900
    )
    with np.errstate(all="ignore"):
        scaled_a, scaled_b = a * scale, b * scale
    assume(np.isfinite(scaled_a).all() and np.isfinite(scaled_b).all())
    assume(np.array_equal(scaled_a / scale, a) and np.array_equal(scaled_b / scale, b))
    assert gradguard.relative_error(scaled_a, scaled_b) == pytest.approx(error, rel=1e-12)


def test_relative_error_of_tiny_and_huge_arrays():
    assert gradguard.relative_error([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1 / 3)
    assert gradguard.relative_error([1e-200], [2e-200]) == pytest.approx(1 / 3)
    assert gradguard.relative_error([1e200], [1.1e200]) == pytest.approx(0.1 / 2.1)
    assert gradguard.relative_error([5e-324], [0.0]) == 1.0


def test_relative_error_at_the_top_of_float64():
    assert gradguard.relative_error([6e307, 6e307], [7e307, 7e307]) == pytest.approx(1 / 13)
    assert gradguard.relative_error([1.5e308], [-1.5e308]) == 1.0  # no RuntimeWarning


# -- empty points -----------------------------------------------------------------------------


@SETTINGS
@given(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3), float_dtypes)
def test_empty_points_are_refused_by_seed_functions_and_reported_by_check(shape, dtype):
    assume(0 in shape)
    x = np.zeros(shape, dtype=dtype)

    def f(v):
        return v.sum()

    for call in (
        lambda: gradguard.numerical_gradient(f, x),
        lambda: gradguard.check_gradient(f, x, np.zeros(shape)),
    ):
        with pytest.raises(gradguard.ArgumentError, match=r"^(x|args):.*empty"):
            call()
    # A parametrised test over shapes must not break: nothing to compare.
    for report in (
        gradguard.check(f, x, grad=np.zeros_like),
        gradguard.assert_gradients(f, x, grad=np.zeros_like),
    ):
        assert report.verdict == "pass" and report.checked == 0
        assert report.notes[-1].startswith("nothing to compare")
