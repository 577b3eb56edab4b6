"""gradguard.check on torch models (issue 17): ``check(module, x)`` checks the
module's parameters with its inputs, named as ``named_parameters()`` names
them; ``wrt=`` narrows; ``kwargs=`` and ``has_aux=`` pass through to f.

The broken layer is a custom ``autograd.Function`` linear layer whose
weight gradient is halved: it must fail naming the weight, and only it.
"""

from __future__ import annotations

import copy
import functools

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

import gradguard  # noqa: E402
from gradguard import ArgumentError, ArgumentTypeError  # noqa: E402
from reports import assert_fail_at, diagnosis  # noqa: E402


class LinearFunction(torch.autograd.Function):
    """y = x @ w.T + b, with a hand-written backward; ``weight_scale`` 0.5
    halves the weight's gradient (the bug)."""

    @staticmethod
    def forward(ctx, x, w, b, weight_scale):
        ctx.save_for_backward(x, w)
        ctx.weight_scale = weight_scale
        return x @ w.T + b

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, ctx.weight_scale * (g.T @ x), g.sum(0), None


class CustomLinear(torch.nn.Module):
    def __init__(self, n_in, n_out, weight_scale=1.0):
        super().__init__()
        generator = torch.Generator().manual_seed(n_in * 100 + n_out)
        self.weight = torch.nn.Parameter(
            torch.randn(n_out, n_in, generator=generator, dtype=torch.float64)
        )
        self.bias = torch.nn.Parameter(torch.randn(n_out, generator=generator, dtype=torch.float64))
        self.weight_scale = weight_scale

    def forward(self, x):
        return LinearFunction.apply(x, self.weight, self.bias, self.weight_scale)


class Net(torch.nn.Module):
    """encoder.0 is the custom layer; encoder.2 and head are torch's own."""

    def __init__(self, weight_scale=1.0):
        super().__init__()
        self.encoder = torch.nn.Sequential(
            CustomLinear(5, 4, weight_scale), torch.nn.Tanh(), torch.nn.Linear(4, 3).double()
        )
        self.head = torch.nn.Linear(3, 2).double()

    def forward(self, x, scale=1.0):
        return self.head(torch.tanh(self.encoder(x))) * scale


PARAMETERS = ["encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias"]
PARAMETERS += ["head.weight", "head.bias"]


def point(seed=0, shape=(3, 5)):
    return torch.tensor(np.random.default_rng(seed).standard_normal(shape))


def names(report):
    return [a.name for a in report.arguments]


def test_the_correct_model_passes_with_its_parameters_checked():
    model, x = Net(), point()
    report = gradguard.check(model, x)
    assert report.verdict == "pass", str(report)
    assert names(report) == ["x", *PARAMETERS]
    assert all(a.checked > 0 for a in report.arguments)
    assert not any("not checked" in n for n in report.notes)


def test_a_halved_weight_gradient_fails_naming_the_weight():
    model, x = Net(weight_scale=0.5), point()
    report = gradguard.check(model, x)
    assert_fail_at(report, "encoder.0.weight")
    by_name = {a.name: a for a in report.arguments}
    assert by_name["encoder.0.weight"].wrong > 0
    assert all(by_name[n].wrong == 0 for n in ["x", *PARAMETERS[1:]])
    assert "only encoder.0.weight is wrong" in diagnosis(report)
    assert "0.5 times" in diagnosis(report)
    assert "encoder.0.weight" in str(report)


def test_probe_mode_sees_the_halved_weight_gradient():
    assert gradguard.check(Net(weight_scale=0.5), point(), mode="probe").verdict == "fail"
    assert gradguard.check(Net(), point(), mode="probe").verdict == "pass"


def test_the_caller_model_is_left_as_it_was():
    model, x = Net(weight_scale=0.5), point()
    before = copy.deepcopy(model.state_dict())
    gradguard.check(model, x)
    gradguard.check(model, x, mode="probe")
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())


