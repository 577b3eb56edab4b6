"""gradguard.check on real custom ``torch.autograd.Function`` rules.

The rules follow the "Extending PyTorch" documentation (forward /
setup_context / backward, and ``jvp`` for forward mode). Each correct rule
must pass in full and probe mode; each deliberately wrong one must fail in
both, and full mode must point at the wrong argument and entries.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import gradguard  # noqa: E402
from reports import assert_fail_at, diagnosis, wrong  # noqa: E402

MODES = ("full", "probe")
D = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed=0, dtype=D):
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


# -- rules: LinearFunction (the "Extending PyTorch" example) -----------------


class LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(input, weight, bias):
        return input @ weight.T + bias

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, _ = inputs
        ctx.save_for_backward(input, weight)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        return grad_output @ weight, grad_output.T @ input, grad_output.sum(0)


class LinearTransposed(LinearFunction):
    """grad_input = grad_output @ W.T instead of @ W (W is square)."""

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        return grad_output @ weight.T, grad_output.T @ input, grad_output.sum(0)


class LinearBadBias(LinearFunction):
    """Only the bias gradient is wrong: it takes the first row of grad_output."""

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        n = grad_output.shape[0]
        return grad_output @ weight, grad_output.T @ input, grad_output[0] * n


def linear(input, weight, bias):
    return LinearFunction.apply(input, weight, bias)


def linear_transposed(input, weight, bias):
    return LinearTransposed.apply(input, weight, bias)


def linear_bad_bias(input, weight, bias):
    return LinearBadBias.apply(input, weight, bias)


def linear_args():
    return randn(3, 4, seed=1), randn(4, 4, seed=2), randn(4, seed=3)


# -- rules: exp, with forward mode --------------------------------------------


class Exp(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return x.exp()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)
        ctx.result = output

    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        return grad_output * result

    @staticmethod
    def jvp(ctx, x_t):
        return x_t * ctx.result


class ExpSignFlipped(Exp):
    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        return -grad_output * result


class ExpBadJvp(Exp):
    """Right backward, sign-flipped forward-mode rule."""

    @staticmethod
    def jvp(ctx, x_t):
        return -x_t * ctx.result


class ExpIgnoresGrad(Exp):
    """Returns the derivative without multiplying by grad_output."""

    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        return result.clone()


class ExpDetached(Exp):
    """Right first derivative; the saved result is detached, so the backward
    is not itself differentiable and the second derivative comes out zero."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output.detach())

    @staticmethod
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        return grad_output * result


def exp(x):
    return Exp.apply(x)


def exp_sign_flipped(x):
    return ExpSignFlipped.apply(x)


def exp_bad_jvp(x):
    return ExpBadJvp.apply(x)


def exp_ignores_grad(x):
    return ExpIgnoresGrad.apply(x)


def exp_detached(x):
    return ExpDetached.apply(x)


# -- rules: scalar output that ignores the incoming gradient ----------------


