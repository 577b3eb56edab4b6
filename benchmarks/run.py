"""gradguard beside the gradient checkers people use instead, in one run.

    python benchmarks/run.py                  # everything: n = 10 ... 10^4 (10^6: probes)
    python benchmarks/run.py --sizes 10,1000  # a subset
    python -m nox -s bench                    # the same, in its own environment

Every case (one tool, one function, one size) runs in a fresh subprocess, so
that its peak RSS is its own and one tool's imports or caches do not help
another. A case runs once (``first``: compile and warm-up included) and, if
that took less than ``--repeat-below`` seconds, ``--repeat`` more times; the
table shows the fastest run (``best``), the least disturbed by other load on
the machine. Peak RSS is the subprocess's ``ru_maxrss``: the framework's own
import included (shown separately as ``base``).

Functions (float64, x ~ N(0, 1) of shape (n,), the same x for every tool):

- ``elementwise``: ``x.sin() * x``, R^n -> R^n (diagonal Jacobian);
- ``scalar``: ``(x.sin() * x).sum()``, R^n -> R;
- ``softmax-rows``: x as (n/50, 50), softmax over each row (block-diagonal
  Jacobian, dense 50 x 50 blocks; n = 10^4 is a (200, 50) softmax);
- ``layernorm-rows``: x as (n/50, 50), each row centred and divided by
  sqrt(its variance + 1e-5), no affine parameters (block-diagonal), written
  out the same way in both frameworks;
- ``conv1d``: x as one signal of length n, cross-correlated with a fixed
  kernel of width 5 (seeded numbers), zero 'same' padding (banded Jacobian).

The last three (``STRUCTURED``) run in torch and JAX only, at
STRUCTURED_SIZES (n = 1000 and 10^4); with ``--sizes`` at those of the
given sizes a function applies to (n divisible by 50 for the row functions).

Tools: gradguard (``check`` in full and probe mode) on torch, JAX, TensorFlow
and NumPy (with ``grad=`` / ``vjp=``); ``torch.autograd.gradcheck`` in slow
and fast mode; ``jax.test_util.check_grads`` (order 1, reverse mode);
``tf.test.compute_gradient``; ``scipy.optimize.check_grad`` (scalar functions
only); and ``floor-torch`` / ``floor-jax``: the 2n batched evaluations of f
(torch.func.vmap; jax.jit of jax.vmap) plus the batched one-hot VJP rows
alone, what any full check must at least spend, each in the batch size that
is fastest at that n in that run (JAX: compiled before the timed calls, and
every chunk's result blocked on). ``sensitivity`` cases
plant one wrong Jacobian entry (+1.0 on the diagonal) at n=1000 and count how
often a probe-style check catches it.

The goals are also measured in ``paired`` cases: gradguard and the tool it is
held to (the floor; torch's fast mode) alternate in one subprocess for
PAIRED_ROUNDS rounds, and the ratio is taken round by round, so both sides
see the same state of a shared machine; the median of those ratios is the
figure the goals are judged on. Slow pairs (full checks at n = 10^4 take
seconds a call) warm up for at most PAIRED_WARMUP_SECONDS a side and run
fewer rounds, at least PAIRED_MIN_ROUNDS, so that their rounds take about
PAIRED_MAX_SECONDS at most. The goal lines (GOALS, and the peak RSS of every
full check at n = 10^4) come last. ``benchmarks/small.py`` measures the
small-function goals; ``python -m nox -s bench`` runs both.

Prints markdown tables and writes them with the raw numbers to
``benchmarks/results.md`` and ``benchmarks/results.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SIZES = (10, 100, 1000, 3000, 10_000, 1_000_000)
#: From this size only the probe-style tools run (PROBE_STYLE): a full
#: check there takes one evaluation or VJP row per input.
PROBE_ONLY_FROM = 100_000
PROBE_STYLE = (
    "gradguard-torch-probe",
    "gradcheck-fast",
    "gradguard-jax-probe",
    "gradguard-tf-probe",
    "gradguard-numpy-probe",
)
#: Functions with a structured (block-diagonal, banded) Jacobian: torch and JAX only.
STRUCTURED = ("softmax-rows", "layernorm-rows", "conv1d")
STRUCTURED_SIZES = (1000, 10_000)
FUNCTIONS = ("elementwise", "scalar", *STRUCTURED)
STRUCTURED_FRAMEWORKS = ("torch", "jax")
#: Entries per row of the row functions (softmax-rows, layernorm-rows).
ROW = 50
LAYERNORM_EPS = 1e-5
CONV_WIDTH = 5
#: tool -> the framework it runs on
TOOLS: dict[str, str] = {
    "gradguard-torch-full": "torch",
    # The same full check with every argument column by column: what it costs
    # where no columns could be coloured together (see COLOUR_COLUMNS).
    "gradguard-torch-full-columns": "torch",
    "gradguard-torch-probe": "torch",
    "floor-torch": "torch",
    "gradcheck-slow": "torch",
    "gradcheck-fast": "torch",
    "gradguard-jax-full": "jax",
    "gradguard-jax-probe": "jax",
    "floor-jax": "jax",
    "jax-check_grads": "jax",
    "gradguard-tf-full": "tensorflow",
    "gradguard-tf-probe": "tensorflow",
    "tf-compute_gradient": "tensorflow",
    "gradguard-numpy-full": "numpy",
    "gradguard-numpy-probe": "numpy",
    "scipy-check_grad": "scipy",
}
#: gradguard tool / peer tool ratios shown in the ratio table.
RATIOS: tuple[tuple[str, str], ...] = (
    ("gradguard-torch-full", "floor-torch"),
    ("gradguard-torch-full-columns", "floor-torch"),
    ("gradguard-torch-full", "gradcheck-slow"),
    ("gradguard-torch-probe", "gradcheck-fast"),
    ("gradguard-torch-probe", "gradcheck-slow"),
    ("gradguard-jax-full", "floor-jax"),
    ("gradguard-jax-full", "jax-check_grads"),
    ("gradguard-jax-probe", "jax-check_grads"),
    ("gradguard-tf-full", "tf-compute_gradient"),
    ("gradguard-tf-probe", "tf-compute_gradient"),
    ("gradguard-numpy-full", "scipy-check_grad"),
    ("gradguard-numpy-probe", "scipy-check_grad"),
)
#: (gradguard tool, the tool it is held to, function, n): measured alternately.
PAIRS: tuple[tuple[str, str, str, int], ...] = (
    ("gradguard-torch-full", "floor-torch", "elementwise", 3000),
    ("gradguard-torch-full-columns", "floor-torch", "elementwise", 3000),
    *(
        ("gradguard-torch-probe", "gradcheck-fast", function, n)
        for function in ("elementwise", "scalar")
        for n in (1000, 10_000, 1_000_000)
    ),
)
#: The full checks of structured Jacobians against their floors (issue 19).
STRUCTURED_PAIRS: tuple[tuple[str, str, str, int], ...] = (
    ("gradguard-torch-full", "floor-torch", "softmax-rows", 10_000),
    ("gradguard-torch-full", "floor-torch", "layernorm-rows", 10_000),
    ("gradguard-torch-full", "floor-torch", "conv1d", 10_000),
    ("gradguard-jax-full", "floor-jax", "softmax-rows", 10_000),
)
#: (gradguard tool, the tool it is held to, function) -> the most the median
#: paired ratio may be (issue 4: elementwise; issue 19: the structured ones).
#: Probe mode against torch's fast mode: PROBE_GOAL, at every function and size.
GOALS: dict[tuple[str, str, str], float] = {
    ("gradguard-torch-full", "floor-torch", "elementwise"): 1.5,
    ("gradguard-torch-full", "floor-torch", "softmax-rows"): 0.5,
    ("gradguard-torch-full", "floor-torch", "layernorm-rows"): 0.5,
    ("gradguard-torch-full", "floor-torch", "conv1d"): 0.5,
    ("gradguard-jax-full", "floor-jax", "softmax-rows"): 1.0,
}
PROBE_GOAL = 2.0
#: Peak RSS (whole process) every full check at n = 10^4 must stay under.
RSS_GOAL_GIB = 1.0
PAIRED_ROUNDS = 9
#: Fewest rounds of a slow pair, and the seconds its rounds should stay under.
PAIRED_MIN_ROUNDS = 3
PAIRED_MAX_SECONDS = 100.0
#: A side of a paired round runs for at least this long (quick calls repeat).
PAIRED_MIN_SECONDS = 0.2
#: Calls of each side before the rounds start, fewer once they took this long.
PAIRED_WARMUP_CALLS = 3
PAIRED_WARMUP_SECONDS = 10.0
SENSITIVITY_N = 1000
SENSITIVITY_POSITIONS = 20
SENSITIVITY_TOOLS = ("gradguard-torch-probe", "gradcheck-fast")


def runs_at(tool: str, n: int) -> bool:
    """Whether ``tool`` runs at ``n`` inputs (only PROBE_STYLE from PROBE_ONLY_FROM)."""
    return n < PROBE_ONLY_FROM or tool in PROBE_STYLE


# -- the cases (run inside the subprocess) ------------------------------------------


def _x(n: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).standard_normal(n)


def _kernel() -> Any:
    """conv1d's fixed kernel (CONV_WIDTH seeded numbers)."""
    import numpy as np

    return np.random.default_rng(2).standard_normal(CONV_WIDTH)


