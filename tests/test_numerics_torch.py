"""Float64 error estimates and verdicts on torch's own operators (issue 16).

Families: 3 (float64 inputs, narrower outputs), 4 (forward mode as safe as
reverse), 5 (rounding of deep float64 computations; many entries), 11
(functions that lose precision inside), 12 (tolerance floors both ways).
Autodiff of ordinary operations is right by construction: none of these
may say ``fail``; a rule wrong by 1e-4 on one entry still must.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import gradguard  # noqa: E402
from gradguard.core.verdict import count_multiple  # noqa: E402

D = torch.float64


def randn(*shape, seed=0, dtype=D):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# -- family 3: float64 inputs, lower-precision outputs ----------------------


@pytest.mark.parametrize("direction", ["rev", "fwd"])
@pytest.mark.parametrize("mode", ["full", "probe"])
def test_float32_output_of_float64_input_passes(mode, direction):
    r = gradguard.check(lambda x: torch.sin(x).float(), randn(5, 4), mode=mode, direction=direction)
    assert r.verdict == "pass", str(r)


def test_complex64_output_of_float64_input_passes():
    r = gradguard.check(lambda x: torch.exp(1j * x).to(torch.complex64), randn(5, 4))
    assert r.verdict == "pass", str(r)


class _SinToFloat32(torch.autograd.Function):
    """sin in float64, returned as float32; backward off by ``factor``."""

    factor = 1.0

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sin(x).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad.double() * torch.cos(x) * _SinToFloat32.factor


def test_float32_output_with_a_wrong_rule_still_fails():
    _SinToFloat32.factor = 1.01
    try:
        r = gradguard.check(_SinToFloat32.apply, randn(6))
    finally:
        _SinToFloat32.factor = 1.0
    assert r.verdict == "fail", str(r)
    assert gradguard.check(_SinToFloat32.apply, randn(6)).verdict == "pass"


# -- family 4: forward mode is judged as reverse mode is --------------------


@pytest.mark.parametrize(
    "name, f, shape",
    [
        ("inv", torch.linalg.inv, (6, 6)),
        ("qr", lambda a: torch.linalg.qr(a)[0], (6, 6)),
        ("fft", torch.fft.fft, (6, 6)),
        ("bmm", lambda a: torch.bmm(a, a.transpose(1, 2)), (3, 4, 4)),
        (
            "conv_transpose2d",
            lambda a: torch.nn.functional.conv_transpose2d(a, a[:1].transpose(0, 1), stride=2),
            (2, 3, 4, 4),
        ),
    ],
)
def test_deep_float64_operators_pass_in_forward_mode(name, f, shape):
    r = gradguard.check(f, randn(*shape), mode="full", direction="fwd")
    assert r.verdict == "pass", f"{name}\n{r}"


def test_exact_zero_difference_against_analytical_rounding_forward():
    # The imaginary part is 0 up to rounding: the finite difference is 0,
    # the JVP carries ~1e-16; its rounding is bounded by the terms' scale.
    def f(x):
        return torch.exp(x) + 1j * (torch.sin(x) ** 2 + torch.cos(x) ** 2 - 1)

    for direction in ("fwd", "rev"):
        r = gradguard.check(f, randn(5, 4), mode="full", direction=direction)
        assert r.verdict == "pass", f"{direction}\n{r}"


def test_eigenvalues_of_a_real_matrix_forward():
    r = gradguard.check(torch.linalg.eigvals, randn(5, 5), mode="full", direction="fwd")
    assert r.verdict == "pass", str(r)


def test_ndtr_in_its_flat_tail_is_no_false_alarm():
    x = torch.tensor([-9.0, -12.0, -20.0, 9.0, 12.0, 0.3], dtype=D)
    for direction in ("fwd", "rev"):
        r = gradguard.check(torch.special.ndtr, x, mode="full", direction=direction)
        assert r.verdict != "fail", f"{direction}\n{r}"


# -- family 5: deep float64 computations, many entries ----------------------


def test_tanh_mlp_with_many_entries_passes():
    # 510 inputs, as in the issue: x (10, 17), W1 (17, 17), W2 (17, 3).
    x, w1, w2 = randn(10, 17, seed=1), randn(17, 17, seed=2), randn(17, 3, seed=3)
    for direction in ("rev", "fwd"):
        r = gradguard.check(
            lambda x, a, b: torch.tanh(x @ a) @ b, x, w1, w2, mode="full", direction=direction
        )
        assert r.verdict == "pass", f"{direction}\n{r}"


def test_tolerances_widen_slowly_with_the_count():
    assert count_multiple(10) == count_multiple(1000) == 1.0
    assert 1.25 < count_multiple(10**5) < 1.4
    assert count_multiple(10**7) < 1.6


def _off_entry_function(relative):
    """f(x) = W @ sin(x) whose backward has J[1, 2] off by ``relative``."""
    w = randn(4, 5, seed=7)

    class Off(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return w @ torch.sin(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            jac = w * torch.cos(x)[None, :]
            jac = jac.clone()
            jac[1, 2] = jac[1, 2] * (1.0 + relative)
            return jac.T @ grad

    return Off.apply


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_one_entry_off_by_1e4_relative_fails(mode):
    x = randn(5, seed=4)
    assert gradguard.check(_off_entry_function(0.0), x, mode=mode).verdict == "pass"
    r = gradguard.check(_off_entry_function(1e-4), x, mode=mode)
    assert r.verdict == "fail", str(r)


# -- family 11: functions that lose precision inside ------------------------


@pytest.mark.parametrize("seed", range(6))
def test_sine_of_a_large_cumulative_sum_is_no_false_alarm(seed):
    x = 30 * randn(7, 19, seed=seed)
    r = gradguard.check(lambda x: torch.sin(torch.cumsum(x * x, -1)), x, mode="full")
    assert r.verdict != "fail", str(r)
    assert r.wrong == 0


def test_a_staircase_is_never_a_failure():
    # Steps of 1.5e-8: f's resolution, not the derivative, limits the check.
    r = gradguard.check(lambda x: ((x + 1e8) - 1e8) * 2.0, randn(5), mode="full")
    assert r.verdict != "fail", str(r)


def test_an_entry_far_smaller_than_its_row_is_judged_with_its_row():
    def f(x):
        return torch.stack([1e6 * torch.sin(x[0]) + torch.sin(x[1]), torch.cos(x[1])])

    r = gradguard.check(f, randn(2), mode="full")
    assert r.verdict == "pass", str(r)


# -- family 12: tolerance floors, both ways ---------------------------------


def test_layer_norm_over_one_entry_is_no_false_alarm():
    # (x - mean) is exactly 0: f does not move, the analytical side carries
    # the rounding of rstd = 1/sqrt(eps) ~ 316 times it.
    x, w, b = randn(4, 1), randn(1, seed=1), randn(1, seed=2)
    for direction in ("rev", "fwd"):
        r = gradguard.check(
            lambda x, w, b: torch.nn.functional.layer_norm(x, (1,), w, b),
            x,
            w,
            b,
            direction=direction,
        )
        assert r.verdict != "fail", f"{direction}\n{r}"


def test_a_derivative_below_what_differences_resolve_is_inconclusive():
    # f ~ 1 resolves about 4e-11 per unit step; a 1e-12 gradient is
    # invisible, so a sign flip of it must not pass.
    x = randn(4)
    r = gradguard.check(
        lambda x: (1 + 1e-12 * torch.sin(x)).sum(), x, grad=lambda x: -1e-12 * x.cos()
    )
    assert r.verdict == "inconclusive", str(r)
    assert any("resolution" in s for s in r.reasons), str(r)


def test_a_scaled_function_is_still_judged_at_its_own_scale():
    x = randn(4)
    r = gradguard.check(lambda x: (1e-12 * torch.sin(x)).sum(), x, grad=lambda x: -1e-12 * x.cos())
    assert r.verdict == "fail", str(r)


def test_a_fast_oscillation_says_what_was_measured():
    x = randn(6) + 2.0
    r = gradguard.check(lambda x: torch.sin(1e3 * x**3), x, mode="full")
    assert r.verdict == "inconclusive", str(r)
    assert any("faster than the step" in s for s in r.reasons), str(r)
