"""``kwargs=`` and ``has_aux=`` with hand-written NumPy rules (issue 17): the
rule gets f's keyword arguments too, and f's aux output is left out of the
comparison, untouched."""

from __future__ import annotations

import numpy as np
import pytest

import gradguard
from gradguard import ArgumentError


def scaled_tanh(x, *, scale):
    return np.tanh(x) * scale, {"scale": scale}


def scaled_tanh_vjp(g, x, *, scale):
    return g * scale * (1 - np.tanh(x) ** 2)


def test_a_vjp_rule_gets_the_keyword_arguments_and_aux_is_left_out():
    x = np.linspace(-1.0, 1.0, 5)
    report = gradguard.check(
        scaled_tanh, x, kwargs={"scale": 3.0}, has_aux=True, vjp=scaled_tanh_vjp
    )
    assert report.verdict == "pass", str(report)
    assert report.num_outputs == 5


def test_a_rule_that_ignores_a_keyword_argument_fails():
    x = np.linspace(-1.0, 1.0, 5)

    def forgets_scale(g, x, *, scale):
        return g * (1 - np.tanh(x) ** 2)

    report = gradguard.check(scaled_tanh, x, kwargs={"scale": 3.0}, has_aux=True, vjp=forgets_scale)
    assert report.verdict == "fail"


def test_a_grad_rule_with_a_masked_point_and_aux():
    x = np.array([0.5, -np.inf, 1.5])

    def f(x, *, power):
        finite = np.where(np.isfinite(x), x, 0.0)
        return np.sum(finite**power), "aux"

    def grad(x, *, power):
        return np.where(np.isfinite(x), power * np.where(np.isfinite(x), x, 0.0) ** (power - 1), 0)

    report = gradguard.check(f, x, kwargs={"power": 3}, has_aux=True, grad=grad)
    assert report.verdict == "pass", str(report)
    assert report.num_inputs == 2  # the -inf entry is held fixed


def test_parameters_cannot_take_a_hand_written_rule():
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(3, 2).double()
    x = torch.ones(4, 3, dtype=torch.float64)
    with pytest.raises(ArgumentError, match="wrt='inputs'"):
        gradguard.check(model, x, vjp=lambda g, x: g @ model.weight.detach())
    report = gradguard.check(model, x, wrt="inputs", vjp=lambda g, x: g @ model.weight.detach())
    assert report.verdict == "pass", str(report)
