"""Corpus sweep: gradguard on the frameworks' own operators, beside their own checkers.

    python benchmarks/corpus.py                                  # everything (long)
    python benchmarks/corpus.py --suite opinfo --config f64-rev  # one column
    python benchmarks/corpus.py --suite opinfo --only sin,linalg.svd --samples 1

Every derivative in these corpora is the framework's own, and (but for the
few in ``ALLOWLIST``) right: each case where gradguard does not say ``pass``
while the framework's checker does is a false alarm to explain.

- ``opinfo``: every op of PyTorch's OpInfo database
  (``torch.testing._internal.common_methods_invocations.op_db``) with
  ``supports_autograd``, up to ``--samples`` samples each, built as torch's
  own ``TestGradients._check_helper`` builds them (``op.gradcheck_wrapper``,
  ``sample.output_process_fn_grad``; the differentiated inputs are the
  tensors of the sample that require grad). Configurations ``f64-rev``,
  ``f32-rev`` (reverse mode) and ``f64-fwd`` (forward mode, ops with
  ``supports_forward_ad``). Peer: ``torch.autograd.gradcheck`` with default
  options (in float32 too: that is what a user gets); forward mode with
  ``check_forward_ad=True, check_backward_ad=False``.
- ``jax``: the float records of ``lax_test_util.lax_ops()`` plus a list of
  ``jax.numpy`` / ``jax.lax`` functions, with x64 (``x64``: float64) and,
  in another process, without (``x32``: float32). Peer:
  ``jax.test_util.check_grads(f, args, order=1, modes=["rev"])``.
- ``tf``: 170 ops of tf.math / tf.nn / tf.linalg / tf.signal /
  tf.image in float64 (``f64``) and float32 (``f32``). Peer:
  ``tf.test.compute_gradient``, passing when
  ``max |theoretical - numerical| <= tol * max(1, max |theoretical|)`` with
  tol 1e-4 in float64 and 1e-3 in float32 (compute_gradient's step is
  about 1e-3: its own truncation error is of order 1e-6 and more).

gradguard runs as ``gradguard.check(f, *inputs, direction=...)`` with default
options, imported from whatever ``PYTHONPATH`` says (so one copy of this
script measures any checkout). Inputs are seeded per op (crc32 of its name).

Each (suite, configuration) runs in its own worker process, one intra-op
thread; the worker logs each case before running it, so a crash (a
segfault too) or a case over ``--case-timeout`` is recorded as such and the
worker restarts after it (each worker's address space is capped,
``--memory-limit``). Writes ``corpus.json`` (every case), ``corpus.md`` (the
tables), ``cases.md`` (every false alarm, grouped by apparent family) and
the raw ``<suite>-<config>.jsonl`` logs under ``--out`` (default
``out/corpus``; ``out/`` is ignored by git). Float32 columns are also judged
against the peer's float64 verdict on the same case (``REFERENCE``).
``--from-json`` redraws the tables of an earlier run; ``--store-gradcheck``
writes the verdicts ``tests/test_corpus.py`` reads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: Derivatives that are genuinely wrong in the framework: (suite, op) ->
#: evidence. Only entries verified here (the peer fails it too, or the bug
#: was reproduced by hand). A gradguard ``fail`` on these is right.
ALLOWLIST: dict[tuple[str, str], str] = {
    ("opinfo", "nn.functional.max_unpool1d"): "samples with duplicate indices (made by "
    "max_pool): the backward gives a gradient to values the forward overwrote; "
    "torch's op_db skips test_fn_grad on them, gradcheck fails sample 1 here",
    ("opinfo", "nn.functional.max_unpool2d"): "as max_unpool1d; gradcheck fails sample 1 here",
    ("opinfo", "nn.functional.max_unpool3d"): "as max_unpool1d; gradcheck fails both samples here",
    ("opinfo", "logcumsumexp"): "forward mode only: on sample 1 (entries up to 1e4) torch's JVP "
    "differs from its own reverse-mode Jacobian by 3.2e-6 at an entry of size 1 "
    "(torch.autograd.functional.jacobian, strategy='forward-mode' against reverse); central "
    "differences agree with reverse to 1e-11. gradcheck's atol of 1e-5 hides it",
}

#: The columns of each suite: name -> (dtype, direction).
CONFIGS: dict[str, dict[str, tuple[str, str]]] = {
    "opinfo": {
        "f64-rev": ("float64", "rev"),
        "f32-rev": ("float32", "rev"),
        "f64-fwd": ("float64", "fwd"),
    },
    "jax": {"x64": ("float64", "rev"), "x32": ("float32", "rev")},
    "tf": {"f64": ("float64", "rev"), "f32": ("float32", "rev")},
}
PEERS = {
    "opinfo": "torch.autograd.gradcheck",
    "jax": "jax.test_util.check_grads",
    "tf": "tf.test.compute_gradient",
}
TF_TOLERANCE = {"float64": 1e-4, "float32": 1e-3}
MESSAGE_CHARS = 300


def op_seed(name: str) -> int:
    return zlib.crc32(name.encode())


def first_line(text: str) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:MESSAGE_CHARS]


def exception_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {first_line(str(exc))}"


# --- gradguard's side -------------------------------------------------------


def run_gradguard(f: Callable[..., Any], inputs: tuple[Any, ...], direction: str) -> dict:
    """``gradguard.check`` with default options, summarised; never raises."""
    import gradguard

    start = time.perf_counter()
    try:
        report = gradguard.check(f, *inputs, direction=direction)
    except Exception as exc:
        return {
            "gg": "error",
            "gg_error": exception_text(exc),
            "gg_time": time.perf_counter() - start,
        }
    seconds = time.perf_counter() - start
    ratios = [m.ratio for m in report.worst]
    why = (report.diagnosis or report.reasons or ("",))[0]
    return {
        "gg": report.verdict,
        "gg_time": seconds,
        "gg_relative_error": report.relative_error,
        "gg_worst_ratio": max(ratios) if ratios else 0.0,
        "gg_checked": report.checked,
        "gg_wrong": report.wrong,
        "gg_uncertain": report.uncertain,
        "gg_why": first_line(why),
        "gg_note": first_line(report.notes[0]) if report.notes else "",
    }


def timed_peer(run: Callable[[], bool | str]) -> dict:
    """A peer's verdict: ``pass``, ``fail`` (its own error) or ``error``."""
    start = time.perf_counter()
    try:
        outcome = run()
    except AssertionError as exc:
        return {"peer": "fail", "peer_error": exception_text(exc), "peer_time": _since(start)}
    except Exception as exc:
        verdict = "fail" if type(exc).__name__ == "GradcheckError" else "error"
        return {"peer": verdict, "peer_error": exception_text(exc), "peer_time": _since(start)}
    if outcome is True:
        return {"peer": "pass", "peer_time": _since(start)}
    message = str(outcome or "")[:MESSAGE_CHARS]
    return {"peer": "fail", "peer_error": message, "peer_time": _since(start)}


def _since(start: float) -> float:
    return time.perf_counter() - start


# --- OpInfo -----------------------------------------------------------------


