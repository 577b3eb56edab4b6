"""The structured functions of benchmarks/run.py (issue 19) compute the same thing
in torch and JAX, apply only where they are defined, and their floors run."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_run() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run = load_run()


@pytest.mark.parametrize("function", run.STRUCTURED)
def test_torch_and_jax_compute_the_same_function(function):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    x = run._x(200)
    by_torch = run._torch_function(function)(torch.from_numpy(x)).numpy()
    by_jax = np.asarray(run._jax_function(function)(jax.numpy.asarray(x)))
    assert by_torch.shape == by_jax.shape
    assert by_torch.size == 200  # R^n -> R^n
    np.testing.assert_allclose(by_torch, by_jax, rtol=1e-12, atol=1e-12)


def test_conv1d_is_banded_and_softmax_block_diagonal():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(run._x(100))
    conv = torch.autograd.functional.jacobian(run._torch_function("conv1d"), x)
    rows, columns = np.nonzero(conv.numpy())
    assert np.abs(rows - columns).max() == run.CONV_WIDTH // 2
    softmax = torch.autograd.functional.jacobian(run._torch_function("softmax-rows"), x)
    rows, columns = np.nonzero(softmax.reshape(100, 100).numpy())
    assert (rows // run.ROW == columns // run.ROW).all()
    assert len(rows) == 2 * run.ROW * run.ROW


def test_sizes_skip_where_a_function_does_not_apply():
    assert run._function_sizes("softmax-rows", [30, 100, 1000]) == [100, 1000]
    assert run._function_sizes("conv1d", [3, 30]) == [30]
    assert run._function_sizes("elementwise", None) == list(run.SIZES)
    assert run._function_sizes("layernorm-rows", None) == list(run.STRUCTURED_SIZES)
    assert not run._tool_applies("gradguard-tf-full", "conv1d")
    assert run._tool_applies("floor-jax", "conv1d")


@pytest.mark.parametrize("tool", ["floor-torch", "floor-jax"])
def test_floors_run_on_a_structured_function(tool, monkeypatch):
    pytest.importorskip(run.TOOLS[tool])
    monkeypatch.setattr(run, "FLOOR_BATCH_BYTES", (1 << 14,))
    monkeypatch.setattr(run, "FLOOR_TUNING_CALLS", 1)
    # 2^14 bytes: 10 columns and 10 rows per batch at n = 100.
    assert run._case(tool, "layernorm-rows", 100)().startswith("10 columns, 10 rows per batch")