def _applies(function: str, n: int) -> bool:
    """Whether ``function`` is defined at size n."""
    if function in ("softmax-rows", "layernorm-rows"):
        return n % ROW == 0
    if function == "conv1d":
        return n >= CONV_WIDTH
    return True


def _rss() -> int:
    """Resident set size now, in bytes."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        return 0


def _peak_rss() -> int:
    """Peak resident set size of this process, in bytes.

    VmHWM, not ``ru_maxrss``: on Linux the latter survives ``exec`` and so
    reports the parent's peak when that was higher."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


# torch ----------------------------------------------------------------------------


def torch_elementwise(x):
    return x.sin() * x


def torch_scalar(x):
    return (x.sin() * x).sum()


def _torch_function(function: str) -> Callable[[Any], Any]:
    import torch

    if function == "elementwise":
        return torch_elementwise
    if function == "scalar":
        return torch_scalar
    if function == "softmax-rows":
        return lambda x: torch.softmax(x.reshape(-1, ROW), dim=-1)
    if function == "layernorm-rows":

        def layernorm_rows(x):
            rows = x.reshape(-1, ROW)
            centred = rows - rows.mean(dim=-1, keepdim=True)
            variance = (centred * centred).mean(dim=-1, keepdim=True)
            return centred / torch.sqrt(variance + LAYERNORM_EPS)

        return layernorm_rows
    if function == "conv1d":
        kernel = torch.from_numpy(_kernel()).reshape(1, 1, CONV_WIDTH)
        pad = CONV_WIDTH // 2
        return lambda x: torch.nn.functional.conv1d(
            x.reshape(1, 1, -1), kernel, padding=pad
        ).reshape(-1)
    raise ValueError(function)


