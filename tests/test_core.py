"""The backend-neutral core against plain NumPy (through array_api_compat)
and array_api_strict, which rejects anything outside the Array API standard.
"""

from __future__ import annotations

import math

import array_api_compat.numpy as npx
import array_api_strict
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradguard.core import CENTRAL, FlatLayout, default_steps, directional_derivatives
from gradguard.core.differences import apply_stencil, represented_displacement
from gradguard.core.norms import relative_error
from gradguard.core.stencils import EVEN_DIFFERENCE

NAMESPACES = {"numpy": npx, "array_api_strict": array_api_strict}


@pytest.fixture(params=list(NAMESPACES))
def xp(request):
    return NAMESPACES[request.param]


def to_numpy(a) -> np.ndarray:
    return np.array(np.from_dlpack(a))


# -- stencils -----------------------------------------------------------------


@pytest.mark.parametrize("order", sorted(CENTRAL))
def test_stencil_is_a_first_derivative(order):
    stencil = CENTRAL[order]
    assert stencil.order == order
    assert stencil.power == 1
    assert math.fsum(stencil.weights) == pytest.approx(0.0, abs=1e-15)
    assert math.fsum(w * o for o, w in zip(stencil.offsets, stencil.weights)) == pytest.approx(1.0)
    # Antisymmetric: offsets -o and o carry opposite weights.
    by_offset = dict(zip(stencil.offsets, stencil.weights))
    assert all(by_offset[-o] == -w for o, w in by_offset.items())


@pytest.mark.parametrize("order", sorted(CENTRAL))
@pytest.mark.parametrize("h", [0.5, 0.125, 2.0**-10])
@pytest.mark.parametrize("x", [0.0, 1.0, -3.0])
def test_stencil_is_exact_up_to_its_order_and_no_further(xp, order, h, x):
    """Order p is exact on every polynomial of degree <= p, and not on degree p + 1."""
    stencil = CENTRAL[order]
    for degree in range(order + 2):
        coefficients = [(-1.0) ** k * (k + 1) for k in range(degree + 1)]

        def poly(t, coefficients=coefficients):
            return sum(c * t**k for k, c in enumerate(coefficients))

        true = sum(k * c * x ** (k - 1) for k, c in enumerate(coefficients) if k > 0)
        values = {o: xp.asarray([poly(x + o * h)], dtype=xp.float64) for o in stencil.offsets}
        estimate = float(apply_stencil(stencil, values)[0]) / h
        scale = sum(abs(c) * (abs(x) + 3 * h) ** k for k, c in enumerate(coefficients)) / h
        if degree <= order:
            assert estimate == pytest.approx(true, abs=1e-13 * scale)
        else:
            # The leading error term of a degree p+1 monomial never vanishes.
            assert abs(estimate - true) > 1e-6 * h**order


@pytest.mark.parametrize("accuracy", sorted(EVEN_DIFFERENCE))
def test_even_difference_annihilates_lower_degrees_and_measures_its_own(accuracy):
    """The order-q even difference is 0 on degree < q and q! h**q on t**q."""
    stencil = EVEN_DIFFERENCE[accuracy]
    q = len(stencil.offsets) - 1
    h = 0.25
    for degree in range(q + 1):
        coefficients = [1.0 + k for k in range(degree)] + [1.0]
        values = {
            o: np.array([sum(c * (0.5 + o * h) ** k for k, c in enumerate(coefficients))])
            for o in stencil.offsets
        }
        expected = math.factorial(q) * h**q if degree == q else 0.0
        assert float(apply_stencil(stencil, values)[0]) == pytest.approx(expected, abs=1e-12)


# -- steps --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("order", sorted(CENTRAL))
def test_default_steps(xp, dtype, order):
    values = [0.0, 1e-3, -0.5, 1.0, -7.0, 3e4]
    x = xp.asarray(values, dtype=getattr(xp, dtype))
    steps = default_steps(x, xp, order)
    assert steps.dtype == x.dtype
    assert tuple(steps.shape) == (len(values),)
    eps = float(np.finfo(dtype).eps)
    expected = eps ** (1 / (order + 1)) * np.maximum(1.0, np.abs(np.array(values)))
    np.testing.assert_allclose(to_numpy(steps), expected, rtol=1e-6)
    # Every step survives being added to its entry, with room to spare.
    moved = to_numpy(represented_displacement(x, steps))
    assert np.all(moved > 0)
    np.testing.assert_allclose(moved, to_numpy(steps), rtol=1e-2)


def test_default_steps_is_order_two_by_default(xp):
    x = xp.asarray([2.0, -4.0], dtype=xp.float64)
    assert np.array_equal(to_numpy(default_steps(x, xp)), to_numpy(default_steps(x, xp, 2)))


