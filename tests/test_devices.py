"""Checks on accelerators: arrays stay on their device, CUDA paths work.

Skipped where no GPU is present (as on CI); run on a GPU machine with
``pytest tests/test_devices.py``.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import gradguard


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch")
    return torch


def _sin_x_function(torch, wrong=False):
    class SinX(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin() * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            d = x.cos() * x + x.sin()
            if wrong:
                d = d.clone()
                d[3] = d[3] * 1.01
            return g * d

    return SinX.apply


@pytest.mark.parametrize("mode", ["full", "probe"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_cuda_custom_function(mode, dtype):
    torch = _torch_cuda()
    x = torch.randn(300, dtype=getattr(torch, dtype), device="cuda")
    before = x.clone()
    good = gradguard.check(_sin_x_function(torch), x, mode=mode)
    bad = gradguard.check(_sin_x_function(torch, wrong=True), x, mode=mode)
    assert good.verdict == "pass", str(good)
    assert bad.verdict == "fail", str(bad)
    assert torch.equal(x, before) and x.device.type == "cuda"
    if mode == "full":
        assert bad.worst[0].index == (3,)


def test_torch_cuda_forward_and_second_order():
    torch = _torch_cuda()
    x = torch.randn(50, dtype=torch.float64, device="cuda")
    assert gradguard.check(lambda x: x.sin() * x, x, direction="both").passed
    assert gradguard.check(lambda x: (x.sin() * x).sum(), x, order=2).passed


def test_torch_cuda_seed_contract_keeps_the_device():
    torch = _torch_cuda()
    x = torch.tensor([3.0, 4.0], dtype=torch.float64, device="cuda")
    num, err = gradguard.check_gradient(lambda v: v[0] ** 2 + v[1] ** 2, x, [6.0, 8.0])
    assert num.device.type == "cuda" and err < 1e-8
    num = gradguard.numerical_gradient(lambda v: (v**3).sum(), x)
    assert num.device.type == "cuda"


def test_torch_cuda_report_plot(tmp_path):
    """The V curve's VJP gets cotangents made on the host: they must reach
    the device of f's CUDA outputs."""
    pytest.importorskip("matplotlib")
    torch = _torch_cuda()
    x = torch.linspace(-2.0, 2.0, 30, dtype=torch.float64, device="cuda")

    def f(x):
        return x.sin() * x

    report = gradguard.check(f, x, mode="full")
    assert report.passed
    assert report.plot(tmp_path / "cuda.png", f, x).exists()
    assert x.device.type == "cuda"


@pytest.mark.parametrize("to", ["cpu", "cuda"])
def test_torch_output_on_another_device_than_the_input(to):
    """f's outputs come back to the input's device, differentiably: the
    check still runs f's own backward (the wrong one fails)."""
    torch = _torch_cuda()
    start = "cuda" if to == "cpu" else "cpu"
    x = torch.randn(40, dtype=torch.float64, device=start)
    good, bad = _sin_x_function(torch), _sin_x_function(torch, wrong=True)
    assert gradguard.check(lambda x: good(x).to(to), x, mode="full").passed
    report = gradguard.check(lambda x: bad(x).to(to), x, mode="full")
    assert report.verdict == "fail", str(report)
    assert report.worst[0].index == (3,)
    assert gradguard.check(lambda x: bad(x).to(to), x, mode="probe").verdict == "fail"

    def mixed(x):
        return {"here": x.sin(), "there": (x * x.cos()).to(to)}

    assert gradguard.check(mixed, x.float(), direction="both").passed
    assert gradguard.check(lambda x: (x.sin() * x).sum().to(to), x, order=2).passed
    assert x.device.type == start


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_cuda_report_plot_with_a_cuda_tensor_held_by_f(tmp_path, dtype):
    """The V curve rebuilds the inputs at every step: on their own device,
    where f's weight lives."""
    from gradguard.engine.step_curve import add_plot_data

    torch = _torch_cuda()
    W = torch.randn(6, 5, dtype=getattr(torch, dtype), device="cuda")
    x = torch.randn(5, dtype=getattr(torch, dtype), device="cuda")

    def f(x):
        return torch.tanh(W @ x)

    report = gradguard.check(f, x, mode="full")
    assert report.passed, str(report)
    assert add_plot_data(report, f, x).step_curve  # the V curve itself: no matplotlib needed
    if importlib.util.find_spec("matplotlib") is not None:
        assert report.plot(tmp_path / "weight.png", f, x).exists()
    assert x.device.type == "cuda"


def test_jax_gpu_custom_vjp():
    jax = pytest.importorskip("jax")
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("no GPU for jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    @jax.custom_vjp
    def f(x):
        return jnp.sin(x) * x

    f.defvjp(lambda x: (f(x), x), lambda x, g: (g * (jnp.cos(x) * x + jnp.sin(x)),))
    x = jnp.linspace(-2.0, 2.0, 200)
    assert gradguard.check(f, x).passed
    num = gradguard.numerical_gradient(lambda v: jnp.sum(v**2), x)
    assert next(iter(num.devices())).platform == "gpu"


def test_cupy_with_a_hand_written_gradient():
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:
        pytest.skip("no CUDA device for cupy")
    x = cupy.asarray(np.linspace(-1.0, 1.0, 40))
    good = gradguard.check(lambda x: cupy.sum(x**3), x, grad=lambda x: 3 * x**2)
    bad = gradguard.check(lambda x: cupy.sum(x**3), x, grad=lambda x: 2 * x**2)
    assert good.passed and bad.verdict == "fail"
    num, err = gradguard.check_gradient(lambda v: cupy.sum(v**2), x, 2 * x)
    assert isinstance(num, cupy.ndarray) and err < 1e-8