def opinfo_name(op: Any) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def opinfo_ops(dtype_name: str, direction: str, only: set[str] | None = None) -> list[Any]:
    """The OpInfo ops with autograd for this dtype (and forward AD for ``fwd``)."""
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    dtype = getattr(torch, dtype_name)
    ops = []
    for op in op_db:
        if not op.supports_autograd or dtype not in op.supported_backward_dtypes("cpu"):
            continue
        if direction == "fwd" and not op.supports_forward_ad:
            continue
        if only and opinfo_name(op) not in only and op.name not in only:
            continue
        ops.append(op)
    return ops


def opinfo_samples(op: Any, dtype_name: str, samples: int) -> list[Any]:
    """The first ``samples`` samples of ``op``, seeded by its name."""
    import torch

    torch.manual_seed(op_seed(opinfo_name(op)))
    found = []
    for sample in op.sample_inputs("cpu", getattr(torch, dtype_name), requires_grad=True):
        found.append(sample)
        if len(found) == samples:
            break
    return found


def opinfo_function(op: Any, sample: Any) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """f and its differentiated inputs, as torch's ``TestGradients._check_helper``."""
    import torch
    from torch.testing._internal.common_utils import is_iterable_of_tensors

    def requires_grad(x: Any) -> bool:
        return isinstance(x, torch.Tensor) and x.requires_grad

    if is_iterable_of_tensors(sample.input):
        leaves = [*sample.input, *sample.args, *sample.kwargs.values()]
    else:
        leaves = [sample.input, *sample.args, *sample.kwargs.values()]
    inputs = tuple(x for x in leaves if requires_grad(x))
    variant = op.get_op()

    def recompose(values: tuple[Any, ...], leaf: Any, at: int) -> tuple[Any, int]:
        if is_iterable_of_tensors(leaf):
            rebuilt = []
            for x in leaf:
                if requires_grad(x):
                    rebuilt.append(values[at])
                    at += 1
                else:
                    rebuilt.append(x)
            return rebuilt, at
        if requires_grad(leaf):
            return values[at], at + 1
        return leaf, at

    def f(*values: Any) -> Any:
        positional = []
        at = 0
        value, at = recompose(values, sample.input, at)
        positional.append(value)
        for leaf in sample.args:
            value, at = recompose(values, leaf, at)
            positional.append(value)
        kwargs = {}
        for key, leaf in sample.kwargs.items():
            kwargs[key], at = recompose(values, leaf, at)
        output = op.gradcheck_wrapper(variant, *positional, **kwargs)
        if sample.output_process_fn_grad is not None:
            return sample.output_process_fn_grad(output)
        return output

    return f, inputs


#: Filled by opinfo_cases: op name -> torch_own_test_skipped of the column.
TORCH_SKIPS: dict[str, str] = {}


def torch_own_test_skipped(op: Any, dtype_name: str, direction: str) -> str:
    """``"skip"`` or ``"xfail"`` where torch's own gradient test of this op and
    dtype is skipped or expected to fail (its op_db says so), else ``""``."""
    import torch

    if direction == "fwd":
        test = ("TestFwdGradients", "test_forward_mode_AD")
    else:
        test = ("TestBwdGradients", "test_fn_grad")
    for decorator in op.decorators:
        try:
            active = decorator.is_active(*test, "cpu", getattr(torch, dtype_name), {})
        except Exception:
            continue
        if active:
            names = " ".join(getattr(d, "__qualname__", str(d)) for d in decorator.decorators)
            return "xfail" if "expectedFailure" in names else "skip"
    return ""


def opinfo_cases(
    config: str, samples: int, only: set[str] | None = None
) -> Iterator[tuple[str, int, Callable[..., Any] | None, tuple[Any, ...], str]]:
    """``(op name, sample index, f, inputs, problem)`` of one configuration;
    ``f`` is None (and ``problem`` says why) where no case can be built."""
    dtype_name, direction = CONFIGS["opinfo"][config]
    for op in opinfo_ops(dtype_name, direction, only):
        name = opinfo_name(op)
        TORCH_SKIPS[name] = torch_own_test_skipped(op, dtype_name, direction)
        try:
            found = opinfo_samples(op, dtype_name, samples)
        except Exception as exc:
            yield name, 0, None, (), f"sample_inputs raised {exception_text(exc)}"
            continue
        for index, sample in enumerate(found):
            try:
                f, inputs = opinfo_function(op, sample)
            except Exception as exc:
                yield name, index, None, (), f"building f raised {exception_text(exc)}"
                continue
            if not inputs:
                yield name, index, None, (), "no input requires grad"
                continue
            yield name, index, f, inputs, ""


def torch_outputs_info(f: Callable[..., Any], inputs: tuple[Any, ...]) -> dict:
    """What f returns, for sorting false alarms into families: dtypes, which
    float outputs do not require grad, and whether the VJP hands back the
    incoming gradient's own memory (an aliased result)."""
    import torch

    info: dict[str, Any] = {}
    try:
        with torch.enable_grad():
            out = f(*inputs)
        outs = [out] if isinstance(out, torch.Tensor) else list(_torch_leaves(out))
        info["out_dtypes"] = sorted({str(o.dtype).replace("torch.", "") for o in outs})
        info["nondiff_outputs"] = sum(1 for o in outs if not o.requires_grad)
        diff = [o for o in outs if o.requires_grad]
        if diff:
            cotangents = [torch.randn_like(o) for o in diff]
            grads = torch.autograd.grad(diff, inputs, cotangents, allow_unused=True)
            given = {c.untyped_storage().data_ptr() for c in cotangents}
            info["aliased_vjp"] = any(
                g is not None and g.untyped_storage().data_ptr() in given for g in grads
            )
    except Exception as exc:
        info["probe_error"] = exception_text(exc)
    return info