# -- directional derivatives --------------------------------------------------


class Polynomial:
    """``f_j(x) = sum_i sum_p c[j,i,p] x_i**p + sum_{i!=q} b[j,i,q] x_i x_q**2``
    from R^n to R^m, evaluated on ``(k, n)`` batches with ``xp``, and its
    Jacobian in NumPy."""

    def __init__(self, c: np.ndarray, b: np.ndarray) -> None:
        self.c = c
        self.b = b
        self.m, self.n, degree_plus_one = c.shape
        self.degree = degree_plus_one - 1

    def __call__(self, points, xp):
        columns = []
        for j in range(self.m):
            total = xp.zeros((points.shape[0],), dtype=points.dtype)
            for i in range(self.n):
                for p in range(self.degree + 1):
                    total = total + float(self.c[j, i, p]) * points[:, i] ** p
                for q in range(self.n):
                    if q != i:
                        total = total + float(self.b[j, i, q]) * points[:, i] * points[:, q] ** 2
            columns.append(total)
        return xp.stack(columns, axis=1)

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        jac = np.zeros((self.m, self.n))
        for j in range(self.m):
            for i in range(self.n):
                for p in range(1, self.degree + 1):
                    jac[j, i] += p * self.c[j, i, p] * x[i] ** (p - 1)
                for q in range(self.n):
                    if q != i:
                        jac[j, i] += self.b[j, i, q] * x[q] ** 2
                        jac[j, q] += 2 * self.b[j, i, q] * x[i] * x[q]
        return jac


@st.composite
def positive_problems(draw):
    """A polynomial with nonnegative coefficients, a point in the positive
    orthant, and displacements whose entries share one sign.

    Along such a direction every odd Taylor coefficient c_3, c_5, ... of
    t -> f(x0 + t d) has that same sign. Then the error of the fourth-order
    value, sum_m (4**m - 4)/3 |c_(2m+1)|, is below the truncation estimate
    |value - second-order quotient| = sum_m (4**m - 1)/3 |c_(2m+1)| (and
    likewise for sixth order: 36 |c_7| + 504 |c_9| + ... against
    4 |c_5| + 56 |c_7| + 588 |c_9| + ...). All terms of f being positive, f
    is evaluated to a few units of rounding of |f|, which is what the
    rounding estimate assumes. So the bound below is a theorem up to
    rounding, and the factor 10 leaves room only for rounding (the largest
    ratio seen in 3000 random draws per order was 2.0).

    With coefficients of both signs neither holds: cancellation inside f
    makes its rounding exceed eps |f| (ratios of 13 and more), and odd
    coefficients of opposite signs can cancel in the estimate.
    """
    n = draw(st.integers(1, 4), label="n")
    m = draw(st.integers(1, 3), label="m")
    k = draw(st.integers(1, 4), label="k")
    degree = draw(st.integers(0, 8), label="degree")
    coefficient = st.floats(0.0, 10.0)
    c = draw(hnp.arrays(np.float64, (m, n, degree + 1), elements=coefficient))
    b = draw(hnp.arrays(np.float64, (m, n, n), elements=st.floats(0.0, 3.0)))
    x0 = draw(hnp.arrays(np.float64, (n,), elements=st.floats(0.5, 2.0)))
    h = 10.0 ** draw(st.floats(-6.0, -1.0), label="log10 h")
    sign = draw(st.sampled_from([-1.0, 1.0]), label="sign")
    unit = draw(hnp.arrays(np.float64, (k, n), elements=st.floats(0.0, 1.0)))
    return Polynomial(c, b), x0, sign * h * unit


@pytest.mark.parametrize("accuracy", [4, 6])
@pytest.mark.parametrize("namespace", list(NAMESPACES))
@settings(max_examples=100, deadline=None)
@given(problem=positive_problems())
def test_directional_derivative_error_is_within_its_estimate(namespace, accuracy, problem):
    xp = NAMESPACES[namespace]
    f, x0, displacements = problem
    x0_xp = xp.asarray(x0, dtype=xp.float64)
    result = directional_derivatives(
        lambda points: f(points, xp),
        x0_xp,
        xp.asarray(displacements, dtype=xp.float64),
        f(x0_xp[None, :], xp)[0, :],
        xp,
        accuracy=accuracy,
    )
    value, truncation, rounding = (
        to_numpy(a) for a in (result.value, result.truncation, result.rounding)
    )
    direction = to_numpy(result.direction)
    k, m = displacements.shape[0], f.m
    assert value.shape == truncation.shape == rounding.shape == (k, m)
    assert direction.shape == displacements.shape
    np.testing.assert_allclose(direction, displacements, rtol=1e-6, atol=1e-15)
    assert not np.any(to_numpy(result.nonfinite))
    assert np.all(truncation >= 0) and np.all(rounding >= 0)

    true = direction @ f.jacobian(x0).T
    error = np.abs(value - true)
    assert np.all(error <= 10 * (truncation + rounding)), (error, truncation, rounding)


