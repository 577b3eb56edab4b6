"""gradguard.compare: one function in several frameworks, values and gradients."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradguard
from gradguard import ArgumentError, ArgumentTypeError

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 4))
W = RNG.standard_normal((4, 2))


def f_np(x, w):
    return np.sum(np.tanh(x @ w))


def grad_np(x, w):
    s = 1 - np.tanh(x @ w) ** 2
    return s @ w.T, x.T @ s


def layer_np(x, w):
    return np.tanh(x @ w)


def layer_vjp_np(g, x, w):
    s = g * (1 - np.tanh(x @ w) ** 2)
    return s @ w.T, x.T @ s


def _torch():
    torch = pytest.importorskip("torch")
    return lambda x, w: torch.sum(torch.tanh(x @ w))


def _jax():
    pytest.importorskip("jax")
    import jax.numpy as jnp

    return lambda x, w: jnp.sum(jnp.tanh(x @ w))


def test_numpy_and_torch_agree():
    report = gradguard.compare({"numpy": (f_np, grad_np), "torch": _torch()}, X, W)
    assert report.passed, str(report)
    assert report.frameworks == ("numpy", "torch")
    assert set(report.checks) == {"numpy", "torch"}
    assert all(r.verdict == "pass" for r in report.checks.values())
    assert report.value_errors["torch"] <= 1 and report.gradient_errors["torch"] <= 1
    assert "agree" in str(report)


def test_every_installed_framework_agrees():
    functions = {"numpy": {"f": layer_np, "vjp": layer_vjp_np}}
    try:
        import torch

        functions["torch"] = lambda x, w: torch.tanh(x @ w)
    except ImportError:
        pass
    try:
        import jax.numpy as jnp

        functions["jax"] = lambda x, w: jnp.tanh(x @ w)
    except ImportError:
        pass
    try:
        import tensorflow as tf

        functions["tensorflow"] = lambda x, w: tf.math.tanh(x @ w)
    except ImportError:
        pass
    if len(functions) < 2:
        pytest.skip("no framework besides NumPy is installed")
    report = gradguard.compare(functions, X, W)
    assert report.passed, str(report)
    for name, check in report.checks.items():
        assert check.framework == name
        assert check.precision == "float64"  # float64 everywhere, JAX included


def test_the_odd_one_out_is_named_with_where_and_how_much():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    @jax.custom_vjp
    def tanh(z):
        return jnp.tanh(z)

    def fwd(z):
        return jnp.tanh(z), z

    def bwd(z, g):  # wrong for z > 1: the derivative times 1.5
        return (g * (1 - jnp.tanh(z) ** 2) * jnp.where(z > 1, 1.5, 1.0),)

    tanh.defvjp(fwd, bwd)
    report = gradguard.compare(
        {"numpy": (f_np, grad_np), "torch": _torch(), "jax": lambda x, w: jnp.sum(tanh(x @ w))},
        X,
        W,
    )
    assert report.verdict == "fail"
    assert {d.framework for d in report.disagreements} == {"jax"}
    assert {d.quantity for d in report.disagreements} == {"gradient"}
    assert report.checks["jax"].verdict == "fail"
    assert report.checks["torch"].verdict == "pass"
    assert report.value_errors["jax"] <= 1 < report.gradient_errors["jax"]
    worst = report.disagreements[0]
    assert worst.where.startswith(("x[", "w[")) and worst.difference > worst.tolerance
    text = str(report)
    assert "jax disagrees" in text and worst.where in text
    assert "jax's own check" in text


def test_a_wrong_value_is_found_even_when_gradients_agree():
    torch = pytest.importorskip("torch")
    pytest.importorskip("jax")
    import jax.numpy as jnp

    def off(x, w):  # the value shifted by a constant: same gradient
        return torch.sum(torch.tanh(x @ w)) + 1e-3

    report = gradguard.compare(
        {"numpy": (f_np, grad_np), "torch": off, "jax": lambda x, w: jnp.sum(jnp.tanh(x @ w))},
        X,
        W,
    )
    assert report.verdict == "fail"
    assert [(d.framework, d.quantity, d.where) for d in report.disagreements] == [
        ("torch", "value", "out")
    ]
    assert report.disagreements[0].difference == pytest.approx(1e-3)
    assert all(r.verdict == "pass" for r in report.checks.values())


def test_two_implementations_compare_the_second_with_the_first():
    torch = pytest.importorskip("torch")
    report = gradguard.compare(
        {"numpy": (f_np, grad_np), "torch": lambda x, w: 1.5 * torch.sum(torch.tanh(x @ w))},
        X,
        W,
    )
    assert report.verdict == "fail"
    assert report.reference == "numpy"
    assert {d.framework for d in report.disagreements} == {"torch"}
    assert any("a third would tell" in n for n in report.notes)


def test_tolerance_between_implementations_is_adjustable():
    torch = pytest.importorskip("torch")

    def close(x, w):
        return torch.sum(torch.tanh(x @ w)) * (1 + 1e-7)

    functions = {"numpy": (f_np, grad_np), "torch": close}
    assert gradguard.compare(functions, X, W).verdict == "fail"
    assert gradguard.compare(functions, X, W, rtol=1e-6).passed


def test_options_reach_each_check():
    report = gradguard.compare(
        {"numpy": (f_np, grad_np), "torch": _torch()}, X, W, mode="probe", seed=5
    )
    assert all(r.mode == "probe" and r.seed == 5 for r in report.checks.values())


def test_json_and_repr():
    report = gradguard.compare({"numpy": (f_np, grad_np), "torch": _torch()}, X, W)
    data = json.loads(report.to_json())
    assert data["verdict"] == "pass" and data["checks"]["torch"]["framework"] == "torch"
    assert "\n" not in repr(report)


def test_show_rich():
    pytest.importorskip("rich")
    import io

    out = io.StringIO()
    gradguard.compare({"numpy": (f_np, grad_np), "torch": _torch()}, X, W).show(out, color=True)
    assert "agree" in out.getvalue() and "vs finite differences" in out.getvalue()


@pytest.mark.parametrize(
    ("functions", "error", "message"),
    [
        ({"numpy": f_np, "torch": f_np}, ArgumentError, "NumPy has no autodiff"),
        ({"numpy": (f_np, grad_np)}, ArgumentError, "at least two"),
        ({"mxnet": f_np, "numpy": (f_np, grad_np)}, ArgumentError, "unknown framework"),
        ([f_np, f_np], ArgumentTypeError, "dict of framework name"),
        ({"numpy": (f_np, grad_np), "torch": {"g": f_np}}, ArgumentError, "dict entry"),
        ({"numpy": (f_np, grad_np), "torch": 3}, ArgumentTypeError, "callables"),
    ],
)
def test_bad_arguments_are_refused_clearly(functions, error, message):
    with pytest.raises(error, match=message):
        gradguard.compare(functions, X, W)


def test_no_point_is_refused():
    with pytest.raises(ArgumentError, match="args"):
        gradguard.compare({"numpy": (f_np, grad_np), "torch": _torch()})


def test_jax_x64_setting_is_restored():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    before = jax.config.jax_enable_x64
    gradguard.compare(
        {"numpy": (f_np, grad_np), "jax": lambda x, w: jnp.sum(jnp.tanh(x @ w))}, X, W
    )
    assert jax.config.jax_enable_x64 == before


def test_parameters_named_differently_are_matched_by_position():
    torch = pytest.importorskip("torch")

    def softplus_np(x):
        return np.logaddexp(x, 0.0)

    def softplus_vjp(cotangent, x):
        return cotangent / (1 + np.exp(-x))

    # torch.nn.functional.softplus calls its argument "input".
    report = gradguard.compare(
        {"numpy": {"f": softplus_np, "vjp": softplus_vjp}, "torch": torch.nn.functional.softplus},
        np.linspace(-3.0, 3.0, 7),
    )
    assert report.passed, str(report)
