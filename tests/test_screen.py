"""Full reverse checks of 64 inputs or more settle columns from x +- h first.

Most columns settle by a few reductions against a lower bound of every
tolerance; the rest get tolerances of their own, and columns that still
disagree get the 4-point stencil. These tests hold that path to what the
entry-by-entry path promises: a verdict, the located wrong entry, the
counts and the worst list, in every framework the screen runs on.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradguard
from reports import assert_fail_at, diagnosis, wrong

N = 1500  # past SCREEN_INPUTS


def _x(n=N, seed=0):
    return np.random.default_rng(seed).standard_normal(n)


def _sin_times_x(x):
    return np.sin(x) * x


def _derivative(x):
    return np.cos(x) * x + np.sin(x)


def _numpy_vjp(wrong_at=None, factor=1.01):
    """The VJP of sin(x) * x, optionally with one diagonal entry off."""

    def vjp(g, x):
        d = _derivative(x)
        if wrong_at is not None:
            d = d.copy()
            d[wrong_at] *= factor
        return (g * d,)

    return vjp


def test_a_correct_rule_passes_with_every_entry_counted():
    x = _x()
    report = gradguard.check(_sin_times_x, x, vjp=_numpy_vjp(), mode="full")
    assert report.verdict == "pass", str(report)
    assert report.checked >= N * N  # every entry, plus the dense cotangent products
    assert report.relative_error < 1e-9
    # The worst list names real entries: the diagonal, with the true derivative.
    entries = [m for m in report.worst if m.kind == "entry"]
    assert entries, str(report)
    d = _derivative(x)
    for m in entries:
        assert m.status == "ok"
        assert 0 < m.ratio < 1
        (i,), (j,) = m.index, m.output_index
        expected = d[i] if i == j else 0.0
        assert m.analytical == pytest.approx(expected, abs=1e-12)
        assert m.numerical == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize("position", [0, 777, N - 1])
def test_one_entry_off_by_one_percent_is_found_and_located(position):
    x = _x()
    report = gradguard.check(_sin_times_x, x, vjp=_numpy_vjp(position), mode="full")
    assert_fail_at(report, "x", indices=[(position,)])
    located = [m for m in wrong(report) if m.kind == "entry"]
    assert [m.output_index for m in located] == [(position,)], str(report)
    # The diagnosis counts the nonzero entries of the settled columns too.
    assert f"1 of the {N} nonzero" in diagnosis(report), diagnosis(report)


def test_a_rule_wrong_everywhere_fails_with_the_scale_named():
    x = _x()
    report = gradguard.check(
        _sin_times_x, x, vjp=lambda g, x: (2 * g * _derivative(x),), mode="full"
    )
    assert report.verdict == "fail"
    assert report.wrong >= N
    assert "2" in diagnosis(report), diagnosis(report)


def test_a_rule_right_for_one_hot_cotangents_only_is_caught_by_dense_ones():
    """g.sum() * f'(x) masked to g's nonzeros equals g * f'(x) when g has one
    nonzero entry: only the dense cotangents can tell."""
    x = _x()

    def vjp(g, x):
        return (np.sum(g) * _derivative(x) * (g != 0),)

    report = gradguard.check(_sin_times_x, x, vjp=vjp, mode="full")
    assert report.verdict == "fail", str(report)
    assert {m.kind for m in wrong(report)} == {"cotangent"}, str(report)


def test_a_dense_jacobian_settles_too():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, N)) / np.sqrt(N)

    def f(x):
        return np.tanh(a @ x)

    def vjp(g, x):
        return (a.T @ (g * (1 - np.tanh(a @ x) ** 2)),)

    x = _x()
    assert gradguard.check(f, x, vjp=vjp, mode="full").verdict == "pass"
    off = a.copy()
    off[7, 300] *= 1.01

    def bad_vjp(g, x):
        return (off.T @ (g * (1 - np.tanh(a @ x) ** 2)),)

    report = gradguard.check(f, x, vjp=bad_vjp, mode="full")
    assert_fail_at(report, "x", indices=[(300,)])
    assert [m.output_index for m in wrong(report) if m.kind == "entry"] == [(7,)]


def test_two_arguments_are_told_apart():
    x, y = _x(seed=1), _x(seed=2)

    def f(x, y):
        return x * np.sin(y)

    def vjp(g, x, y):
        dy = x * np.cos(y)
        dy[5] += 1e-3
        return g * np.sin(y), g * dy

    report = gradguard.check(f, x, y, vjp=vjp, mode="full")
    assert_fail_at(report, "y", indices=[(5,)])
    by_name = {a.name: a for a in report.arguments}
    assert by_name["x"].wrong == 0 and by_name["x"].checked >= N * N
    assert by_name["y"].wrong >= 1


def test_atol_widens_the_screen_too():
    x = _x()
    report = gradguard.check(_sin_times_x, x, vjp=_numpy_vjp(3, factor=1.0 + 1e-6), mode="full")
    assert report.verdict == "fail"
    report = gradguard.check(
        _sin_times_x, x, vjp=_numpy_vjp(3, factor=1.0 + 1e-6), mode="full", atol=1e-4
    )
    assert report.verdict == "pass", str(report)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_nan_or_inf_near_x_is_not_settled_but_inconclusive(value):
    x = _x()
    x[10] = 1.0

    def f(x):  # finite at x, NaN or inf just right of x[10]
        return np.sin(x) * x + np.where((x > 1.0) & (x < 1.0 + 1e-4), value, 0.0)

    report = gradguard.check(f, x, vjp=_numpy_vjp(), mode="full")
    assert report.verdict == "inconclusive", str(report)
    assert any("NaN" in r for r in report.reasons), str(report)


def test_torch_screen_matches_its_rule():
    torch = pytest.importorskip("torch")

    class SinTimesX(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.sin() * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            d = x.cos() * x + x.sin()
            d[42] = d[42] * 1.01
            return g * d

    x = torch.from_numpy(_x())
    assert gradguard.check(lambda x: x.sin() * x, x, mode="full").verdict == "pass"

    def f(x):
        return SinTimesX.apply(x)

    report = gradguard.check(f, x, mode="full")
    assert_fail_at(report, "x", indices=[(42,)])
    assert [m.output_index for m in wrong(report) if m.kind == "entry"] == [(42,)]


def test_array_api_strict_screen():
    xp = pytest.importorskip("array_api_strict")
    x = xp.asarray(_x())

    def f(x):
        return xp.sin(x) * x

    def vjp(g, x):
        return (g * (xp.cos(x) * x + xp.sin(x)),)

    assert gradguard.check(f, x, vjp=vjp, mode="full").verdict == "pass"


def test_complex_inputs_settle_in_real_coordinates():
    torch = pytest.importorskip("torch")
    z = torch.randn(700, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    report = gradguard.check(lambda z: (z * z).real + 0.5 * z.abs() ** 2, z, mode="full")
    assert report.verdict == "pass", str(report)
    assert report.num_inputs == 1400


def test_a_derivative_zero_by_cancellation_is_no_false_alarm():
    """(z*z).real + |z|^2 = 2 re(z)^2: the imaginary parts' columns are
    exactly zero numerically, while the analytical side computes -2y + 2y,
    rounding noise. Once the random cotangents' tolerance lacked the
    numerical rounding there and this failed."""
    torch = pytest.importorskip("torch")
    z = torch.randn(700, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    report = gradguard.check(lambda z: (z * z).real + z.abs() ** 2, z, mode="full")
    assert report.wrong == 0, str(report)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_entries_settled_near_a_pole_do_not_fail_their_products(seed):
    """tan on [-9, 9]: near a pole the two-point quotient is off by some 1e-7
    of the entry, within what the screen allows an entry. The products with
    random cotangents over such settled columns must allow the same, or a
    right rule fails ("one-hot cotangents agree but random ones do not")."""
    x = np.random.default_rng(seed).uniform(-9.0, 9.0, 900)

    def vjp(g, x):
        return (g * (1.0 + np.tan(x) ** 2),)

    report = gradguard.check(np.tan, x, vjp=vjp, mode="full")
    assert report.verdict in ("pass", "inconclusive"), str(report)
    assert report.wrong == 0

    def off(g, x):
        d = 1.0 + np.tan(x) ** 2
        d[100] *= 1.0001
        return (g * d,)

    assert_fail_at(gradguard.check(np.tan, x, vjp=off, mode="full"), "x", indices=[(100,)])


def test_a_rule_not_linear_in_its_cotangent_fails_where_entries_settle_one_by_one():
    """A dense Jacobian of 200 x 200 (the per-entry map kept, so columns
    settle entry by entry): a rule right for one-hot cotangents and 1e-4 off
    for any other fails, by the products with random cotangents."""
    a = np.random.default_rng(0).standard_normal((200, 200)) / 20

    def f(x):
        return np.tanh(a @ x)

    def vjp(g, x):
        right = a.T @ (g * (1 - np.tanh(a @ x) ** 2))
        return (right if np.count_nonzero(g) <= 1 else right * 1.0001,)

    report = gradguard.check(f, _x(200, seed=1), vjp=vjp, mode="full")
    assert report.verdict == "fail", str(report)
    assert "not linear in the incoming gradient" in diagnosis(report), str(report)