@pytest.mark.parametrize("h", [0.5, 0.1, 0.01])
def test_truncation_estimate_is_the_error_of_the_second_order_quotient(xp, h):
    """For a cubic, (f(x+d) - f(x-d))/2 is off by exactly c_3 |d|**3 and the
    fourth-order value is exact; the estimate must say c_3 |d|**3, not just
    something larger."""
    f = Polynomial(
        c=np.array([[[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, -2.0]]]),
        b=np.zeros((1, 2, 2)),
    )
    x0 = np.array([0.7, -1.3])
    d = np.array([[h, 0.0], [0.0, h], [h, -h]])
    x0_xp = xp.asarray(x0, dtype=xp.float64)
    result = directional_derivatives(
        lambda p: f(p, xp), x0_xp, xp.asarray(d, dtype=xp.float64), f(x0_xp[None, :], xp)[0, :], xp
    )
    cubic_terms = (3.0 * d[:, 0] ** 3 - 2.0 * d[:, 1] ** 3)[:, None]
    np.testing.assert_allclose(to_numpy(result.truncation), np.abs(cubic_terms), rtol=1e-9)
    true = d @ f.jacobian(x0).T
    np.testing.assert_allclose(to_numpy(result.value), true, rtol=1e-12, atol=1e-14)


def test_roughness_is_large_at_a_kink_and_tiny_for_smooth_functions(xp):
    h = 1e-3
    d = xp.asarray([[h], [-h], [4 * h]], dtype=xp.float64)

    def at(fn, x):
        x0 = xp.asarray([x], dtype=xp.float64)
        return directional_derivatives(lambda p: fn(p), x0, d, fn(x0[None, :])[0, :], xp)

    kink = at(xp.abs, 0.0)
    # |x| has a slope jump of 2 at 0: the fourth difference sees about 2 |d|.
    np.testing.assert_allclose(to_numpy(kink.roughness)[:, 0], 2 * np.array([h, h, 4 * h]))
    # Off the kink, |x| is linear and the roughness is rounding only.
    assert np.all(to_numpy(at(xp.abs, 0.5).roughness) < 1e-15)

    for smooth in (xp.exp, xp.sin, lambda p: p**3 - 2 * p):
        result = at(smooth, 0.3)
        roughness = to_numpy(result.roughness)[:, 0]
        # ~ |d|**4 |f''''| / 2 plus rounding: far below the derivative itself.
        assert np.all(roughness < 1e-6 * np.abs(to_numpy(result.value)[:, 0])), roughness
        assert np.all(roughness < 2.0 * np.array([h, h, 4 * h]) ** 4 + 1e-14), roughness
    assert np.all(to_numpy(kink.roughness) > 1e6 * to_numpy(at(xp.exp, 0.3).roughness))


def test_nonfinite_evaluations_are_flagged(xp):
    x0 = xp.asarray([0.0, 1.0], dtype=xp.float64)
    d = xp.asarray([[1e-3, 0.0], [0.0, 1e-3]], dtype=xp.float64)

    def sqrt_first(points):
        return xp.sqrt(points[:, 0:1]) + points[:, 1:2]

    with np.errstate(invalid="ignore"):
        result = directional_derivatives(sqrt_first, x0, d, sqrt_first(x0[None, :])[0, :], xp)
    assert to_numpy(result.nonfinite)[:, 0].tolist() == [True, False]


# -- relative error -----------------------------------------------------------

# Magnitudes between 1e-100 and 1e6, or zero (the tests below cover the extremes).
finite_floats = st.one_of(st.just(0.0), st.floats(1e-100, 1e6), st.floats(-1e6, -1e-100))