def test_wrt_narrows_to_inputs_parameters_or_names():
    model, x = Net(weight_scale=0.5), point()
    inputs = gradguard.check(model, x, wrt="inputs")
    assert inputs.verdict == "pass" and names(inputs) == ["x"]
    assert "encoder.0.weight (4, 5) float64" in " ".join(inputs.notes)
    assert names(gradguard.check(model, x, wrt=0)) == ["x"]
    parameters = gradguard.check(model, x, wrt="parameters")
    assert names(parameters) == PARAMETERS and parameters.verdict == "fail"
    head = gradguard.check(model, x, wrt="head")
    assert names(head) == ["head.weight", "head.bias"] and head.verdict == "pass"
    mixed = gradguard.check(model, x, wrt=["encoder.0.weight", 0])
    assert names(mixed) == ["x", "encoder.0.weight"]
    assert_fail_at(mixed, "encoder.0.weight")
    assert names(gradguard.check(model, x, wrt="all")) == ["x", *PARAMETERS]


def test_wrt_refuses_a_name_f_does_not_have():
    model, x = Net(), point()
    with pytest.raises(ArgumentError, match=r"'encoder\.9' names no argument.*encoder\.0\.weight"):
        gradguard.check(model, x, wrt="encoder.9")
    with pytest.raises(ArgumentError, match="reaches no parameters"):
        gradguard.check(torch.sin, x, wrt="parameters")
    with pytest.raises(ArgumentTypeError, match="wrt"):
        gradguard.check(model, x, wrt=[1.5])


def test_parameters_not_requiring_grad_are_left_alone():
    model, x = Net(), point()
    model.encoder[0].weight.requires_grad_(False)
    report = gradguard.check(model, x)
    assert "encoder.0.weight" not in names(report) and report.verdict == "pass"


def test_a_model_as_an_argument_or_a_method_is_checked_the_same():
    model, x = Net(weight_scale=0.5), point()
    taken = gradguard.check(lambda m, x: m(x), model, x)
    assert names(taken) == ["x", *(f"m.{n}" for n in PARAMETERS)]
    assert_fail_at(taken, "m.encoder.0.weight")
    method = gradguard.check(model.forward, x)
    assert names(method) == ["x", *PARAMETERS]
    assert_fail_at(method, "encoder.0.weight")


def test_a_function_using_a_model_names_its_parameters_and_checks_them_when_asked():
    model, x = Net(weight_scale=0.5), point()

    def loss(x):
        return model(x).square().sum()

    default = gradguard.check(loss, x)
    assert default.verdict == "pass" and names(default) == ["x"]
    note = next(n for n in default.notes if "not checked" in n)
    assert "model.encoder.0.weight (4, 5) float64" in note and "wrt='all'" in note
    asked = gradguard.check(loss, x, wrt="all")
    assert names(asked) == ["x", *(f"model.{n}" for n in PARAMETERS)]
    assert_fail_at(asked, "model.encoder.0.weight")
    only = gradguard.check(loss, x, wrt="model.encoder.0")
    assert names(only) == ["model.encoder.0.weight", "model.encoder.0.bias"]


def test_keyword_arguments_and_aux_outputs_pass_through():
    model, x = Net(weight_scale=0.5), point()
    seen = []

    def loss(x, *, model, note):
        seen.append(note)
        out = model(x, scale=2.0)
        return out.sum(), {"note": note, "out": out.detach()}

    kwargs = {"model": model, "note": "hi"}
    # Keyword arguments are passed as they are: a model among them is
    # named in a note, and checked when wrt= asks.
    report = gradguard.check(loss, x, kwargs=kwargs, has_aux=True)
    assert report.verdict == "pass" and names(report) == ["x"]
    assert "model.encoder.0.weight (4, 5) float64" in " ".join(report.notes)
    report = gradguard.check(loss, x, kwargs=kwargs, has_aux=True, wrt="model")
    assert_fail_at(report, "model.encoder.0.weight")
    assert set(seen) == {"hi"}
    assert gradguard.check(model, x, kwargs={"scale": 3.0}, mode="probe").verdict == "fail"
    correct = gradguard.check(functools.partial(Net(), scale=3.0), x)
    assert correct.verdict == "pass" and "encoder.0.weight" in names(correct)