def _torch_case(tool: str, function: str, n: int) -> Callable[[], str]:
    import torch

    import gradguard

    f = _torch_function(function)
    x = torch.from_numpy(_x(n))
    if tool in ("gradguard-torch-full", "gradguard-torch-full-columns"):
        from gradguard.engine.strategies import colouring

        coloured = tool == "gradguard-torch-full"

        def full() -> str:
            # Set on every call: paired rounds alternate tools in one process.
            colouring.COLOUR_COLUMNS = coloured
            return gradguard.check(f, x, mode="full").verdict

        return full
    if tool == "gradguard-torch-probe":
        return lambda: gradguard.check(f, x, mode="probe").verdict
    if tool == "gradcheck-slow":
        xg = x.clone().requires_grad_(True)
        return lambda: str(torch.autograd.gradcheck(f, (xg,), fast_mode=False))
    if tool == "gradcheck-fast":
        xg = x.clone().requires_grad_(True)
        return lambda: str(torch.autograd.gradcheck(f, (xg,), fast_mode=True))
    if tool == "floor-torch":
        return _torch_floor(f, x)
    raise ValueError(tool)


#: Batch sizes the floor tries, in bytes of perturbed points (or of one-hot
#: cotangents and VJP rows): which is fastest depends on n and on the state of
#: the machine's caches (2^21 at n=3000 on a busy day, 2^23 on a quiet one).
FLOOR_BATCH_BYTES = tuple(1 << b for b in range(18, 25))
#: Timed calls per candidate batch size when the floor picks its own; one
#: where the warm-up call took over FLOOR_SLOW_CALL_SECONDS (n = 10^4: the
#: tuning would otherwise take minutes).
FLOOR_TUNING_CALLS = 3
FLOOR_SLOW_CALL_SECONDS = 0.5


def _torch_floor(f: Callable[[Any], Any], x: Any) -> Callable[[], str]:
    """2n batched evaluations (x +- h e_i) and the batched VJP rows, and
    nothing else, each in the fastest of FLOOR_BATCH_BYTES (picked here,
    by the median of FLOOR_TUNING_CALLS timed calls): a floor held to a
    slower batch size than gradguard's would flatter gradguard."""
    import torch

    n = x.shape[0]
    m = f(x).numel()
    batched = torch.func.vmap(f)
    h = 1e-5

    def evaluations(columns: int) -> None:
        with torch.no_grad():
            for start in range(0, n, columns):
                c = min(n, start + columns) - start
                idx = torch.arange(c)
                points = x.expand(2 * c, n).clone()
                points[idx, start + idx] += h
                points[c + idx, start + idx] -= h
                batched(points)

    def vjp_rows(rows: int) -> None:
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = f(xg).reshape(-1)
        for start in range(0, m, rows):
            r = min(m, start + rows) - start
            onehot = torch.zeros((r, m), dtype=x.dtype)
            onehot[torch.arange(r), start + torch.arange(r)] = 1.0
            torch.autograd.grad(y, xg, onehot, retain_graph=True, is_grads_batched=True)

    return _floor(evaluations, vjp_rows, n, m)