@pytest.mark.parametrize("namespace", list(NAMESPACES))
@settings(max_examples=200, deadline=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
def test_relative_error_properties(namespace, data, shape):
    xp = NAMESPACES[namespace]
    a = data.draw(hnp.arrays(np.float64, shape, elements=finite_floats), label="a")
    b = data.draw(hnp.arrays(np.float64, shape, elements=finite_floats), label="b")
    a_xp, b_xp = xp.asarray(a), xp.asarray(b)
    ab = relative_error(a_xp, b_xp, xp)
    assert type(ab) is float
    assert ab == relative_error(b_xp, a_xp, xp)
    assert 0.0 <= ab <= 1.0
    assert relative_error(a_xp, a_xp, xp) == 0.0
    if np.array_equal(a, b):
        assert ab == 0.0
    else:
        assert ab > 0.0
        expected = np.linalg.norm(a - b) / (np.linalg.norm(a) + np.linalg.norm(b))
        assert ab == pytest.approx(expected, rel=1e-9)


def test_relative_error_of_opposites_is_one_and_of_zeros_zero(xp):
    a = xp.asarray([[3.0, -4.0]], dtype=xp.float64)
    assert relative_error(a, -a, xp) == 1.0
    zeros = xp.zeros((2, 3), dtype=xp.float64)
    assert relative_error(zeros, zeros, xp) == 0.0
    assert relative_error(zeros, xp.ones((2, 3), dtype=xp.float64), xp) == 1.0


def test_relative_error_of_complex_arrays_counts_moduli():
    a = np.array([1 + 1j, 2.0])
    b = np.array([1 - 1j, 2.0])
    expected = 2.0 / (2 * math.sqrt(2 + 4))
    assert relative_error(a, b, npx) == pytest.approx(expected)


def test_relative_error_of_tiny_unequal_arrays_is_not_zero(xp):
    a = xp.asarray([1e-200], dtype=xp.float64)
    b = xp.asarray([2e-200], dtype=xp.float64)
    assert relative_error(a, b, xp) == pytest.approx(1 / 3)


def test_relative_error_of_huge_nearly_equal_arrays(xp):
    a = xp.asarray([1e200], dtype=xp.float64)
    b = xp.asarray([1.000001e200], dtype=xp.float64)
    assert relative_error(a, b, xp) == pytest.approx(5e-7, rel=1e-3)


# -- flat layout --------------------------------------------------------------


def test_flat_layout_round_trips_real_and_complex_arrays(xp):
    arrays = [
        xp.asarray([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=xp.float64),
        xp.asarray([1 + 2j, 3 - 4j], dtype=xp.complex128),
        xp.asarray(7.5, dtype=xp.float32),
        xp.asarray([[0.5j]], dtype=xp.complex64),
    ]
    layout = FlatLayout.of(arrays, xp)
    assert layout.size == 6 + 2 * 2 + 1 + 2 * 1
    flat = layout.flatten_one(arrays, xp, xp.float64)
    assert flat.dtype == xp.float64
    np.testing.assert_array_equal(to_numpy(flat), [1, 2, 3, 4, 5, 6, 1, 3, 2, -4, 7.5, 0.0, 0.5])
    back = layout.unflatten(flat[None, ...], xp, [a.dtype for a in arrays])
    assert len(back) == len(arrays)
    for original, restored in zip(arrays, back):
        assert restored.dtype == original.dtype
        assert tuple(restored.shape) == (1, *original.shape)
        np.testing.assert_array_equal(to_numpy(restored[0, ...]), to_numpy(original))


def test_flat_layout_batches_and_names_coordinates(xp):
    layout = FlatLayout([(2, 2), (3,)], [False, True])
    k = 3
    flat = xp.reshape(xp.arange(k * layout.size, dtype=xp.float64), (k, layout.size))
    parts = layout.unflatten(flat, xp, [xp.float64, xp.complex128])
    assert tuple(parts[0].shape) == (k, 2, 2) and tuple(parts[1].shape) == (k, 3)
    again = layout.flatten(parts, xp, xp.float64)
    np.testing.assert_array_equal(to_numpy(again), to_numpy(flat))
    assert layout.owner(0) == (0, (0, 0), "")
    assert layout.owner(3) == (0, (1, 1), "")
    assert layout.owner(4) == (1, (0,), "real")
    assert layout.owner(8) == (1, (1,), "imag")
    with pytest.raises(IndexError):
        layout.owner(layout.size)


@settings(max_examples=50, deadline=None)
@given(
    shapes=st.lists(hnp.array_shapes(min_dims=0, max_dims=3, max_side=3), min_size=1, max_size=4),
    data=st.data(),
)
def test_flat_layout_round_trip_property(shapes, data):
    arrays = []
    for shape in shapes:
        is_complex = data.draw(st.booleans())
        real = data.draw(hnp.arrays(np.float64, shape, elements=finite_floats))
        if is_complex:
            imag = data.draw(hnp.arrays(np.float64, shape, elements=finite_floats))
            arrays.append(npx.asarray(real + 1j * imag))
        else:
            arrays.append(npx.asarray(real))
    layout = FlatLayout.of(arrays, npx)
    flat = layout.flatten_one(arrays, npx, npx.float64)
    assert flat.shape == (layout.size,)
    for original, restored in zip(
        arrays, layout.unflatten(flat[None, ...], npx, [a.dtype for a in arrays])
    ):
        np.testing.assert_array_equal(restored[0], original)
