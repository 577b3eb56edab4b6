"""``executor=``: chunks of evaluations run as tasks on any
``concurrent.futures.Executor`` (threads, processes, a dask.distributed
cluster), and the report equals the in-process one."""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import threading
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest

import gradguard
from gradguard.engine import evaluation as _evaluation
from gradguard.engine import tasks as _tasks

# -- functions at module level: picklable by reference ------------------------


def sin_times_x(x):
    return x.sin() * x


def scalar_valued(x):
    return (x.sin() * x).sum() + (x[:-1] * x[1:]).sum()


def not_vectorizable(x):
    # .item() is data-dependent control flow: vmap refuses, the loop runs.
    return x * 2.0 if float(x.sum().item()) > -1e9 else x


def not_vectorizable_dense(x):
    # The same, with a dense Jacobian: every column gets its own points (an
    # elementwise one would be measured by one stencil, too few for tasks).
    return x * x.sum() if float(x.sum().item()) > -1e9 else x


def numpy_f(x):
    return np.sin(x) * x


def numpy_vjp(cotangent, x):
    return cotangent * (np.cos(x) * x + np.sin(x))


def numpy_wrong_vjp(cotangent, x):
    wrong = cotangent * (np.cos(x) * x + np.sin(x))
    wrong[3] *= -1.0
    return wrong


def _torch_wrong_sin():
    torch = pytest.importorskip("torch")

    class WrongSinTimesX(torch.autograd.Function):
        """Backward drops the ``sin(x)`` term: wrong everywhere."""

        @staticmethod
        def forward(x):
            return x.sin() * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x.cos() * x

    return WrongSinTimesX.apply


def _same(a: gradguard.Report, b: gradguard.Report) -> None:
    """Everything but the wall-clock time, NaN equal to NaN."""
    left = dataclasses.asdict(dataclasses.replace(a, seconds=0.0))
    right = dataclasses.asdict(dataclasses.replace(b, seconds=0.0))
    assert _normalise(left) == _normalise(right)


def _normalise(value):
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def _torch_cases():
    torch = pytest.importorskip("torch")
    x = torch.randn(200, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return torch, x


class CountingExecutor(Executor):
    """Runs tasks inline and counts them: the evaluator must submit work."""

    def __init__(self) -> None:
        self.tasks = 0
        self.lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):
        with self.lock:
            self.tasks += 1
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # pragma: no cover - reported through the future
            future.set_exception(exc)
        return future


# -- threads --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_thread_pool_equals_in_process_torch(mode):
    _, x = _torch_cases()
    reference = gradguard.check(sin_times_x, x, mode=mode)
    with ThreadPoolExecutor(max_workers=2) as pool:
        report = gradguard.check(sin_times_x, x, mode=mode, executor=pool)
    assert reference.verdict == "pass"
    _same(reference, report)


def test_thread_pool_equals_in_process_on_a_wrong_gradient():
    wrong = _torch_wrong_sin()
    _, x = _torch_cases()
    reference = gradguard.check(wrong, x, mode="full")
    with ThreadPoolExecutor(max_workers=2) as pool:
        report = gradguard.check(wrong, x, mode="full", executor=pool)
    assert reference.verdict == "fail"
    _same(reference, report)


def test_thread_pool_numpy_loop_path():
    x = np.linspace(-2.0, 2.0, 40)
    reference = gradguard.check(numpy_f, x, vjp=numpy_wrong_vjp, mode="full")
    with ThreadPoolExecutor(max_workers=2) as pool:
        report = gradguard.check(numpy_f, x, vjp=numpy_wrong_vjp, mode="full", executor=pool)
    assert reference.verdict == "fail" and reference.path == "loop"
    _same(reference, report)


def test_thread_pool_jax():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = jnp.linspace(-2.0, 2.0, 64)

    def f(x):
        return jnp.sin(x) * x

    reference = gradguard.check(f, x, mode="full")
    with ThreadPoolExecutor(max_workers=2) as pool:
        report = gradguard.check(f, x, mode="full", executor=pool)
    _same(reference, report)


def test_chunks_become_tasks_and_fall_back_to_the_loop():
    _, x = _torch_cases()
    executor = CountingExecutor()
    reference = gradguard.check(not_vectorizable_dense, x[:50], mode="full")
    report = gradguard.check(not_vectorizable_dense, x[:50], mode="full", executor=executor)
    assert executor.tasks > 0
    assert reference.path == report.path == "loop"
    _same(reference, report)


def test_scalar_valued_function_on_an_inline_executor():
    _, x = _torch_cases()
    executor = CountingExecutor()
    reference = gradguard.check(scalar_valued, x, mode="full")
    report = gradguard.check(scalar_valued, x, mode="full", executor=executor)
    assert executor.tasks > 0 and report.verdict == "pass"
    _same(reference, report)


def test_not_an_executor_is_refused():
    _, x = _torch_cases()
    with pytest.raises(gradguard.ArgumentTypeError, match="executor"):
        gradguard.check(sin_times_x, x, executor=object())


# -- processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def process_pool():
    # spawn: a forked child of a process running torch's or JAX's threads
    # can deadlock (and JAX warns about it).
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        yield pool


def test_process_pool_equals_in_process(process_pool):
    _, x = _torch_cases()
    reference = gradguard.check(sin_times_x, x, mode="full")
    report = gradguard.check(sin_times_x, x, mode="full", executor=process_pool)
    _same(reference, report)