def test_has_aux_refuses_an_f_that_returns_no_pair():
    with pytest.raises(ArgumentTypeError, match=r"has_aux=True.*pair"):
        gradguard.check(lambda x: x.sin(), point(), has_aux=True)
    with pytest.raises(ArgumentTypeError, match="kwargs"):
        gradguard.check(torch.sin, point(), kwargs=[1])


def test_batch_norm_statistics_of_the_caller_stay_as_they_were():
    model = torch.nn.Sequential(torch.nn.Linear(5, 4).double(), torch.nn.BatchNorm1d(4).double())
    model.train()
    before = model[1].running_mean.clone()
    report = gradguard.check(model, point(shape=(6, 5)))
    assert report.verdict == "pass", str(report)
    assert torch.equal(model[1].running_mean, before)
    assert "1.weight" in names(report)


def test_tied_weights_are_checked_once():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Linear(4, 4, bias=False).double()
            self.out = torch.nn.Linear(4, 4, bias=False).double()
            self.out.weight = self.embed.weight

        def forward(self, x):
            return self.out(torch.tanh(self.embed(x)))

    report = gradguard.check(Tied(), point(shape=(2, 4)))
    assert names(report) == ["x", "embed.weight"] and report.verdict == "pass", str(report)


GLOBAL_WEIGHT = torch.tensor(np.random.default_rng(5).standard_normal((4, 5)), requires_grad=True)


def uses_the_global_weight(x):
    return torch.tanh(LinearFunction.apply(x, GLOBAL_WEIGHT, torch.zeros(4, dtype=x.dtype), 0.5))


def test_tensors_read_from_a_closure_or_a_global_are_checked_when_asked():
    x = point()
    weight = torch.tensor(np.random.default_rng(6).standard_normal((4, 5)), requires_grad=True)
    bias = torch.zeros(4, dtype=torch.float64, requires_grad=True)

    def layer(x):
        return LinearFunction.apply(x, weight, bias, 0.5)

    default = gradguard.check(layer, x)
    assert default.verdict == "pass" and names(default) == ["x"]
    assert "weight (4, 5) float64" in " ".join(default.notes)
    asked = gradguard.check(layer, x, wrt="all")
    assert sorted(names(asked)) == ["bias", "weight", "x"]
    assert_fail_at(asked, "weight")
    assert gradguard.check(layer, x, wrt="bias").verdict == "pass"
    assert weight.grad is None and bias.grad is None
    assert_fail_at(gradguard.check(uses_the_global_weight, x, wrt="GLOBAL_WEIGHT"), "GLOBAL_WEIGHT")
    assert GLOBAL_WEIGHT.requires_grad and globals()["GLOBAL_WEIGHT"] is GLOBAL_WEIGHT


class _HalvedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        return x @ weight.T

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        return grad_output @ weight, 0.5 * grad_output.T @ x


class _Layer(torch.nn.Module):
    def __init__(self, wrong: bool):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4, dtype=torch.float64))
        self.wrong = wrong

    def forward(self, x):
        return torch.tanh(_HalvedLinear.apply(x, self.w) if self.wrong else x @ self.w.T)


def _deep_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[_Layer(wrong=i == 7) for i in range(12)])


def test_a_deep_model_s_diagnosis_names_the_wrong_tensor_and_counts_the_rest():
    x = torch.randn(3, 4, dtype=torch.float64)
    report = gradguard.check(_deep_model(), x, mode="full")
    assert report.verdict == "fail"
    line = next(d for d in report.diagnosis if d.startswith("only"))
    # 13 arguments agree (x and 12 weights but one): six named, the rest counted.
    assert line == "only 7.w is wrong; input, 0.w, 1.w, 2.w, 3.w, 4.w and 6 more agree"


def test_probe_mode_does_not_give_arguments_an_error_of_their_own():
    x = torch.randn(3, 4, dtype=torch.float64)
    report = gradguard.check(_deep_model(), x, mode="probe")
    assert report.verdict == "fail"
    text = str(report)
    assert "0.w (4, 4) float64: compared only within the probes, not entry by entry" in text
    assert "0 of 0 wrong" not in text
    assert "7.w (4, 4) float64: relative error" in text  # its located entries