def _torch_leaves(value: Any) -> Iterator[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _torch_leaves(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _torch_leaves(item)


def run_opinfo_case(f: Callable[..., Any], inputs: tuple[Any, ...], config: str) -> dict:
    import torch

    _dtype_name, direction = CONFIGS["opinfo"][config]
    result = run_gradguard(f, inputs, direction)
    if direction == "fwd":
        options = {"check_forward_ad": True, "check_backward_ad": False}
    else:
        options = {}
    result.update(timed_peer(lambda: torch.autograd.gradcheck(f, inputs, **options)))
    if result["gg"] != "pass":
        result.update(torch_outputs_info(f, inputs))
    result["input_dtypes"] = sorted({str(x.dtype).replace("torch.", "") for x in inputs})
    result["input_layout"] = sorted(
        {"contiguous" if x.is_contiguous() else "strided" for x in inputs}
    )
    return result


def opinfo_worker(config: str, samples: int, only: set[str] | None, log: Path) -> None:
    import torch

    torch.set_num_threads(1)
    done = started_keys(log)
    for name, index, f, inputs, problem in opinfo_cases(config, samples, only):
        key = f"{name}#{index}"
        if key in done:
            continue
        write_event(log, {"event": "start", "key": key})
        case = {"event": "case", "key": key, "op": name, "sample": index}
        if TORCH_SKIPS.get(name):
            case["torch_own_test"] = TORCH_SKIPS[name]
        if f is None:
            case.update({"gg": "skipped", "peer": "skipped", "skip": problem})
        else:
            case.update(guarded(lambda f=f, inputs=inputs: run_opinfo_case(f, inputs, config)))
        write_event(log, case)


def guarded(run: Callable[[], dict]) -> dict:
    """A case's own Python exception (outside both checkers) is a result too."""
    try:
        return run()
    except Exception as exc:
        return {"gg": "error", "peer": "error", "harness_error": exception_text(exc)}


# --- inputs for the JAX and TensorFlow lists ------------------------------------

#: How each argument of a listed op is drawn: a shape and a domain.
SQUARE = (4, 4)
GRID = (3, 4)


def make_array(rng: Any, shape: tuple[int, ...], domain: str, dtype: str) -> Any:
    """A NumPy array of ordinary values in ``domain``, seeded by ``rng``."""
    import numpy as np

    normal = rng.standard_normal(shape)
    if domain == "any":
        values = normal
    elif domain == "pos":
        values = 0.5 + np.abs(normal)
    elif domain == "gt1":
        values = 1.5 + np.abs(normal)
    elif domain == "unit":
        values = rng.uniform(-0.9, 0.9, shape)
    elif domain == "prob":
        values = rng.uniform(0.05, 0.95, shape)
    elif domain == "spd":
        a = normal.reshape(-1, shape[-1], shape[-1])
        values = (a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])).reshape(shape)
    elif domain == "wide":
        values = 3.0 * normal
    else:
        raise ValueError(domain)
    return np.asarray(values, dtype=dtype)


def case_arrays(name: str, specs: list[tuple[tuple[int, ...], str]], dtype: str) -> list[Any]:
    import numpy as np

    rng = np.random.default_rng(op_seed(name))
    return [make_array(rng, shape, domain, dtype) for shape, domain in specs]


# --- JAX ------------------------------------------------------------------------