class SumOfSquares(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return (x * x).sum()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * x * grad_output


class SumOfSquaresIgnoresGrad(SumOfSquares):
    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return 2 * x


def sum_of_squares(x):
    return SumOfSquares.apply(x)


def sum_of_squares_ignores_grad(x):
    return SumOfSquaresIgnoresGrad.apply(x)


# -- rules: multiplication by a constant (a non-tensor argument) -------------


class MulConstant(torch.autograd.Function):
    @staticmethod
    def forward(tensor, constant):
        return tensor * constant

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.constant = inputs[1]

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.constant, None


class MulConstantForgotten(MulConstant):
    """Forgets the constant: off by a constant factor."""

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone(), None


def mul_constant(tensor, constant):
    return MulConstant.apply(tensor, constant)


def mul_constant_forgotten(tensor, constant):
    return MulConstantForgotten.apply(tensor, constant)


# -- rules: piecewise --------------------------------------------------------

SLOPE = 0.1


class LeakyRelu(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return torch.where(x > 0, x, SLOPE * x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, grad_output, SLOPE * grad_output)


class LeakyReluWrongNegative(LeakyRelu):
    """Slope 1 on the negative branch: only the entries where x < 0 are wrong."""

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.clone()


class Clamp(torch.autograd.Function):
    """clamp(x, -1, 1) with its derivative 1 inside, 0 outside."""

    @staticmethod
    def forward(x):
        return x.clamp(-1.0, 1.0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x.abs() < 1).to(grad_output.dtype)


class SmoothAbs(torch.autograd.Function):
    """sqrt(x**2 + 1e-2): a differentiable |x|."""

    @staticmethod
    def forward(x):
        return torch.sqrt(x * x + 1e-2)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output)

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        return grad_output * x / y


def leaky_relu(x):
    return LeakyRelu.apply(x)


def leaky_relu_wrong_negative(x):
    return LeakyReluWrongNegative.apply(x)


def clamp(x):
    return Clamp.apply(x)


def smooth_abs(x):
    return SmoothAbs.apply(x)


# Away from the kinks (0 for relu, +-1 for clamp).
KINKED = torch.tensor([-2.0, -0.7, 0.4, 1.5, -0.3, 0.8, -1.6, 2.5], dtype=D)


# -- rules: products, several inputs, two outputs ----------------------------


class XSinX(torch.autograd.Function):
    """x * sin(x); the backward is built from x, so it is differentiable again."""

    @staticmethod
    def forward(x):
        return x * torch.sin(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (torch.sin(x) + x * torch.cos(x))


class XSinXMissingTerm(XSinX):
    """Product rule with the sin(x) term missing."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * x * torch.cos(x)


class Mul(torch.autograd.Function):
    @staticmethod
    def forward(x, y):
        return x * y

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        return grad_output * y, grad_output * x


class MulWrongY(Mul):
    """Right for x, wrong for y (uses y where x belongs)."""

    @staticmethod
    def backward(ctx, grad_output):
        _, y = ctx.saved_tensors
        return grad_output * y, grad_output * y


class SinCos(torch.autograd.Function):
    """Two outputs: (sin x, cos x)."""

    @staticmethod
    def forward(x):
        return torch.sin(x), torch.cos(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, grad_sin, grad_cos):
        (x,) = ctx.saved_tensors
        return grad_sin * torch.cos(x) - grad_cos * torch.sin(x)


class SinCosDropsSecond(SinCos):
    """Forgets the contribution of the second output."""

    @staticmethod
    def backward(ctx, grad_sin, grad_cos):
        (x,) = ctx.saved_tensors
        return grad_sin * torch.cos(x)


def x_sin_x(x):
    return XSinX.apply(x)


def x_sin_x_missing_term(x):
    return XSinXMissingTerm.apply(x)


def mul(x, y):
    return Mul.apply(x, y)


def mul_wrong_y(x, y):
    return MulWrongY.apply(x, y)


def sin_cos(x):
    return SinCos.apply(x)


def sin_cos_drops_second(x):
    return SinCosDropsSecond.apply(x)


class LeakyReluVmap(LeakyRelu):
    """The same rule with a generated vmap rule: checked on the batched path."""

    generate_vmap_rule = True


class LeakyReluVmapWrong(LeakyReluWrongNegative):
    generate_vmap_rule = True


def leaky_relu_vmap(x):
    return LeakyReluVmap.apply(x)


def leaky_relu_vmap_wrong(x):
    return LeakyReluVmapWrong.apply(x)


class ExpOnceDifferentiable(Exp):
    """The "Extending PyTorch" once_differentiable backward: no second derivative."""

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (result,) = ctx.saved_tensors
        return grad_output * result


def exp_once_differentiable(x):
    return ExpOnceDifferentiable.apply(x)


# -- correct rules pass ------------------------------------------------------

CORRECT = {
    "linear": (linear, linear_args),
    "exp": (exp, lambda: (randn(6, seed=4),)),
    "sum_of_squares": (sum_of_squares, lambda: (randn(5, seed=5),)),
    "mul_constant": (mul_constant, lambda: (randn(2, 3, seed=6), 2.5)),
    "leaky_relu": (leaky_relu, lambda: (KINKED,)),
    "leaky_relu_vmap": (leaky_relu_vmap, lambda: (KINKED,)),
    "clamp": (clamp, lambda: (KINKED,)),
    "smooth_abs": (smooth_abs, lambda: (randn(7, seed=7),)),
    "x_sin_x": (x_sin_x, lambda: (randn(6, seed=8),)),
    "mul": (mul, lambda: (randn(3, seed=9), randn(3, seed=10))),
    "sin_cos": (sin_cos, lambda: (randn(4, seed=11),)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_rule_passes(name, mode):
    f, make_args = CORRECT[name]
    report = gradguard.check(f, *make_args(), mode=mode)
    assert report.verdict == "pass", str(report)
    assert report.framework == "torch"
    assert report.relative_error < 1e-6


@pytest.mark.parametrize("direction", ["fwd", "both"])
@pytest.mark.parametrize("mode", MODES)
def test_forward_mode_rule_passes(mode, direction):
    report = gradguard.check(exp, randn(6, seed=4), mode=mode, direction=direction)
    assert report.verdict == "pass", str(report)


@pytest.mark.parametrize("direction", ["fwd", "both"])
@pytest.mark.parametrize("mode", MODES)
def test_wrong_forward_mode_rule_fails(mode, direction):
    report = gradguard.check(exp_bad_jvp, randn(6, seed=4), mode=mode, direction=direction)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        if direction == "fwd":
            assert "sign flipped" in diagnosis(report), str(report)


def test_wrong_forward_rule_diagnosed_in_both_directions():
    report = gradguard.check(exp_bad_jvp, randn(6, seed=4), mode="full", direction="both")
    assert report.verdict == "fail"
    text = diagnosis(report)
    assert "sign flipped" in text and "forward" in text, str(report)


def test_wrong_forward_mode_rule_unseen_in_reverse_mode():
    # The backward of ExpBadJvp is right: reverse mode alone has nothing to find.
    report = gradguard.check(exp_bad_jvp, randn(6, seed=4), mode="full", direction="rev")
    assert report.verdict == "pass", str(report)


# -- wrong rules fail, located, diagnosed ------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_sign_error_fails(mode):
    x = randn(6, seed=4)
    report = gradguard.check(exp_sign_flipped, x, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x", [(i,) for i in range(6)])
        assert "sign flipped" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_missing_product_rule_term_fails(mode):
    x = randn(6, seed=8)
    report = gradguard.check(x_sin_x_missing_term, x, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        bad = wrong(report)
        # An elementwise function: the wrong entries are on the diagonal.
        assert all(m.output_index == m.index for m in bad if m.kind == "entry"), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_transpose_fails(mode):
    report = gradguard.check(linear_transposed, *linear_args(), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "input")
        assert "transposed" in diagnosis(report), str(report)
        summary = {a.name: a.wrong for a in report.arguments}
        assert summary["input"] > 0 and summary["weight"] == 0 and summary["bias"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_ignores_incoming_gradient_fails(mode):
    report = gradguard.check(exp_ignores_grad, randn(6, seed=4), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "ignores the incoming gradient" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_ignores_incoming_gradient_fails_for_scalar_output(mode):
    # With a scalar output, grad_output is 1 for a plain .backward(): a check
    # that only ever passes 1 cannot see this mistake.
    x = randn(5, seed=5)
    report = gradguard.check(sum_of_squares_ignores_grad, x, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        assert "ignores the incoming gradient" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_constant_factor_fails(mode):
    report = gradguard.check(mul_constant_forgotten, randn(2, 3, seed=6), 2.5, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "tensor")
        text = diagnosis(report)
        assert "constant factor" in text and "0.4" in text, str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_on_one_branch_fails_only_there(mode):
    report = gradguard.check(leaky_relu_wrong_negative, KINKED, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        negative = [(i,) for i in range(len(KINKED)) if KINKED[i] < 0]
        assert_fail_at(report, "x", negative)
        entries = [m for m in wrong(report) if m.kind == "entry"]
        assert entries and all(m.output_index == m.index for m in entries), str(report)
        # Every diagonal entry on the negative branch is wrong (and nothing else).
        assert report.wrong >= len(negative)
        assert "only" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_for_one_of_several_inputs(mode):
    report = gradguard.check(mul_wrong_y, randn(3, seed=9), randn(3, seed=10), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "y")
        summary = {a.name: a.wrong for a in report.arguments}
        assert summary["x"] == 0 and summary["y"] > 0, str(report)
        assert "only y" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_bias_only(mode):
    report = gradguard.check(linear_bad_bias, *linear_args(), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "bias")
        summary = {a.name: a.wrong for a in report.arguments}
        assert summary == {"input": 0, "weight": 0, "bias": summary["bias"]}
        assert summary["bias"] > 0
        assert "only bias" in diagnosis(report), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_two_outputs_one_contribution_dropped(mode):
    report = gradguard.check(sin_cos_drops_second, randn(4, seed=11), mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x")
        entries = [m for m in wrong(report) if m.kind == "entry"]
        # Only d cos / d x is wrong, never d sin / d x.
        assert entries and all(m.output == "out[1]" for m in entries), str(report)


@pytest.mark.parametrize("mode", MODES)
def test_wrong_rule_with_a_vmap_rule_fails_on_the_batched_path(mode):
    report = gradguard.check(leaky_relu_vmap_wrong, KINKED, mode=mode)
    assert report.verdict == "fail", str(report)
    if mode == "full":
        assert_fail_at(report, "x", [(i,) for i in range(len(KINKED)) if KINKED[i] < 0])


@pytest.mark.parametrize("mode", MODES)
def test_right_rule_at_a_kink_is_never_a_false_alarm(mode):
    # relu at exactly 0: finite differences straddle the kink and cannot
    # decide; the verdict must say so, not "fail".
    x = torch.tensor([0.0, 1.0, -1.0, 0.0, 0.5], dtype=D)
    report = gradguard.check(leaky_relu, x, mode=mode)
    assert report.verdict == "inconclusive", str(report)
    assert report.reasons, str(report)


# -- second order ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_second_order_correct_passes(mode):
    x = randn(5, seed=12)
    report = gradguard.check(x_sin_x, x, mode=mode, order=2)
    assert report.verdict == "pass", str(report)
    assert report.order == 2


@pytest.mark.parametrize("mode", MODES)
def test_detached_backward_passes_first_order_fails_second(mode):
    x = randn(5, seed=12)
    first = gradguard.check(exp_detached, x, mode=mode, order=1)
    assert first.verdict == "pass", str(first)
    second = gradguard.check(exp_detached, x, mode=mode, order=2)
    assert second.verdict == "fail", str(second)
    if mode == "full":
        assert_fail_at(second, "x")
        assert "zero" in diagnosis(second), str(second)


@pytest.mark.parametrize("direction", ["fwd", "both"])
def test_second_order_forward_mode_on_torch_ops(direction):
    # Forward-over-reverse: the JVP of the (reverse-mode) derivative.
    x = randn(5, seed=12)
    report = gradguard.check(lambda x: x.sin() * x, x, mode="full", order=2, direction=direction)
    assert report.verdict == "pass", str(report)


def test_once_differentiable_backward_has_no_second_derivative():
    x = randn(5, seed=12)
    assert gradguard.check(exp_once_differentiable, x, mode="full").verdict == "pass"
    second = gradguard.check(exp_once_differentiable, x, mode="full", order=2)
    assert second.verdict == "fail", str(second)
    assert "zero" in diagnosis(second), str(second)


# -- float32 ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_float32_correct_rule_passes_in_float64(mode):
    x = randn(20, seed=13, dtype=torch.float32)
    report = gradguard.check(x_sin_x, x, mode=mode)
    assert report.verdict == "pass", str(report)
    assert "float64" in report.precision
    # The caller's tensor is untouched.
    assert x.dtype == torch.float32
    assert torch.equal(x, randn(20, seed=13, dtype=torch.float32))