def _floor(
    evaluations: Callable[[int], None], vjp_rows: Callable[[int], None], n: int, m: int
) -> Callable[[], str]:
    """The floor's call: both parts, each in its fastest batch size."""
    # 2 points of n float64 per column; a one-hot row and its VJP row per output.
    # (At most n columns and m rows: larger batches are the same one batch.)
    columns, evaluated = _fastest(
        evaluations, {min(n, max(1, b // (16 * n))) for b in FLOOR_BATCH_BYTES}
    )
    rows, pulled = _fastest(
        vjp_rows, {min(m, max(1, b // (8 * (n + m)))) for b in FLOOR_BATCH_BYTES}
    )
    # The parts' CPU seconds while tuning: a check that computes every VJP
    # row costs at least the second, whatever it saves on evaluations.
    parts = f"evaluations {_seconds(evaluated)} s, VJP rows {_seconds(pulled)} s when tuned"

    def run() -> str:
        evaluations(columns)
        vjp_rows(rows)
        return f"{columns} columns, {rows} rows per batch ({parts})"

    return run


def _fastest(part: Callable[[int], None], sizes: set[int]) -> tuple[int, float]:
    """The batch size of ``sizes`` whose median of FLOOR_TUNING_CALLS timed
    calls (after one warm-up call: JAX compiles there) is least, and that median."""

    def seconds(size: int) -> float:
        started = time.process_time()
        part(size)  # warm-up
        slow = time.process_time() - started > FLOOR_SLOW_CALL_SECONDS
        times = []
        for _ in range(1 if slow else FLOOR_TUNING_CALLS):
            started = time.process_time()
            part(size)
            times.append(time.process_time() - started)
        return statistics.median(times)

    timed = {size: seconds(size) for size in sorted(sizes)}
    best = min(timed, key=timed.__getitem__)
    return best, timed[best]


# jax ------------------------------------------------------------------------------


def _jax_function(function: str) -> Callable[[Any], Any]:
    import jax
    import jax.numpy as jnp

    if function == "elementwise":
        return lambda x: jnp.sin(x) * x
    if function == "scalar":
        return lambda x: jnp.sum(jnp.sin(x) * x)
    if function == "softmax-rows":
        return lambda x: jax.nn.softmax(x.reshape(-1, ROW), axis=-1)
    if function == "layernorm-rows":

        def layernorm_rows(x):
            rows = x.reshape(-1, ROW)
            centred = rows - rows.mean(axis=-1, keepdims=True)
            variance = (centred * centred).mean(axis=-1, keepdims=True)
            return centred / jnp.sqrt(variance + LAYERNORM_EPS)

        return layernorm_rows
    if function == "conv1d":
        # correlate, not convolve: the same (unflipped) kernel as torch's conv1d.
        kernel = jnp.asarray(_kernel())
        return lambda x: jnp.correlate(x, kernel, mode="same")
    raise ValueError(function)


def _jax_case(tool: str, function: str, n: int) -> Callable[[], str]:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import gradguard

    f = _jax_function(function)
    x = jnp.asarray(_x(n))
    if tool == "floor-jax":
        return _jax_floor(f, x)
    if tool == "gradguard-jax-full":
        return lambda: gradguard.check(f, x, mode="full").verdict
    if tool == "gradguard-jax-probe":
        return lambda: gradguard.check(f, x, mode="probe").verdict
    if tool == "jax-check_grads":

        def run() -> str:
            check_grads(f, (x,), order=1, modes=("rev",))
            return "ok"

        return run
    raise ValueError(tool)


def _jax_floor(f: Callable[[Any], Any], x: Any) -> Callable[[], str]:
    """JAX's floor, as ``_torch_floor``: 2n evaluations (x +- h e_i, built and
    evaluated in one jitted ``jax.vmap(f)`` per chunk) and the one-hot VJP rows
    (one jitted ``jax.vjp``, its pullback under a jitted ``jax.vmap`` per chunk), each
    chunk's result blocked on, in the fastest of FLOOR_BATCH_BYTES; every chunk
    shape is compiled while the batch sizes are tuned, before any timed call."""
    import functools

    import jax
    import jax.numpy as jnp

    n = x.shape[0]
    shape = jnp.shape(f(x))
    m = math.prod(shape)
    h = 1e-5

    @functools.partial(jax.jit, static_argnums=2)
    def evaluate_chunk(x: Any, start: Any, c: int) -> Any:
        idx = jnp.arange(c)
        points = jnp.broadcast_to(x, (2 * c, n))
        points = points.at[idx, start + idx].add(h).at[c + idx, start + idx].add(-h)
        return jax.vmap(f)(points)

    # Jitted, so that every call's pullback has the same tree structure and the
    # chunks below compile once (an eager jax.vjp's pullback recompiles them).
    forward = jax.jit(lambda x: jax.vjp(f, x))

    @functools.partial(jax.jit, static_argnums=2)
    def rows_chunk(pullback: Any, start: Any, r: int) -> Any:
        idx = jnp.arange(r)
        onehot = jnp.zeros((r, m), x.dtype).at[idx, start + idx].set(1.0)
        return jax.vmap(pullback)(onehot.reshape((r, *shape)))

    def evaluations(columns: int) -> None:
        for start in range(0, n, columns):
            jax.block_until_ready(evaluate_chunk(x, start, min(n, start + columns) - start))

    def vjp_rows(rows: int) -> None:
        _, pullback = forward(x)
        for start in range(0, m, rows):
            jax.block_until_ready(rows_chunk(pullback, start, min(m, start + rows) - start))

    return _floor(evaluations, vjp_rows, n, m)


# tensorflow -----------------------------------------------------------------------


def _tf_case(tool: str, function: str, n: int) -> Callable[[], str]:
    import numpy as np
    import tensorflow as tf

    import gradguard

    def elementwise(x):
        return tf.sin(x) * x

    def scalar(x):
        return tf.reduce_sum(tf.sin(x) * x)

    f = elementwise if function == "elementwise" else scalar
    x = tf.constant(_x(n))
    if tool == "gradguard-tf-full":
        return lambda: gradguard.check(f, x, mode="full").verdict
    if tool == "gradguard-tf-probe":
        return lambda: gradguard.check(f, x, mode="probe").verdict
    if tool == "tf-compute_gradient":

        def run() -> str:
            theoretical, numerical = tf.test.compute_gradient(f, [x])
            return f"max|diff|={float(np.max(np.abs(theoretical[0] - numerical[0]))):.1e}"

        return run
    raise ValueError(tool)


# numpy / scipy ----------------------------------------------------------------------


def numpy_elementwise(x):
    import numpy as np

    return np.sin(x) * x


def numpy_scalar(x):
    import numpy as np

    return float(np.sum(np.sin(x) * x))


def numpy_derivative(x):
    import numpy as np

    return np.cos(x) * x + np.sin(x)


def _numpy_case(tool: str, function: str, n: int) -> Callable[[], str]:
    import gradguard

    x = _x(n)
    if tool.startswith("gradguard-numpy"):
        mode = "full" if tool.endswith("full") else "probe"
        if function == "elementwise":
            return lambda: (
                gradguard.check(
                    numpy_elementwise,
                    x,
                    vjp=lambda c, x: c * numpy_derivative(x),
                    mode=mode,
                ).verdict
            )
        return lambda: gradguard.check(numpy_scalar, x, grad=numpy_derivative, mode=mode).verdict
    if tool == "scipy-check_grad":
        from scipy.optimize import check_grad

        if function != "scalar":
            raise NotApplicable("check_grad needs a scalar-valued function")
        return lambda: f"{check_grad(numpy_scalar, numpy_derivative, x):.1e}"
    raise ValueError(tool)


# sensitivity ----------------------------------------------------------------------


def _sensitivity(tool: str) -> dict[str, Any]:
    """One wrong diagonal entry (+1.0) at each of 20 positions; how many are caught."""
    import numpy as np
    import torch

    import gradguard

    n = SENSITIVITY_N
    x = torch.from_numpy(_x(n))
    positions = np.random.default_rng(1).choice(n, size=SENSITIVITY_POSITIONS, replace=False)
    caught, seconds = 0, []
    for position in positions:
        wrong = _wrong_at(int(position))
        start = time.perf_counter()
        if tool == "gradguard-torch-probe":
            found = gradguard.check(wrong, x, mode="probe").verdict == "fail"
        else:
            xg = x.clone().requires_grad_(True)
            found = not torch.autograd.gradcheck(
                wrong, (xg,), fast_mode=True, raise_exception=False
            )
        seconds.append(time.perf_counter() - start)
        caught += bool(found)
    return {"caught": caught, "positions": len(positions), "median_s": float(np.median(seconds))}


def _paired(spec: dict[str, Any]) -> dict[str, Any]:
    """gradguard and the tool it is held to, alternately, PAIRED_ROUNDS rounds
    (fewer for slow pairs, see ``_rounds``): CPU and wall-clock seconds per
    call of each, round by round."""
    tool, other, function, n = spec["tool"], spec["other"], spec["function"], spec["n"]
    sides = [_case(tool, function, n), _case(other, function, n)]
    calls, seconds = [], []
    for side in sides:
        # Warm up (the first call imports and compiles), then find from the
        # last warm-up call how many calls make a round long enough to time:
        # a single call after the other side's round would measure cold
        # caches, not the check. A slow side (over PAIRED_WARMUP_SECONDS)
        # warms up in one call, which is then over PAIRED_MIN_SECONDS anyway.
        warming = time.perf_counter()
        for _ in range(PAIRED_WARMUP_CALLS):
            started = time.perf_counter()
            side()
            now = time.perf_counter()
            if now - warming > PAIRED_WARMUP_SECONDS:
                break
        seconds.append(max(now - started, 1e-6))
        calls.append(max(1, int(PAIRED_MIN_SECONDS / seconds[-1])))
    rounds = _rounds(sum(c * s for c, s in zip(calls, seconds)))
    cpu: list[list[float]] = [[], []]
    wall: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, side in enumerate(sides):
            w, c = time.perf_counter(), time.process_time()
            for _ in range(calls[i]):
                side()
            wall[i].append((time.perf_counter() - w) / calls[i])
            cpu[i].append((time.process_time() - c) / calls[i])
    return {"status": "ok", "calls": calls, "round_cpu_s": cpu, "round_wall_s": wall}


def _rounds(round_seconds: float) -> int:
    """PAIRED_ROUNDS, or as many as fit in PAIRED_MAX_SECONDS but at least
    PAIRED_MIN_ROUNDS where one round takes seconds."""
    fit = int(PAIRED_MAX_SECONDS / round_seconds)
    return max(PAIRED_MIN_ROUNDS, min(PAIRED_ROUNDS, fit))


def _wrong_at(position: int) -> Callable[[Any], Any]:
    import torch

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
            grad = g * (x.cos() * x + x.sin())
            bump = torch.zeros_like(grad)
            bump[..., position] = g[..., position]  # d out[p] / d x[p] off by 1.0
            return grad + bump

    return SinTimesX.apply


class NotApplicable(Exception):
    pass


def _case(tool: str, function: str, n: int) -> Callable[[], str]:
    """One call of ``tool`` on ``function`` at size n, ready to time."""
    builders = {
        "torch": _torch_case,
        "jax": _jax_case,
        "tensorflow": _tf_case,
        "numpy": _numpy_case,
        "scipy": _numpy_case,
    }
    if not _tool_applies(tool, function):
        raise NotApplicable(
            f"{function} runs on {', '.join(STRUCTURED_FRAMEWORKS)} only, "
            f"not with {', '.join(STRUCTURED_SKIPS)}"
        )
    return builders[TOOLS[tool]](tool, function, n)


#: Tools left out of the structured functions: gradcheck's slow mode takes
#: 30-60 s and 6 GiB a case at 10^4, and is compared on elementwise already.
STRUCTURED_SKIPS = ("gradcheck-slow",)


def _tool_applies(tool: str, function: str) -> bool:
    if function not in STRUCTURED:
        return True
    return TOOLS[tool] in STRUCTURED_FRAMEWORKS and tool not in STRUCTURED_SKIPS


def _function_sizes(function: str, chosen: list[int] | None) -> list[int]:
    """The sizes ``function`` runs at: its own (SIZES; STRUCTURED_SIZES for
    the structured ones), or those of ``chosen`` (``--sizes``) it applies to."""
    if chosen is None:
        return list(STRUCTURED_SIZES if function in STRUCTURED else SIZES)
    return [n for n in chosen if _applies(function, n)]


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    tool, function, n = spec["tool"], spec["function"], spec["n"]
    if function == "sensitivity":
        return _sensitivity(tool)
    if "other" in spec:
        return _paired(spec)
    try:
        case = _case(tool, function, n)
    except NotApplicable as exc:
        return {"status": "n/a", "why": str(exc)}
    import gradguard

    base = _rss()
    walls, cpus = [], []
    result = ""
    for run in range(1 + spec["repeat"]):
        if run and walls[0] >= spec["repeat_below"]:
            break
        wall, cpu = time.perf_counter(), time.process_time()
        result = case()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    later = slice(1, None) if len(walls) > 1 else slice(None)
    return {
        "status": "ok",
        "result": result,
        "first_s": walls[0],
        "best_s": min(walls[later]),
        "best_cpu_s": min(cpus[later]),
        "runs": len(walls),
        "wall_s_each": walls,
        "cpu_s_each": cpus,
        "base_rss": base,
        "peak_rss": _peak_rss(),
        "gradguard": str(Path(gradguard.__file__).parent),
    }


# -- the driver ---------------------------------------------------------------------


def _child(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(spec)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
    if spec.get("threads"):
        threads = str(spec["threads"])
        env.update(
            OMP_NUM_THREADS=threads,
            MKL_NUM_THREADS=threads,
            OPENBLAS_NUM_THREADS=threads,
            TF_NUM_INTRAOP_THREADS=threads,
            TF_NUM_INTEROP_THREADS=threads,
            XLA_FLAGS=f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={threads}",
        )
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "why": f"over {timeout:.0f} s"}
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        why = " | ".join(tail) or f"exit status {done.returncode}"
        if done.returncode < 0 or done.returncode == 137:
            why = f"killed (signal {-done.returncode}, out of memory?)"
        return {"status": "error", "why": why}
    result = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


def _environment() -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for package in ("gradguard", "numpy", "scipy", "torch", "jax", "tensorflow"):
        versions[package] = None
        for distribution in (package, f"{package}-cpu"):
            try:
                versions[package] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                pass
    # A snapshot made with `git archive` is no repository: it says its commit
    # in GRADGUARD_COMMIT (see benchmarks/README.md).
    commit = os.environ.get("GRADGUARD_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
            ).stdout.strip()
        except OSError:
            commit = ""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "versions": versions,
        "commit": commit,
    }


WALL, CPU = "best_s", "best_cpu_s"


def _fmt_time(entry: dict[str, Any] | None, key: str = WALL) -> str:
    if not entry:
        return ""
    if entry["status"] != "ok":
        return entry["status"]
    return _seconds(entry[key])


def _seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 1:
        return f"{value:.2f}"
    if value >= 0.01:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = WALL) -> str:
    if not a or not b or a["status"] != "ok" or b["status"] != "ok":
        if a and b and a["status"] == "ok" and b["status"] == "timeout" and key == WALL:
            return "<" + f"{a[key] / float(b['why'].split()[1]):.2g}"
        return ""
    return f"{a[key] / b[key]:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    cases = results["cases"]
    tools = [t for t in TOOLS if any(c["tool"] == t for c in cases)]
    by_key = {(c["tool"], c["function"], c["n"]): c for c in cases}
    keys = sorted(
        {(c["function"], c["n"]) for c in cases},
        key=lambda k: (FUNCTIONS.index(k[0]) if k[0] in FUNCTIONS else len(FUNCTIONS), k),
    )
    out = []
    env = results["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    out.append(
        f"{env['cpus']} CPUs, {env['memory_gib']} GiB, Python {env['python']}; {versions}; "
        f"commit {env['commit']}; intra-op threads: {results.get('threads') or 'default'}; "
        f"load average (1/5/15 min) {results['load_before']} before, "
        f"{results['load_after']} after; {results['seconds']:.0f} s in all."
    )
    pairs = [(a, b) for a, b in RATIOS if a in tools and b in tools]
    for key, what in (
        (WALL, "wall-clock time (s), best run"),
        (CPU, "CPU time of the process (s, all threads), best run"),
    ):
        out.append(f"\n### {what[0].upper()}{what[1:]}\n")
        out.append(
            _table(
                ["function", "n", *tools],
                [
                    [f, str(n)] + [_fmt_time(by_key.get((t, f, n)), key) for t in tools]
                    for f, n in keys
                ],
            )
        )
        out.append(
            f"\n### Ratios of {what.split(' (')[0]} (gradguard ÷ other; below 1: gradguard "
            "is faster)\n"
        )
        out.append(
            _table(
                ["function", "n", *(f"{a.replace('gradguard-', 'gg-')} ÷ {b}" for a, b in pairs)],
                [
                    [f, str(n)]
                    + [_ratio(by_key.get((a, f, n)), by_key.get((b, f, n)), key) for a, b in pairs]
                    for f, n in keys
                ],
            )
        )
    out.append("\n### Peak RSS (MiB, whole process; framework import included)\n")
    rows = []
    for f, n in keys:
        row = [f, str(n)]
        for t in tools:
            entry = by_key.get((t, f, n))
            row.append(_mib(entry["peak_rss"]) if entry and entry["status"] == "ok" else "")
        rows.append(row)
    out.append(_table(["function", "n", *tools], rows))
    base = {
        t: min(c["base_rss"] for c in cases if c["tool"] == t and c["status"] == "ok")
        for t in tools
        if any(c["tool"] == t and c["status"] == "ok" for c in cases)
    }
    out.append(
        "\nRSS before the first check (imports and data): "
        + ", ".join(f"{t} {_mib(v)}" for t, v in base.items())
        + " MiB."
    )
    floors = [
        f"- {c['tool']} {c['function']} n={c['n']}: {c['result']}"
        for c in cases
        if c["tool"].startswith("floor-") and c["status"] == "ok"
    ]
    if floors:
        out.append("\n### Floors: the batch sizes each picked, and its parts\n")
        out.append("\n".join(floors))
    notes = [
        f"- {c['tool']} {c['function']} n={c['n']}: {c['status']} ({c.get('why', '')})"
        for c in cases
        if c["status"] not in ("ok", "n/a")
    ]
    wrong = [
        f"- {c['tool']} {c['function']} n={c['n']}: result {c['result']}"
        for c in cases
        if c["status"] == "ok" and c["result"] in ("fail", "inconclusive", "False")
    ]
    if notes or wrong:
        out.append("\n### Cases that did not finish or did not pass\n")
        out.append("\n".join(notes + wrong))
    if results.get("sensitivity"):
        out.append(
            f"\n### Sensitivity: one wrong Jacobian entry (+1.0 on the diagonal, "
            f"x.sin()*x, n={SENSITIVITY_N})\n"
        )
        srows = []
        for tool, entry in results["sensitivity"].items():
            if "caught" not in entry:
                srows.append([tool, entry.get("status", "?"), ""])
            else:
                caught = f"{entry['caught']} of {entry['positions']}"
                srows.append([tool, caught, _seconds(entry["median_s"])])
        out.append(_table(["tool", "caught", "median wall time per check (s)"], srows))
    paired = [p for p in results.get("paired", []) if p["status"] == "ok"]
    if paired:
        out.append(
            f"\n### Paired: alternating in one process, {PAIRED_ROUNDS} rounds (fewer, at "
            f"least {PAIRED_MIN_ROUNDS}, for slow pairs; ratio per round, gradguard ÷ other)\n"
        )
        prow = [
            [
                f"{p['tool']} ÷ {p['other']}",
                p["function"],
                str(p["n"]),
                str(len(p["round_cpu_s"][0])),
                _seconds(_median(p["round_cpu_s"][0])),
                _seconds(_median(p["round_cpu_s"][1])),
                _spread(_round_ratios(p, "round_cpu_s")),
                _spread(_round_ratios(p, "round_wall_s")),
            ]
            for p in paired
        ]
        header = ["pair", "function", "n", "rounds", "gradguard CPU s (median)"]
        header += ["other CPU s (median)", "CPU ratio: median (range)"]
        out.append(_table([*header, "wall ratio: median (range)"], prow))
    out.append("\n### Goals (issues 4 and 19)\n")
    out.append(_goals(by_key, results.get("sensitivity", {}), results.get("paired", [])))
    return "\n".join(out) + "\n"


def _spread(ratios: list[float]) -> str:
    """Median (range)."""
    return f"{_median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def _both(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, float]:
    return a[WALL] / b[WALL], a[CPU] / b[CPU]


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _round_ratios(paired: dict[str, Any], key: str) -> list[float]:
    return [a / b for a, b in zip(paired[key][0], paired[key][1])]


#: Why the speed goals are judged on paired rounds, not on the best single runs.
BEST_RUNS = (
    "the best of three calls after the first, which for a check of a few ms still "
    "includes warm-up such as the allocator growing its heap; the goals are judged "
    "on the paired rounds above"
)


def _goals(
    by_key: dict[Any, Any], sensitivity: dict[str, Any], paired: list[dict[str, Any]]
) -> str:
    """One line per goal: the paired ratios (median and range) against GOALS
    and PROBE_GOAL, the peak RSS of the full checks at n = 10^4, and the best
    single runs for information."""
    lines = [_paired_goal(p) for p in paired]
    lines += [_missing_goal(goal) for goal in _goals_not_run(paired)]
    lines.append(_rss_goal(by_key))
    full = by_key.get(("gradguard-torch-full", "elementwise", 3000))
    floor = by_key.get(("floor-torch", "elementwise", 3000))
    slow = by_key.get(("gradcheck-slow", "elementwise", 3000))
    if full and floor and full["status"] == floor["status"] == "ok":
        wall, cpu = _both(full, floor)
        vs = ""
        if slow and slow["status"] == "ok":
            vs = f"; {_both(full, slow)[0]:.2f}x torch slow mode ({_both(full, slow)[1]:.2f}x CPU)"
        lines.append(
            f"- best single runs, full check, x.sin()*x, float64, n=3000: "
            f"{_seconds(full[WALL])} s = {wall:.1f}x the floor ({_seconds(floor[WALL])} s); "
            f"CPU time {cpu:.1f}x the floor's{vs} (for information: {BEST_RUNS})"
        )
    probes = [
        (by_key.get(("gradguard-torch-probe", f, n)), by_key.get(("gradcheck-fast", f, n)))
        for f in FUNCTIONS
        for n in SIZES
    ]
    ratios = [_both(p, q) for p, q in probes if p and q and p["status"] == q["status"] == "ok"]
    if ratios:
        walls = [w for w, _ in ratios]
        cpus = [c for _, c in ratios]
        caught = sensitivity.get("gradguard-torch-probe", {})
        fast = sensitivity.get("gradcheck-fast", {})
        sens = ""
        if "caught" in caught and "caught" in fast:
            sens = (
                f"; one wrong entry caught {caught['caught']}/{caught['positions']} times "
                f"(torch fast mode {fast['caught']}/{fast['positions']})"
            )
        lines.append(
            f"- best single runs, probe mode vs torch fast mode: {min(walls):.1f}x to "
            f"{max(walls):.1f}x wall-clock, {min(cpus):.1f}x to {max(cpus):.1f}x CPU, over all "
            f"functions and sizes{sens} (for information: {BEST_RUNS})"
        )
    return "\n".join(line for line in lines if line)


def _bound(tool: str, other: str, function: str) -> float | None:
    """The most a pair's median ratio may be; None: measured for information."""
    if (tool, other) == ("gradguard-torch-probe", "gradcheck-fast"):
        return PROBE_GOAL
    return GOALS.get((tool, other, function))


def _paired_goal(p: dict[str, Any]) -> str:
    head = f"- paired, {p['tool']} ÷ {p['other']}, {p['function']} n={p['n']}"
    if p["status"] != "ok":
        return f"{head}: {p['status']} ({p.get('why', '')})"
    cpu, wall = _round_ratios(p, "round_cpu_s"), _round_ratios(p, "round_wall_s")
    head += (
        f", {len(cpu)} rounds: median {_median(cpu):.2f}x CPU (range {min(cpu):.2f}-"
        f"{max(cpu):.2f}), {_median(wall):.2f}x wall-clock (range {min(wall):.2f}-{max(wall):.2f})"
    )
    bound = _bound(p["tool"], p["other"], p["function"])
    if bound is None:
        return f"{head} (for information)"
    met = max(_median(cpu), _median(wall)) <= bound
    return f"{head}; goal <= {bound}x: {'holds' if met else 'MISSED'}"


def _goals_not_run(paired: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """The GOALS whose pair this run did not measure."""
    run = {(p["tool"], p["other"], p["function"]) for p in paired}
    return [goal for goal in GOALS if goal not in run]


def _missing_goal(goal: tuple[str, str, str]) -> str:
    tool, other, function = goal
    return f"- {tool} ÷ {other}, {function}: goal <= {GOALS[goal]}x, not measured in this run"


def _rss_goal(by_key: dict[Any, Any]) -> str:
    """Peak RSS of every gradguard full check at n = 10^4 against RSS_GOAL_GIB."""
    full = {
        key: entry
        for key, entry in by_key.items()
        if key[0].startswith("gradguard-") and "-full" in key[0] and key[2] == 10_000
    }
    done = {key: entry for key, entry in full.items() if entry["status"] == "ok"}
    if not done:
        return (
            f"- peak RSS of every full check at n=10^4: goal <= {RSS_GOAL_GIB:g} GiB, not measured"
        )
    gib = {key: entry["peak_rss"] / 2**30 for key, entry in done.items()}
    worst = max(gib, key=gib.__getitem__)
    over = [
        f"{t} {f} {gib[(t, f, n)]:.2f} GiB ({done[(t, f, n)]['base_rss'] / 2**30:.2f} "
        "before the check)"
        for t, f, n in sorted(gib)
        if gib[(t, f, n)] > RSS_GOAL_GIB
    ]
    unfinished = [
        f"{t} {f}: {e['status']}" for (t, f, n), e in full.items() if (t, f, n) not in done
    ]
    line = (
        f"- peak RSS of every full check at n=10^4 ({len(done)} cases; whole process, the "
        f"framework's import included): at most {gib[worst]:.2f} GiB ({worst[0]} {worst[1]}); "
        f"goal <= {RSS_GOAL_GIB:g} GiB: "
    )
    line += "holds" if not over else "MISSED by " + "; ".join(over)
    if unfinished:
        line += "; not finished: " + "; ".join(unfinished)
    return line


def _load() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        help=f"comma-separated (default: {','.join(map(str, SIZES))}; structured functions "
        f"{','.join(map(str, STRUCTURED_SIZES))}); a function runs at those it applies to",
    )
    parser.add_argument("--functions", default=",".join(FUNCTIONS))
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated tool names")
    parser.add_argument("--repeat", type=int, default=3, help="extra runs of a quick case")
    parser.add_argument(
        "--repeat-below", type=float, default=5.0, help="repeat cases whose first run is shorter"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads for every framework (0: each framework's own default)",
    )
    parser.add_argument("--no-sensitivity", action="store_true")
    parser.add_argument("--json", default=str(HERE / "results.json"))
    parser.add_argument("--markdown", default=str(HERE / "results.md"))
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return 0

    chosen = [int(s) for s in args.sizes.split(",") if s] if args.sizes else None
    functions = [f for f in args.functions.split(",") if f]
    tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in tools if t not in TOOLS] + [f for f in functions if f not in FUNCTIONS]
    if unknown:
        parser.error(f"unknown tools or functions: {', '.join(unknown)}")
    started = time.perf_counter()
    results: dict[str, Any] = {
        "environment": _environment(),
        "load_before": _load(),
        "cases": [],
        "sensitivity": {},
        "threads": args.threads,
    }
    for function in functions:
        for n in _function_sizes(function, chosen):
            for tool in [t for t in tools if _tool_applies(t, function)]:
                if not runs_at(tool, n):
                    continue
                spec = {
                    "tool": tool,
                    "function": function,
                    "n": n,
                    "repeat": args.repeat,
                    "repeat_below": args.repeat_below,
                    "threads": args.threads,
                }
                entry = _child(spec, args.timeout)
                entry.update(tool=tool, function=function, n=n)
                results["cases"].append(entry)
                shown = _fmt_time(entry) if entry["status"] == "ok" else entry.get("why", "")
                print(
                    f"{function:>14} n={n:<6} {tool:<28} {entry['status']:>7} {shown}",
                    file=sys.stderr,
                    flush=True,
                )
    results["paired"] = []
    for tool, other, function, n in PAIRS + STRUCTURED_PAIRS:
        selected = function in functions and n in _function_sizes(function, chosen)
        if tool in tools and other in tools and selected:
            spec = {
                "tool": tool,
                "other": other,
                "function": function,
                "n": n,
                "threads": args.threads,
            }
            entry = _child(spec, args.timeout)
            entry.update(tool=tool, other=other, function=function, n=n)
            results["paired"].append(entry)
            print(
                f"paired {tool} / {other} {function} n={n}: {entry['status']} "
                f"{entry.get('why', '')}",
                file=sys.stderr,
                flush=True,
            )
    if not args.no_sensitivity:
        for tool in SENSITIVITY_TOOLS:
            if tool in tools:
                spec = {
                    "tool": tool,
                    "function": "sensitivity",
                    "n": SENSITIVITY_N,
                    "threads": args.threads,
                }
                entry = _child(spec, args.timeout)
                results["sensitivity"][tool] = entry
                print(f"sensitivity {tool}: {entry}", file=sys.stderr, flush=True)
    results["load_after"] = _load()
    results["seconds"] = time.perf_counter() - started
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results["command"] = command.strip()
    text = render(results)
    print(text)
    Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    Path(args.markdown).write_text(
        f"Produced by `{results['command']}`.\n\n{text}", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