def jax_listed() -> list[tuple[str, Callable[..., Any], list[tuple[tuple[int, ...], str]]]]:
    """jax.numpy / jax.lax / jax.nn / jax.scipy functions beyond lax_ops()."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.scipy import special

    a, p, u, m, s = (GRID, "any"), (GRID, "pos"), (GRID, "unit"), (SQUARE, "any"), (SQUARE, "spd")
    image = ((1, 6, 6, 2), "any")
    kernel = ((3, 3, 2, 3), "any")

    def conv(x: Any, w: Any) -> Any:
        return lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    def max_pool(x: Any) -> Any:
        return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    return [
        ("jnp.cumsum", lambda x: jnp.cumsum(x, axis=1), [a]),
        ("jnp.cumprod", lambda x: jnp.cumprod(x, axis=1), [a]),
        ("lax.cummax", lambda x: lax.cummax(x, axis=1), [a]),
        ("lax.cumlogsumexp", lambda x: lax.cumlogsumexp(x, axis=1), [a]),
        ("jnp.sort", lambda x: jnp.sort(x, axis=1), [a]),
        ("lax.top_k", lambda x: lax.top_k(x, 2), [a]),
        ("lax.top_k.values", lambda x: lax.top_k(x, 2)[0], [a]),
        ("jnp.max", jnp.max, [a]),
        ("jnp.median", jnp.median, [a]),
        ("jnp.abs", jnp.abs, [a]),
        ("jnp.sign*x", lambda x: jnp.sign(x) * x, [a]),
        ("jnp.floor", jnp.floor, [(GRID, "wide")]),
        ("jnp.ceil", jnp.ceil, [(GRID, "wide")]),
        ("jnp.round", jnp.round, [(GRID, "wide")]),
        ("jnp.remainder", lambda x: jnp.remainder(x, 1.3), [(GRID, "wide")]),
        ("jnp.fmod", lambda x, y: jnp.fmod(x, y), [(GRID, "wide"), p]),
        ("jnp.tan", jnp.tan, [a]),
        ("jnp.cbrt", jnp.cbrt, [a]),
        ("jnp.arctan2", jnp.arctan2, [a, a]),
        ("x**-2", lambda x: x**-2, [a]),
        ("jnp.hypot", jnp.hypot, [a, a]),
        ("jnp.logaddexp", jnp.logaddexp, [a, a]),
        ("jnp.sinc", jnp.sinc, [a]),
        ("jnp.clip", lambda x: jnp.clip(x, -0.5, 0.5), [a]),
        ("jnp.where", lambda x, y: jnp.where(x > 0, x * y, y), [a, a]),
        ("jnp.maximum", jnp.maximum, [a, a]),
        ("jnp.var", jnp.var, [a]),
        ("jnp.std", lambda x: jnp.std(x, axis=0), [a]),
        ("jnp.linalg.norm", jnp.linalg.norm, [a]),
        ("jnp.linalg.norm.ord2", lambda x: jnp.linalg.norm(x, ord=2), [m]),
        ("jnp.linalg.inv", jnp.linalg.inv, [s]),
        ("jnp.linalg.det", jnp.linalg.det, [m]),
        ("jnp.linalg.slogdet", lambda x: jnp.linalg.slogdet(x)[1], [m]),
        ("jnp.linalg.eigh", lambda x: jnp.linalg.eigh(x)[0], [s]),
        ("jnp.linalg.svd", lambda x: jnp.linalg.svd(x, compute_uv=False), [m]),
        ("jnp.linalg.qr", jnp.linalg.qr, [m]),
        ("jnp.linalg.cholesky", jnp.linalg.cholesky, [s]),
        ("jnp.linalg.solve", jnp.linalg.solve, [s, ((4, 3), "any")]),
        ("jnp.linalg.pinv", jnp.linalg.pinv, [a]),
        ("jax.scipy.linalg.expm", jax.scipy.linalg.expm, [(SQUARE, "unit")]),
        ("jnp.linalg.matrix_power", lambda x: jnp.linalg.matrix_power(x, 3), [m]),
        ("jnp.linalg.eig.values", lambda x: jnp.linalg.eigvals(x), [s]),
        ("jnp.fft.fft", jnp.fft.fft, [a]),
        ("jnp.fft.rfft", jnp.fft.rfft, [a]),
        ("jnp.fft.irfft", lambda x: jnp.fft.irfft(x, n=6), [a]),
        ("jnp.matmul", jnp.matmul, [m, ((4, 3), "any")]),
        ("jnp.einsum", lambda x, y: jnp.einsum("ij,kj->ik", x, y), [a, a]),
        ("lax.conv_general_dilated", conv, [image, kernel]),
        ("lax.reduce_window.max", max_pool, [image]),
        ("jax.nn.relu", jax.nn.relu, [a]),
        ("jax.nn.gelu", jax.nn.gelu, [a]),
        ("jax.nn.softplus", jax.nn.softplus, [a]),
        ("jax.nn.silu", jax.nn.silu, [a]),
        ("jax.nn.softmax", jax.nn.softmax, [a]),
        ("jax.nn.log_softmax", jax.nn.log_softmax, [a]),
        ("jax.nn.logsumexp", jax.nn.logsumexp, [a]),
        ("jax.nn.standardize", jax.nn.standardize, [a]),
        ("special.gammaln", special.gammaln, [p]),
        ("special.ndtr", special.ndtr, [a]),
        ("special.ndtri", special.ndtri, [(GRID, "prob")]),
        ("special.logit", special.logit, [(GRID, "prob")]),
        ("special.xlogy", special.xlogy, [p, p]),
        ("special.erfc", special.erfc, [a]),
        ("special.i0e", special.i0e, [a]),
        ("special.gammainc", special.gammainc, [p, p]),
        ("jnp.arcsin", jnp.arcsin, [u]),
        ("jnp.interp", lambda x: jnp.interp(x, jnp.linspace(-3, 3, 7), jnp.arange(7.0) ** 2), [a]),
        ("jnp.take_along_axis", lambda x: jnp.take_along_axis(x, jnp.argsort(x, 1), 1), [a]),
        ("jnp.polyval", lambda c, x: jnp.polyval(c, x), [((4,), "any"), a]),
        ("astype.float32", lambda x: jnp.sin(x).astype(jnp.float32), [a]),
    ]


def jax_cases(
    dtype: str, only: set[str] | None
) -> Iterator[tuple[str, Callable[..., Any] | None, list[Any]]]:
    """``(name, f, args)``, f None where not differentiable: the lax_ops()
    records with float inputs (their own input generators), then the list."""
    import numpy as np
    from jax import lax

    try:
        from jax._src.internal_test_util import lax_test_util

        records = lax_test_util.lax_ops()
    except Exception:
        records = []
    seen: Counter[str] = Counter()
    for record in records:
        if np.float32 not in [np.dtype(d).type for d in record.dtypes]:
            continue
        name = f"lax.{record.op}"
        seen[name] += 1
        name = name if seen[name] == 1 else f"{name}#{seen[name]}"
        if only and name not in only and record.op not in only:
            continue
        rng = record.rng_factory(np.random.RandomState(op_seed(name)))
        args = [rng(GRID, np.dtype(dtype)) for _ in range(record.nargs)]
        yield name, differentiable_jax(getattr(lax, record.op), args), args
    for name, f, specs in jax_listed():
        if only and name not in only:
            continue
        args = case_arrays(name, specs, dtype)
        yield name, differentiable_jax(f, args), args


def differentiable_jax(f: Callable[..., Any], args: list[Any]) -> Callable[..., Any] | None:
    """``f`` if it has a reverse-mode derivative with a float output, else None."""
    import jax
    import jax.numpy as jnp

    try:
        out = jax.eval_shape(f, *args)
        leaves = jax.tree_util.tree_leaves(out)
        if not any(jnp.issubdtype(leaf.dtype, jnp.inexact) for leaf in leaves):
            return None
        jax.vjp(f, *args)
    except Exception:
        return None
    return f


def jax_worker(config: str, samples: int, only: set[str] | None, log: Path) -> None:
    import jax

    dtype, _direction = CONFIGS["jax"][config]
    jax.config.update("jax_enable_x64", dtype == "float64")
    import jax.numpy as jnp
    from jax.test_util import check_grads

    done = started_keys(log)
    for name, f, args in jax_cases(dtype, only):
        key = f"{name}#0"
        if key in done:
            continue
        write_event(log, {"event": "start", "key": key})
        case = {"event": "case", "key": key, "op": name, "sample": 0}
        if f is None:
            case.update({"gg": "skipped", "peer": "skipped", "skip": "not differentiable"})
        else:
            arrays = tuple(jnp.asarray(x) for x in args)

            def run(f: Callable[..., Any] = f, arrays: tuple[Any, ...] = arrays) -> dict:
                result = run_gradguard(f, arrays, "rev")
                result.update(
                    timed_peer(lambda: check_grads(f, arrays, order=1, modes=["rev"]) or True)
                )
                if result["gg"] != "pass":
                    out = jax.eval_shape(f, *arrays)
                    result["out_dtypes"] = sorted(
                        {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(out)}
                    )
                return result

            case.update(guarded(run))
        write_event(log, case)


# --- TensorFlow -------------------------------------------------------------------


def tf_listed() -> list[tuple[str, Callable[..., Any], list[tuple[tuple[int, ...], str]]]]:
    """About 120 ops of tf.math, tf.nn, tf.linalg, tf.signal and tf.image."""
    import tensorflow as tf

    a, p, u, g1 = (GRID, "any"), (GRID, "pos"), (GRID, "unit"), (GRID, "gt1")
    pr, w = (GRID, "prob"), (GRID, "wide")
    m, s = (SQUARE, "any"), (SQUARE, "spd")
    image = ((1, 6, 6, 3), "prob")
    filt = ((3, 3, 3, 2), "any")
    seq = ((1, 8, 3), "any")
    vol = ((1, 4, 4, 4, 2), "any")
    math, nn, linalg, signal, img = tf.math, tf.nn, tf.linalg, tf.signal, tf.image
    unary_any = [
        "abs", "asinh", "atan", "bessel_i0", "bessel_i0e", "bessel_i1", "bessel_i1e", "cos",
        "cosh", "erf", "erfc", "exp", "expm1", "log_sigmoid", "negative", "sigmoid", "sin",
        "sinh", "softplus", "softsign", "square", "tan", "tanh", "sign", "ceil", "floor",
        "round", "rint",
    ]  # fmt: skip
    unary_domain = {
        "acos": u, "asin": u, "atanh": u, "erfinv": u, "acosh": g1, "digamma": p,
        "lgamma": p, "log": p, "log1p": p, "reciprocal": p, "rsqrt": p, "sqrt": p,
        "ndtri": pr,
    }  # fmt: skip
    listed: list[tuple[str, Callable[..., Any], list[Any]]] = []
    listed += [
        (f"math.{n}", getattr(math, n), [w if n in ("ceil", "floor", "round", "rint") else a])
        for n in unary_any
    ]
    listed += [(f"math.{n}", getattr(math, n), [d]) for n, d in unary_domain.items()]
    binary = {
        "add": (a, a), "subtract": (a, a), "multiply": (a, a), "divide": (a, p),
        "maximum": (a, a), "minimum": (a, a), "squared_difference": (a, a), "atan2": (a, a),
        "pow": (p, a), "xlogy": (p, p), "xlog1py": (p, p), "xdivy": (a, p),
        "floormod": (w, p), "igamma": (p, p), "igammac": (p, p),
        "divide_no_nan": (a, p), "multiply_no_nan": (a, a),
    }  # fmt: skip
    listed += [(f"math.{n}", getattr(math, n), list(d)) for n, d in binary.items()]
    listed += [
        ("math.betainc", math.betainc, [p, p, pr]),
        ("math.polyval", lambda c, x: math.polyval(tf.unstack(c), x), [((3,), "any"), a]),
        ("math.lbeta", math.lbeta, [p]),
        ("math.reduce_sum", math.reduce_sum, [a]),
        ("math.reduce_mean", lambda x: math.reduce_mean(x, axis=1), [a]),
        ("math.reduce_max", lambda x: math.reduce_max(x, axis=1), [a]),
        ("math.reduce_min", math.reduce_min, [a]),
        ("math.reduce_prod", lambda x: math.reduce_prod(x, axis=0), [a]),
        ("math.reduce_logsumexp", lambda x: math.reduce_logsumexp(x, axis=1), [a]),
        ("math.reduce_std", math.reduce_std, [a]),
        ("math.reduce_variance", lambda x: math.reduce_variance(x, axis=0), [a]),
        ("math.reduce_euclidean_norm", math.reduce_euclidean_norm, [a]),
        ("math.cumsum", lambda x: math.cumsum(x, axis=1), [a]),
        ("math.cumprod", lambda x: math.cumprod(x, axis=1), [a]),
        ("math.cumulative_logsumexp", lambda x: math.cumulative_logsumexp(x, axis=1), [a]),
        ("math.l2_normalize", lambda x: math.l2_normalize(x, axis=1), [a]),
        ("math.top_k.values", lambda x: math.top_k(x, 2).values, [a]),
        ("math.segment_sum", lambda x: math.segment_sum(x, [0, 0, 1]), [a]),
        ("math.unsorted_segment_max", lambda x: math.unsorted_segment_max(x, [0, 1, 0], 2), [a]),
        ("math.softplus.beta", lambda x: math.softplus(2.0 * x) / 2.0, [a]),
        ("sort", lambda x: tf.sort(x, axis=1), [a]),
        ("norm", tf.norm, [a]),
        ("clip_by_value", lambda x: tf.clip_by_value(x, -0.5, 0.5), [a]),
        ("clip_by_norm", lambda x: tf.clip_by_norm(x, 1.0), [a]),
        ("where", lambda x, y: tf.where(x > 0, x * y, y), [a, a]),
        ("gather", lambda x: tf.gather(x, [2, 0, 1], axis=1), [a]),
        ("tile", lambda x: tf.tile(x, [2, 1]), [a]),
        ("transpose", tf.transpose, [a]),
        ("reverse", lambda x: tf.reverse(x, [1]), [a]),
        ("pad.reflect", lambda x: tf.pad(x, [[1, 1], [2, 0]], "REFLECT"), [a]),
        ("einsum", lambda x, y: tf.einsum("ij,kj->ik", x, y), [a, a]),
        ("tensordot", lambda x, y: tf.tensordot(x, y, axes=[[1], [1]]), [a, a]),
        ("cast.float32", lambda x: tf.cast(tf.sin(x), tf.float32), [a]),
    ]
    listed += [
        (f"nn.{n}", getattr(nn, n), [a])
        for n in (
            "relu",
            "relu6",
            "elu",
            "selu",
            "gelu",
            "leaky_relu",
            "silu",
            "softmax",
            "log_softmax",
            "softsign",
            "l2_loss",
        )
    ]
    listed += [
        ("nn.silu.beta", lambda x, b: nn.silu(x, b), [a, ((), "pos")]),
        ("nn.moments", lambda x: nn.moments(x, axes=[0]), [a]),
        (
            "nn.sigmoid_cross_entropy_with_logits",
            lambda x, y: nn.sigmoid_cross_entropy_with_logits(labels=y, logits=x),
            [a, pr],
        ),
        (
            "nn.softmax_cross_entropy_with_logits",
            lambda x, y: nn.softmax_cross_entropy_with_logits(labels=nn.softmax(y), logits=x),
            [a, a],
        ),
        (
            "nn.batch_normalization",
            lambda x, m, v: nn.batch_normalization(x, m, v, None, None, 1e-3),
            [a, ((4,), "any"), ((4,), "pos")],
        ),
        ("nn.bias_add", nn.bias_add, [a, ((4,), "any")]),
        ("nn.local_response_normalization", nn.local_response_normalization, [image]),
        ("nn.conv1d", lambda x, k: nn.conv1d(x, k, 1, "SAME"), [seq, ((3, 3, 2), "any")]),
        ("nn.conv2d", lambda x, k: nn.conv2d(x, k, 1, "SAME"), [image, filt]),
        ("nn.conv2d.strided", lambda x, k: nn.conv2d(x, k, 2, "VALID"), [image, filt]),
        ("nn.conv2d.dilated", lambda x, k: nn.conv2d(x, k, 1, "SAME", dilations=2), [image, filt]),
        (
            "nn.conv2d_transpose",
            lambda x, k: nn.conv2d_transpose(x, k, (1, 12, 12, 3), 2),
            [((1, 6, 6, 2), "any"), filt],
        ),
        (
            "nn.depthwise_conv2d",
            lambda x, k: nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME"),
            [image, ((3, 3, 3, 1), "any")],
        ),
        (
            "nn.conv3d",
            lambda x, k: nn.conv3d(x, k, [1, 1, 1, 1, 1], "SAME"),
            [vol, ((2, 2, 2, 2, 2), "any")],
        ),
        ("nn.avg_pool2d", lambda x: nn.avg_pool2d(x, 2, 2, "VALID"), [image]),
        ("nn.max_pool2d", lambda x: nn.max_pool2d(x, 2, 2, "VALID"), [image]),
        ("nn.avg_pool1d", lambda x: nn.avg_pool1d(x, 2, 2, "VALID"), [seq]),
        ("nn.max_pool3d", lambda x: nn.max_pool3d(x, 2, 2, "VALID"), [vol]),
        ("nn.embedding_lookup", lambda x: nn.embedding_lookup(x, [2, 0, 2]), [a]),
        (
            "nn.normalize_moments.compute",
            lambda x: nn.weighted_moments(x, [0], tf.ones_like(x)),
            [a],
        ),
    ]
    listed += [
        ("linalg.matmul", linalg.matmul, [m, ((4, 3), "any")]),
        ("linalg.inv", linalg.inv, [s]),
        ("linalg.det", linalg.det, [m]),
        ("linalg.logdet", linalg.logdet, [s]),
        ("linalg.slogdet", lambda x: linalg.slogdet(x)[1], [m]),
        ("linalg.cholesky", linalg.cholesky, [s]),
        ("linalg.solve", linalg.solve, [s, ((4, 2), "any")]),
        (
            "linalg.triangular_solve",
            lambda x, b: linalg.triangular_solve(x + 4.0 * tf.eye(4, dtype=x.dtype), b),
            [m, ((4, 2), "any")],
        ),
        ("linalg.eigh", lambda x: linalg.eigh(x)[0], [s]),
        ("linalg.eigvalsh", linalg.eigvalsh, [s]),
        ("linalg.svd", lambda x: linalg.svd(x, compute_uv=False), [m]),
        ("linalg.qr", lambda x: tuple(linalg.qr(x)), [m]),
        ("linalg.expm", linalg.expm, [(SQUARE, "unit")]),
        ("linalg.pinv", linalg.pinv, [a]),
        ("linalg.trace", linalg.trace, [m]),
        ("linalg.diag_part", linalg.diag_part, [m]),
        ("linalg.band_part", lambda x: linalg.band_part(x, 1, 0), [m]),
        ("linalg.cross", linalg.cross, [((2, 3), "any"), ((2, 3), "any")]),
        ("linalg.norm", lambda x: linalg.norm(x, axis=1), [a]),
        ("linalg.lstsq", lambda x, b: linalg.lstsq(x, b), [((5, 3), "any"), ((5, 2), "any")]),
        (
            "linalg.cholesky_solve",
            lambda x, b: linalg.cholesky_solve(linalg.cholesky(x), b),
            [s, ((4, 2), "any")],
        ),
        ("linalg.matrix_transpose", linalg.matrix_transpose, [a]),
        (
            "linalg.logm.real",
            lambda x: tf.math.real(linalg.logm(tf.complex(x, tf.zeros_like(x)))),
            [s],
        ),
    ]
    listed += [
        ("signal.rfft", signal.rfft, [a]),
        ("signal.irfft", lambda x, y: signal.irfft(tf.complex(x, y)), [a, a]),
        ("signal.rfft2d", signal.rfft2d, [a]),
        ("signal.fft.real", lambda x: tf.math.real(signal.fft(tf.complex(x, 2.0 * x))), [a]),
        ("signal.dct", signal.dct, [a]),
        ("signal.idct", signal.idct, [a]),
        ("signal.frame", lambda x: signal.frame(x, 2, 1), [a]),
        ("signal.overlap_and_add", lambda x: signal.overlap_and_add(x, 2), [a]),
        ("signal.stft.abs", lambda x: tf.abs(signal.stft(x, 4, 2)), [((16,), "any")]),
    ]
    listed += [
        ("image.resize.bilinear", lambda x: img.resize(x, (9, 9)), [image]),
        ("image.resize.bicubic", lambda x: img.resize(x, (9, 9), "bicubic"), [image]),
        ("image.resize.area", lambda x: img.resize(x, (4, 4), "area"), [image]),
        ("image.adjust_contrast", lambda x: img.adjust_contrast(x, 1.5), [image]),
        ("image.adjust_saturation", lambda x: img.adjust_saturation(x, 1.5), [image]),
        ("image.per_image_standardization", img.per_image_standardization, [image]),
        ("image.rgb_to_grayscale", img.rgb_to_grayscale, [image]),
        ("image.rgb_to_hsv", img.rgb_to_hsv, [image]),
        ("image.rgb_to_yuv", img.rgb_to_yuv, [image]),
        ("image.flip_left_right", img.flip_left_right, [image]),
        ("image.rot90", img.rot90, [image]),
        ("image.total_variation", img.total_variation, [image]),
        ("image.image_gradients", img.image_gradients, [image]),
        ("image.sobel_edges", img.sobel_edges, [image]),
        (
            "image.crop_and_resize",
            lambda x: img.crop_and_resize(x, [[0.1, 0.1, 0.8, 0.9]], [0], (4, 4)),
            [image],
        ),
        (
            "image.extract_patches",
            lambda x: img.extract_patches(x, [1, 2, 2, 1], [1, 2, 2, 1], [1, 1, 1, 1], "VALID"),
            [image],
        ),
        ("image.adjust_gamma", lambda x: img.adjust_gamma(x, 1.5), [image]),
    ]
    return listed


def tf_compute_gradient(f: Callable[..., Any], arrays: tuple[Any, ...], dtype: str) -> bool | str:
    import numpy as np
    import tensorflow as tf

    def flat(*xs: Any) -> Any:
        # compute_gradient takes one output tensor: f's outputs, flattened and joined.
        outs = tf.nest.flatten(f(*xs))
        return tf.concat([tf.reshape(tf.cast(o, outs[0].dtype), [-1]) for o in outs], 0)

    theoretical, numerical = tf.test.compute_gradient(flat, list(arrays))
    error, scale = 0.0, 1.0
    for t, n in zip(theoretical, numerical):
        if np.size(t):
            error = max(error, float(np.max(np.abs(np.asarray(t) - np.asarray(n)))))
            scale = max(scale, float(np.max(np.abs(t))))
    if error <= TF_TOLERANCE[dtype] * scale:
        return True
    return f"max |theoretical - numerical| = {error:.3g} > {TF_TOLERANCE[dtype]} * {scale:.3g}"


def tf_worker(config: str, samples: int, only: set[str] | None, log: Path) -> None:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    dtype, _direction = CONFIGS["tf"][config]
    done = started_keys(log)
    for name, f, specs in tf_listed():
        if only and name not in only:
            continue
        key = f"{name}#0"
        if key in done:
            continue
        write_event(log, {"event": "start", "key": key})
        case = {"event": "case", "key": key, "op": name, "sample": 0}
        arrays = tuple(tf.constant(x) for x in case_arrays(name, specs, dtype))
        try:
            f(*arrays)
        except Exception as exc:
            # No kernel or no such op for this dtype: not a case.
            case.update({"gg": "skipped", "peer": "skipped", "skip": exception_text(exc)})
            write_event(log, case)
            continue

        def run(f: Callable[..., Any] = f, arrays: tuple[Any, ...] = arrays) -> dict:
            result = run_gradguard(f, arrays, "rev")
            result.update(timed_peer(lambda: tf_compute_gradient(f, arrays, dtype)))
            if result["gg"] != "pass":
                out = tf.nest.flatten(f(*arrays))
                result["out_dtypes"] = sorted({o.dtype.name for o in out})
            return result

        case.update(guarded(run))
        write_event(log, case)


# --- worker bookkeeping -------------------------------------------------------


def write_event(log: Path, event: dict) -> None:
    with log.open("a") as stream:
        stream.write(json.dumps(event, default=str) + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def read_events(log: Path) -> list[dict]:
    if not log.exists():
        return []
    events = []
    for line in log.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return events


def started_keys(log: Path) -> set[str]:
    return {e["key"] for e in read_events(log) if e.get("event") in ("start", "case")}


def unfinished_key(log: Path) -> str | None:
    """The case a dead worker was running: started, with no result."""
    finished = {e["key"] for e in read_events(log) if e.get("event") == "case"}
    started = [e["key"] for e in read_events(log) if e.get("event") == "start"]
    pending = [k for k in started if k not in finished]
    return pending[-1] if pending else None


def worker_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        TF_NUM_INTRAOP_THREADS="1",
        TF_NUM_INTEROP_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    )
    return env


def supervise(suite: str, config: str, args: argparse.Namespace, log: Path) -> float:
    """Run one column's worker until every case is logged; restart it after a
    crash or a case over the time limit, recording that case. Wall seconds."""
    start = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", f"{suite}:{config}"]
    command += ["--samples", str(args.samples), "--log", str(log)]
    if args.only:
        command += ["--only", args.only]
    for _attempt in range(1000):
        process = subprocess.Popen(
            command,
            env=worker_environment(),
            start_new_session=True,
            preexec_fn=lambda: limit_memory(args.memory_limit),
        )
        rc = wait_watching(process, log, args.case_timeout)
        if rc == 0:
            break
        key = unfinished_key(log)
        if key is None:
            print(f"{suite}:{config}: worker exited with {rc} outside a case", file=sys.stderr)
            break
        outcome = "timeout" if rc == "timeout" else "crash"
        name, _, index = key.rpartition("#")
        write_event(
            log,
            {
                "event": "case",
                "key": key,
                "op": name,
                "sample": int(index),
                "gg": outcome,
                "peer": outcome,
                "harness_error": f"worker {outcome} (exit {rc})",
            },
        )
        print(f"{suite}:{config}: {key}: {outcome} (exit {rc}); restarting", file=sys.stderr)
    return time.perf_counter() - start


def limit_memory(gib: float) -> None:
    """Cap the worker's address space: a case that would take the machine's
    memory (slice#1 of OpInfo took 22 GiB) raises MemoryError instead."""
    import resource

    limit = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def wait_watching(process: subprocess.Popen, log: Path, case_timeout: float) -> int | str:
    """The worker's exit code, or ``"timeout"`` after killing it when one
    case has run longer than ``case_timeout`` seconds."""
    last_size, last_change = -1, time.monotonic()
    while True:
        try:
            return process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        size = log.stat().st_size if log.exists() else 0
        if size != last_size:
            last_size, last_change = size, time.monotonic()
        elif time.monotonic() - last_change > case_timeout and unfinished_key(log):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return "timeout"


# --- tables -------------------------------------------------------------------

VERDICT_ROWS = ("pass", "fail", "inconclusive", "error", "crash", "timeout")
PEER_COLUMNS = ("pass", "fail", "error", "crash", "timeout", "skipped", "n/a")

#: Low-precision columns are also judged against the peer's float64 verdict on
#: the same op and sample (known-right derivatives): in float32 gradcheck's
#: default tolerances fail most ops, right or wrong.
REFERENCE = {"opinfo:f32-rev": "opinfo:f64-rev", "jax:x32": "jax:x64", "tf:f32": "tf:f64"}


def cross_table(cases: list[dict], peer: str = "peer") -> list[str]:
    counts = Counter((c["gg"], c.get(peer, "n/a")) for c in cases)
    columns = [p for p in PEER_COLUMNS if any(k[1] == p for k in counts)] or ["pass"]
    rows = [v for v in VERDICT_ROWS if any(k[0] == v for k in counts)]
    lines = ["| gradguard \\ peer | " + " | ".join(columns) + " | total |"]
    lines.append("|---" * (len(columns) + 2) + "|")
    for row in rows:
        cells = [str(counts.get((row, col), 0)) for col in columns]
        total = sum(counts[k] for k in counts if k[0] == row)
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {total} |")
    totals = [str(sum(counts[k] for k in counts if k[1] == col)) for col in columns]
    lines.append("| total | " + " | ".join(totals) + f" | {sum(counts.values())} |")
    return lines


def time_line(cases: list[dict]) -> str:
    def summary(key: str) -> str:
        values = [c[key] for c in cases if isinstance(c.get(key), (int, float))]
        if not values:
            return "n/a"
        return f"median {statistics.median(values) * 1e3:.1f} ms, total {sum(values):.1f} s"

    return f"gradguard: {summary('gg_time')}; peer: {summary('peer_time')}"


def false_alarms(suite: str, cases: list[dict]) -> list[dict]:
    """Cases where gradguard does not pass while the peer does (here, or in
    float64 on the same case for a low-precision column)."""
    return [c for c in cases if c["gg"] != "pass" and accepted_by_peer(c)]


def accepted_by_peer(case: dict) -> bool:
    return case["peer"] == "pass" or case.get("peer_f64") == "pass"


def note_reference(results: dict, column: str, cases: list[dict]) -> str:
    """Copy the float64 peer verdict of each case into ``peer_f64``; the
    reference column's name, or ``""``."""
    reference = REFERENCE.get(column, "")
    if reference not in results["columns"]:
        return ""
    verdicts = {c["key"]: c["peer"] for c in results["columns"][reference]["cases"]}
    for case in cases:
        case["peer_f64"] = verdicts.get(case["key"], "n/a")
    return reference


def allowlisted(suite: str, case: dict) -> str:
    return ALLOWLIST.get((suite, case["op"]), "")


def case_message(case: dict) -> str:
    if case["gg"] in ("error", "crash", "timeout"):
        return case.get("gg_error") or case.get("harness_error", "")
    return case.get("gg_why", "")


def family(suite: str, config: str, case: dict) -> str:
    """The apparent family of a false alarm, from what was recorded."""
    message = case_message(case).lower()
    if case["gg"] in ("crash", "timeout"):
        return "exceptions: crash or timeout"
    if case["gg"] == "error":
        if "every output must be a floating-point" in message:
            return "non-differentiable outputs (raises)"
        if "empty" in message:
            return "exceptions: empty inputs or outputs"
        return "exceptions: other"
    if case.get("aliased_vjp"):
        return "aliasing"
    if case.get("nondiff_outputs"):
        return "non-differentiable outputs"
    dtype, direction = CONFIGS[suite][config]
    if dtype == "float64" and set(case.get("out_dtypes", [])) - {"float64", "complex128"}:
        return "lower-precision outputs"
    if "not deterministic" in message and "not smooth or not deterministic" not in message:
        return "layout / nondeterminism"
    if direction == "fwd":
        return "forward mode"
    if dtype != "float64":
        return "low precision"
    if case.get("gg_relative_error", 1.0) <= 1e-6:
        return "deep rounding"
    return "other (a kink or jump near x?)"


def format_number(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.2g}"
    return str(value) if value is not None else ""


def markdown(results: dict) -> tuple[str, str]:
    """The tables, and the false-alarm cases grouped by family."""
    tables = [f"# Corpus sweep\n\n{results['environment']}\n"]
    title = "# Corpus sweep: gradguard does not pass, the peer does"
    cases_md = [f"{title}\n\n{results['environment']}\n"]
    for column, data in results["columns"].items():
        suite, config = column.split(":")
        cases = [c for c in data["cases"] if c["gg"] != "skipped"]
        skipped = len(data["cases"]) - len(cases)
        ops = len({c["op"] for c in cases})
        tables.append(f"## {suite} {config} (peer: {PEERS[suite]})\n")
        tables.append(
            f"{len(cases)} cases from {ops} ops ({skipped} samples skipped); "
            f"{data['seconds']:.0f} s wall for the column.\n"
        )
        tables.extend(cross_table(cases))
        tables.append("")
        reference = note_reference(results, column, cases)
        if reference:
            tables.append(f"Against the peer's verdict in {reference} on the same case:\n")
            tables.extend(cross_table(cases, "peer_f64"))
            tables.append("")
        alarms = false_alarms(suite, cases)
        real = [c for c in alarms if not allowlisted(suite, c)]
        accepted = [c for c in cases if accepted_by_peer(c)]
        verdicts = Counter(c["gg"] for c in real)
        passed_by = "passes" + (f" (here or in {reference})" if reference else "")
        tables.append(
            f"Of {len(accepted)} cases the peer {passed_by}, gradguard: "
            f"{verdicts.get('fail', 0)} fail, {verdicts.get('inconclusive', 0)} inconclusive, "
            f"{sum(verdicts[k] for k in ('error', 'crash', 'timeout'))} error/crash/timeout"
            f" (allowlisted left out: {len(alarms) - len(real)}).\n"
        )
        tables.append(f"Times per case: {time_line(cases)}.\n")
        by_family: dict[str, list[dict]] = defaultdict(list)
        for case in alarms:
            by_family[family(suite, config, case)].append(case)
        tables.append(
            "False alarms by apparent family: "
            + (", ".join(f"{k} {len(v)}" for k, v in sorted(by_family.items())) or "none")
            + "\n"
        )
        cases_md.append(f"## {suite} {config}: {len(alarms)} cases\n")
        if suite == "opinfo":
            cases_md.append(
                "Last column: torch's own gradient test of the op is skipped (`skip`) or "
                "expected to fail (`xfail`) for this dtype in its op_db.\n"
            )
        for name in sorted(by_family):
            cases_md.append(f"### {name} ({len(by_family[name])})\n")
            own = " torch's own test |" if suite == "opinfo" else ""
            cases_md.append(
                "| op | sample | gradguard | rel. error | worst ratio | first line |" + own
            )
            cases_md.append("|---" * (7 if own else 6) + "|")
            for case in by_family[name]:
                note = " (allowlisted)" if allowlisted(suite, case) else ""
                message = case_message(case).replace("|", "\\|")
                cases_md.append(
                    f"| {case['op']}{note} | {case['sample']} | {case['gg']} | "
                    f"{format_number(case.get('gg_relative_error'))} | "
                    f"{format_number(case.get('gg_worst_ratio'))} | {message} |"
                    + (f" {case.get('torch_own_test', '')} |" if own else "")
                )
            cases_md.append("")
    return "\n".join(tables), "\n".join(cases_md)


def environment() -> str:
    from importlib import metadata

    versions = []
    for package in ("numpy", "torch", "jax", "tensorflow", "tensorflow-cpu"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    import gradguard

    commit = subprocess.run(
        ["git", "-C", str(Path(gradguard.__file__).parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; gradguard "
        f"{gradguard.__version__} from {Path(gradguard.__file__).parent} "
        f"(commit {commit or '?'}); {', '.join(versions)}; Python {platform.python_version()}; "
        "one intra-op thread."
    )


# --- command line ---------------------------------------------------------------


WORKERS = {"opinfo": opinfo_worker, "jax": jax_worker, "tf": tf_worker}


def run_worker(spec: str, args: argparse.Namespace) -> None:
    warnings.simplefilter("ignore")
    suite, config = spec.split(":")
    only = set(args.only.split(",")) if args.only else None
    try:
        WORKERS[suite](config, args.samples, only, Path(args.log))
    except Exception:
        traceback.print_exc()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default="all", help="opinfo, jax, tf or all")
    parser.add_argument("--config", default="", help="e.g. f64-rev,f32-rev,f64-fwd,x64,x32,f64,f32")
    parser.add_argument("--only", default="", help="comma-separated op names")
    parser.add_argument("--samples", type=int, default=2, help="samples per OpInfo op")
    parser.add_argument("--out", default=str(ROOT / "out" / "corpus"))
    parser.add_argument("--case-timeout", type=float, default=600.0)
    parser.add_argument(
        "--memory-limit", type=float, default=8.0, help="GiB of address space per worker"
    )
    parser.add_argument("--from-json", help="no sweep: redraw the tables from this corpus.json")
    parser.add_argument(
        "--store-gradcheck",
        help="write gradcheck's verdicts on sample 0 of opinfo f64-rev to this file "
        "(tests/data/opinfo_gradcheck_f64.json, read by tests/test_corpus.py)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, args)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        note_torch_skips(results)
    else:
        results = sweep(args, out)
    tables, alarms = markdown(results)
    (out / "corpus.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "corpus.md").write_text(tables + "\n")
    (out / "cases.md").write_text(alarms + "\n")
    print(tables)
    print(f"\nWritten to {out}/corpus.md, cases.md and corpus.json", file=sys.stderr)
    if args.store_gradcheck:
        store_gradcheck(results, Path(args.store_gradcheck), argv)
    return 0


def sweep(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every selected column, each in its own supervised worker."""
    suites = list(CONFIGS) if args.suite == "all" else args.suite.split(",")
    wanted = set(args.config.split(",")) if args.config else None
    results: dict[str, Any] = {"environment": environment(), "columns": {}}
    for suite in suites:
        if suite not in WORKERS:
            print(f"{suite}: no such suite here", file=sys.stderr)
            continue
        for config in CONFIGS[suite]:
            if wanted and config not in wanted:
                continue
            log = out / f"{suite}-{config}.jsonl"
            log.unlink(missing_ok=True)
            seconds = supervise(suite, config, args, log)
            cases = [e for e in read_events(log) if e.get("event") == "case"]
            results["columns"][f"{suite}:{config}"] = {"seconds": seconds, "cases": cases}
            print(f"{suite}:{config}: {len(cases)} cases in {seconds:.0f} s", file=sys.stderr)
    return results


def note_torch_skips(results: dict[str, Any]) -> None:
    """Add ``torch_own_test`` to OpInfo cases recorded before it existed."""
    for column, data in results["columns"].items():
        suite, config = column.split(":")
        if suite != "opinfo" or any("torch_own_test" in c for c in data["cases"]):
            continue
        dtype_name, direction = CONFIGS[suite][config]
        skipped = {
            opinfo_name(op): torch_own_test_skipped(op, dtype_name, direction)
            for op in opinfo_ops(dtype_name, direction)
        }
        for case in data["cases"]:
            if skipped.get(case["op"]):
                case["torch_own_test"] = skipped[case["op"]]


def store_gradcheck(results: dict[str, Any], path: Path, argv: list[str] | None) -> None:
    """gradcheck's verdict on the first sample of each op (float64, reverse), for
    the fast slice in the tests; with the torch version they belong to."""
    from importlib import metadata

    column = results["columns"].get("opinfo:f64-rev")
    if column is None:
        sys.exit("--store-gradcheck needs the opinfo f64-rev column")
    verdicts = {c["key"]: c["peer"] for c in column["cases"] if c["sample"] == 0}
    verdicts = {key: verdict for key, verdict in verdicts.items() if verdict != "skipped"}
    written_by = "python benchmarks/corpus.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    stored = {
        "torch": metadata.version("torch"),
        "config": "f64-rev",
        "peer": "torch.autograd.gradcheck(f, inputs) with default options",
        "command": "python benchmarks/corpus.py --suite opinfo --config f64-rev --samples 1 "
        f"--store-gradcheck {path}",
        "written_by": written_by,
        "written": time.strftime("%Y-%m-%d", time.gmtime()),
        "gradcheck": dict(sorted(verdicts.items())),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"gradcheck's verdicts on {len(verdicts)} cases written to {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