def test_process_pool_numpy(process_pool):
    x = np.linspace(-2.0, 2.0, 40)
    reference = gradguard.check(numpy_f, x, vjp=numpy_vjp, mode="full")
    report = gradguard.check(numpy_f, x, vjp=numpy_vjp, mode="full", executor=process_pool)
    assert reference.verdict == "pass"
    _same(reference, report)


def jax_sin_times_x(x):
    import jax.numpy as jnp

    return jnp.sin(x) * x


def test_process_pool_jax_carries_x64(process_pool):
    """A fresh worker has JAX's x64 mode off; the check's float64 must reach it."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    x = jax.numpy.linspace(-2.0, 2.0, 40)
    reference = gradguard.check(jax_sin_times_x, x, mode="full")
    report = gradguard.check(jax_sin_times_x, x, mode="full", executor=process_pool)
    assert reference.verdict == "pass"
    _same(reference, report)


class Float32Worker(CountingExecutor):
    """A worker set up differently: it computes in float32."""

    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        outputs, path, count = future.result()
        changed: Future = Future()
        changed.set_result(([o.astype(np.float32) for o in outputs], path, count))
        return changed


def test_a_worker_computing_other_dtypes_is_an_error():
    x = np.linspace(-2.0, 2.0, 40)
    with pytest.raises(gradguard.ArgumentError, match="worker returned float32"):
        gradguard.check(numpy_f, x, vjp=numpy_vjp, mode="full", executor=Float32Worker())


def test_unpicklable_function_gives_a_gradguard_error(process_pool):
    _, x = _torch_cases()
    lock = threading.Lock()

    def holds_a_lock(x):
        with lock:  # (a dense Jacobian: its columns' points go to the pool)
            return x.sin() * x.sum()

    with pytest.raises(gradguard.ArgumentTypeError, match=r"picklable.*_thread\.lock"):
        gradguard.check(holds_a_lock, x, mode="full", executor=process_pool)


def test_unpicklable_error_names_the_fix():
    pytest.importorskip("cloudpickle")
    with pytest.raises(gradguard.ArgumentTypeError, match="ThreadPoolExecutor"):
        _tasks._Remote.of(None, threading.Lock(), [], CountingExecutor())  # type: ignore[arg-type]


def _hide_cloudpickle(monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec

    def hidden(name, *args, **kwargs):
        return None if name == "cloudpickle" else find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", hidden)


def test_without_cloudpickle_module_level_functions_still_travel(monkeypatch, process_pool):
    _hide_cloudpickle(monkeypatch)
    x = np.linspace(-2.0, 2.0, 40)
    reference = gradguard.check(numpy_f, x, vjp=numpy_vjp, mode="full")
    report = gradguard.check(numpy_f, x, vjp=numpy_vjp, mode="full", executor=process_pool)
    _same(reference, report)


def test_without_cloudpickle_a_lambda_is_refused_with_the_fix(monkeypatch):
    _hide_cloudpickle(monkeypatch)
    x = np.linspace(-2.0, 2.0, 10)
    with pytest.raises(gradguard.ArgumentTypeError, match="pip install cloudpickle"):
        gradguard.check(
            lambda x: np.sin(x) * x, x, vjp=numpy_vjp, mode="full", executor=CountingExecutor()
        )


# -- dask.distributed -----------------------------------------------------------


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_dask_local_cluster_equals_in_process(dask_client):
    _, x = _torch_cases()
    executor = dask_client.get_executor()
    for f in (sin_times_x, scalar_valued):
        reference = gradguard.check(f, x, mode="full")
        report = gradguard.check(f, x, mode="full", executor=executor)
        assert reference.verdict == "pass"
        _same(reference, report)
    # The tasks ran on the workers: they hold the unpickled function.
    assert any(dask_client.run(lambda: len(_tasks._WORKER_CACHE)).values())


def test_dask_wrong_gradient_and_closures(dask_client):
    """A custom Function defined in a function body, and a lambda, travel by value."""
    wrong = _torch_wrong_sin()
    _, x = _torch_cases()
    executor = dask_client.get_executor()
    reference = gradguard.check(wrong, x, mode="full")
    report = gradguard.check(wrong, x, mode="full", executor=executor)
    assert reference.verdict == "fail"
    _same(reference, report)
    scale = 3.0
    report = gradguard.check(lambda y: scale * y.sin() * y, x, mode="full", executor=executor)
    assert report.verdict == "pass"


def test_readme_dask_example_runs(tmp_path):
    """The README's dask.distributed example, pasted into a file and run."""
    pytest.importorskip("dask.distributed")
    pytest.importorskip("torch")
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Going past one machine with dask.distributed", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "pass"


def test_submit_overlaps_batches_and_equals_calling():
    """Evaluator.submit: tasks of several batches in flight at once, results
    in the order asked for, equal to evaluating in process."""
    torch, x = _torch_cases()
    from gradguard.adapters import adapter_for

    adapter = adapter_for(x)

    def fn(x):
        return [sin_times_x(x)]

    batches = [[torch.randn(37, 200, dtype=torch.float64)] for _ in range(3)]
    in_process = _evaluation.Evaluator(adapter, fn, [x])
    expected = [in_process(b)[0] for b in batches]
    with ThreadPoolExecutor(max_workers=2) as pool:
        evaluator = _evaluation.Evaluator(adapter, fn, [x], executor=pool)
        pending = [evaluator.submit(b) for b in batches]
        results = [p.result()[0] for p in reversed(pending)][::-1]
    assert all(torch.equal(a, b) for a, b in zip(expected, results))
    assert evaluator.evaluations == in_process.evaluations
    assert evaluator.path == in_process.path == "vectorized"
