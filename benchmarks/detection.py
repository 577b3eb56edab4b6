"""Detection benchmark: does a checker pass correct rules and fail wrong ones?

    python benchmarks/detection.py                 # everything (a few minutes on 2 cores)
    python benchmarks/detection.py --frameworks torch --columns float64

Real functions, each with a CORRECT custom derivative rule written once
against the Array API (``torch.autograd.Function`` and ``jax.custom_vjp``
wrap the same rule) and MUTATED copies of it:

==============  ==============================================================
mutation        what the rule returns instead of ``J^T g``
==============  ==============================================================
``sign``        ``-J^T g``
``factor2``     ``2 J^T g``
``factor1.01``  ``1.01 J^T g`` (1% off everywhere)
``transposed``  ``J g`` (functions with a square, non-symmetric Jacobian block), or
                a square matrix argument's gradient returned transposed
``zero``        zeros (a detached tensor, a gradient that does not flow)
``ignores``     ``J^T 1``: the same whatever incoming gradient ``g`` (softmax and
                layer norm, where ``J^T 1 = 0``: ``J^T c`` for a fixed random ``c``)
``entry1%``     one Jacobian entry ``J[a, b]`` (the largest of row ``a``) 1% off
``missing``     a term of the product / chain / quotient rule left out
==============  ==============================================================

Functions: activations (gelu (tanh form), softplus, tanh, sigmoid),
normalisations (layer norm, softmax), scaled dot-product attention (q, k,
v), reductions (logsumexp, mean and variance: two outputs), a scalar
loss (the sum of softplus over a vector: one output row), and matrix
products (``A @ B + A``; ``tanh(A @ B)`` with square A; the last two
functions not in the float32-only column, see ``Function.float32_only``).
Sizes 48 to 112 inputs; each function at ``--points`` seeded points
(default 3).

A diagnosis "names the mutation" when it says that mutation's words
(``NAMES``) and no other shape's (``SHAPES``, ``ALLOWED``).

Three dtype columns: ``float64`` inputs; ``float32`` inputs of a function that
also accepts float64; ``float32-only``: float32 inputs of a function that
raises on any other dtype (a float32-only kernel).

Tools, each with default options on the same function and point:
gradguard (``gradguard.check(f, *args)``, mode auto), on torch and on JAX;
``torch.autograd.gradcheck`` (default and ``fast_mode=True``);
``jax.test_util.check_grads(f, args, order=1, modes=["rev"])``. A peer that
raises counts as "fail". For gradguard an "inconclusive" verdict counts as a
false alarm on a correct rule and as a miss on a mutated one (also counted
separately), and an exception as both.

Prints markdown tables and writes them with every case to
``out/detection.md`` and ``out/detection.json`` (``--out``; ``out/`` is ignored by git).
Torch and JAX run in two worker processes, one thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
COLUMNS = ("float64", "float32", "float32-only")
FRAMEWORKS = ("torch", "jax")
MUTATIONS = (
    "sign",
    "factor2",
    "factor1.01",
    "transposed",
    "zero",
    "ignores",
    "entry1%",
    "missing",
)
#: Words of gradguard's diagnosis that name each mutation.
NAMES: dict[str, tuple[str, ...]] = {
    "sign": ("sign flipped",),
    "factor2": ("constant factor", "is 2 times"),
    "factor1.01": ("constant factor", "is 1.01 times"),
    "transposed": ("transposed",),
    "zero": ("does not flow",),
    "ignores": ("ignores the incoming gradient",),
    "entry1%": ("only some entries are wrong",),
    # A missing term has no shape of its own: the fallback sentence names it,
    # and where it touches one argument, naming that argument counts.
    "missing": ("missing", "only "),
}
#: Mutations named when ANY (not all) of their words appear.
ANY_WORDS = {"missing"}
#: The words of each shape gradguard's diagnosis can name. A diagnosis names
#: its mutation correctly when it says that mutation's words and no other
#: shape's (a factor 2 must not also read "not linear in the incoming
#: gradient", a transposed gradient not "only some entries are wrong").
SHAPES = (
    "sign flipped",
    "constant factor",
    "transposed",
    "does not flow",
    "ignores the incoming gradient",
    "not linear in the incoming gradient",
    "only some entries are wrong",
)
#: The shapes each mutation may be named by (a missing term on part of the
#: input leaves some entries right).
ALLOWED: dict[str, tuple[str, ...]] = {
    "sign": ("sign flipped",),
    "factor2": ("constant factor",),
    "factor1.01": ("constant factor",),
    "transposed": ("transposed",),
    "zero": ("does not flow",),
    "ignores": ("ignores the incoming gradient",),
    "entry1%": ("only some entries are wrong",),
    "missing": ("only some entries are wrong",),
}
#: Threads per worker process (torch and jax run side by side).
THREADS = 1
#: Seeded points per function: every rule, correct or mutated, at each.
POINTS = 3


# -- functions and their rules, written once against the Array API -------------
#
# ``forward(xp, *xs)`` returns a tuple of outputs; ``rule(xp, xs, gs)`` returns
# one gradient per input, the correct VJP; ``transposed`` / ``missing`` are
# wrong rules written the way such bugs are written.


def _sum(xp: Any, x: Any, axis: int = -1) -> Any:
    return xp.sum(x, axis=axis, keepdims=True)


def _softmax(xp: Any, x: Any) -> Any:
    e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
    return e / _sum(xp, e)


GELU_C = float(np.sqrt(2.0 / np.pi))


def gelu(xp, x):
    return (0.5 * x * (1.0 + xp.tanh(GELU_C * (x + 0.044715 * x**3))),)


def gelu_rule(xp, xs, gs, missing=False):
    (x,), (g,) = xs, gs
    t = xp.tanh(GELU_C * (x + 0.044715 * x**3))
    d = 0.5 * (1.0 + t)
    if not missing:  # the product rule's second term
        d = d + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3 * 0.044715 * x**2)
    return (g * d,)


def softplus(xp, x):
    return (xp.logaddexp(xp.zeros_like(x), x),)


def softplus_rule(xp, xs, gs, missing=False):
    (x,), (g,) = xs, gs
    if missing:  # chain rule of log(1 + e^x) without the outer 1 / (1 + e^x)
        return (g * xp.exp(x),)
    return (g / (1.0 + xp.exp(-x)),)


def tanh(xp, x):
    return (xp.tanh(x),)


def tanh_rule(xp, xs, gs, missing=False):
    (x,), (g,) = xs, gs
    y = xp.tanh(x)
    return (g if missing else g * (1.0 - y * y),)


def softplus_sum(xp, x):
    return (xp.sum(softplus(xp, x)[0]),)


def sigmoid(xp, x):
    return (1.0 / (1.0 + xp.exp(-x)),)


def sigmoid_rule(xp, xs, gs, missing=False):
    (x,), (g,) = xs, gs
    s = 1.0 / (1.0 + xp.exp(-x))
    return (g * s if missing else g * s * (1.0 - s),)


LN_EPS = 1e-5


def layer_norm(xp, x):
    mu = xp.mean(x, axis=-1, keepdims=True)
    var = xp.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return ((x - mu) / xp.sqrt(var + LN_EPS),)


def layer_norm_rule(xp, xs, gs, missing=False):
    (x,), (g,) = xs, gs
    mu = xp.mean(x, axis=-1, keepdims=True)
    sigma = xp.sqrt(xp.mean((x - mu) ** 2, axis=-1, keepdims=True) + LN_EPS)
    y = (x - mu) / sigma
    gx = g - xp.mean(g, axis=-1, keepdims=True)
    if not missing:  # the term through the variance
        gx = gx - y * xp.mean(g * y, axis=-1, keepdims=True)
    return (gx / sigma,)


def softmax(xp, x):
    return (_softmax(xp, x),)


def softmax_rule(xp, xs, gs, missing=False):
    (x,), (g,) = xs, gs
    s = _softmax(xp, x)
    if missing:  # the normalisation's term
        return (s * g,)
    return (s * (g - _sum(xp, g * s)),)


def attention(xp, q, k, v):
    d = q.shape[-1]
    a = _softmax(xp, (q @ xp.matrix_transpose(k)) / float(np.sqrt(d)))
    return (a @ v,)


def attention_rule(xp, xs, gs, missing=False, transposed=False):
    (q, k, v), (g,) = xs, gs
    scale = 1.0 / float(np.sqrt(q.shape[-1]))
    a = _softmax(xp, (q @ xp.matrix_transpose(k)) * scale)
    # transposed: A g instead of A^T g for v (square A: the shapes still fit).
    gv = (a if transposed else xp.matrix_transpose(a)) @ g
    ga = g @ xp.matrix_transpose(v)
    gs_ = a * ga if missing else a * (ga - _sum(xp, ga * a))
    return (gs_ @ k * scale, xp.matrix_transpose(gs_) @ q * scale, gv)


def logsumexp(xp, x):
    m = xp.max(x, axis=-1, keepdims=True)
    return (xp.log(xp.sum(xp.exp(x - m), axis=-1)) + m[..., 0],)


def logsumexp_rule(xp, xs, gs, missing=False):
    (x,), (g,) = xs, gs
    lse = logsumexp(xp, x)[0][..., None]
    # missing: exp(x) for exp(x - lse), the normaliser's term left out.
    p = xp.exp(x) if missing else xp.exp(x - lse)
    return (g[..., None] * p,)


def mean_var(xp, x):
    n = x.shape[-1]
    mu = xp.mean(x, axis=-1)
    return mu, xp.sum((x - mu[..., None]) ** 2, axis=-1) / (n - 1)


def mean_var_rule(xp, xs, gs, missing=False):
    (x,), (g_mean, g_var) = xs, gs
    n = x.shape[-1]
    mu = xp.mean(x, axis=-1, keepdims=True)
    centred = x if missing else x - mu  # missing: the mean's term in d var
    return (g_mean[..., None] / n + g_var[..., None] * 2.0 * centred / (n - 1),)


def tanh_matmul(xp, a, b):
    return (xp.tanh(a @ b),)


def tanh_matmul_rule(xp, xs, gs, missing=False, transposed=False):
    (a, b), (g,) = xs, gs
    y = xp.tanh(a @ b)
    d = g if missing else g * (1.0 - y * y)  # missing: tanh's own derivative
    ga = d @ xp.matrix_transpose(b)
    # transposed: a's gradient returned transposed (a square: the shape fits).
    return (xp.matrix_transpose(ga) if transposed else ga, xp.matrix_transpose(a) @ d)


def residual_matmul(xp, a, b):
    return (a @ b + a,)


def residual_matmul_rule(xp, xs, gs, missing=False, transposed=False):
    (a, b), (g,) = xs, gs
    # transposed: g B for g B^T (a missing transpose; B is square).
    ga = g @ (b if transposed else xp.matrix_transpose(b))
    if not missing:  # the residual's term
        ga = ga + g
    return (ga, xp.matrix_transpose(a) @ g)


@dataclass(frozen=True)
class Function:
    name: str
    kind: str
    forward: Callable[..., tuple[Any, ...]]
    rule: Callable[..., tuple[Any, ...]]
    shapes: tuple[tuple[int, ...], ...]
    #: Shift of the point (a nonzero mean for mean/var, where the missing
    #: term is the mean's).
    shift: float = 0.0
    transposable: bool = False
    #: ``J^T 1 = 0`` (the outputs sum to a constant along the last axis).
    ones_null: bool = False
    #: Also in the float32-only column. Off for the two functions added for
    #: the diagnosis (a scalar loss, a transposed square argument): there
    #: ``entry1%`` sits at what float32 differences resolve (2 of 6 cases
    #: undecided or passed, torch and JAX, at 03e79e6), a detection limit
    #: of its own.
    float32_only: bool = True


FUNCTIONS = (
    Function("gelu", "activation", gelu, gelu_rule, ((64,),)),
    Function("softplus", "activation", softplus, softplus_rule, ((64,),)),
    Function("tanh", "activation", tanh, tanh_rule, ((64,),)),
    Function("sigmoid", "activation", sigmoid, sigmoid_rule, ((64,),)),
    Function(
        "layer_norm", "normalisation", layer_norm, layer_norm_rule, ((4, 16),), ones_null=True
    ),
    Function("softmax", "normalisation", softmax, softmax_rule, ((4, 16),), ones_null=True),
    Function(
        "attention", "attention", attention, attention_rule, ((8, 4), (8, 4), (8, 4)), 0.0, True
    ),
    Function("logsumexp", "reduction", logsumexp, logsumexp_rule, ((4, 16),)),
    # A scalar-valued f (a loss): one output row, one one-hot cotangent.
    Function(
        "softplus_sum", "scalar loss", softplus_sum, softplus_rule, ((64,),), float32_only=False
    ),
    Function("mean_var", "reduction", mean_var, mean_var_rule, ((48,),), 0.7),
    Function(
        "residual_matmul",
        "matrix product",
        residual_matmul,
        residual_matmul_rule,
        ((6, 8), (8, 8)),
        0.0,
        True,
    ),
    Function(
        "tanh_matmul",
        "matrix product",
        tanh_matmul,
        tanh_matmul_rule,
        ((6, 6), (6, 6)),
        0.0,
        True,
        float32_only=False,
    ),
)


def point(fn: Function, index: int = 0) -> list[np.ndarray]:
    """Point ``index`` (float64) that every tool checks at: seeded, off every kink."""
    rng = np.random.default_rng(sum(map(ord, fn.name)) + 1000 * index)
    return [rng.standard_normal(shape) + fn.shift for shape in fn.shapes]


def mutations_of(fn: Function) -> list[str]:
    return [m for m in MUTATIONS if m != "transposed" or fn.transposable]


def planted_entry(fn: Function, x: list[np.ndarray]) -> tuple[int, int, float]:
    """``(a, b, J[a, b])`` for ``entry1%``: output entry a (flat, first output)
    in the middle, input entry b (flat, first input) the largest of row a."""
    import array_api_compat.numpy as xp

    outs = fn.forward(xp, *x)
    a = outs[0].size // 2
    gs = [np.zeros_like(o) for o in outs]
    gs[0].reshape(-1)[a] = 1.0
    row = np.asarray(fn.rule(xp, x, gs)[0]).reshape(-1)
    b = int(np.argmax(np.abs(row)))
    return a, b, float(row[b])


def gs_like(fn: Function) -> tuple[Any, ...]:
    """Zero cotangents shaped like ``fn``'s outputs."""
    import array_api_compat.numpy as xp

    return tuple(np.zeros_like(o) for o in fn.forward(xp, *[np.ones(s) for s in fn.shapes]))


def mutated_rule(fn: Function, mutation: str, entry: tuple[int, int, float]) -> Callable:
    """The rule ``(xp, xs, gs) -> grads`` with ``mutation`` planted."""
    rule = fn.rule
    if mutation == "correct":
        return rule
    if mutation == "sign":
        return lambda xp, xs, gs: tuple(-r for r in rule(xp, xs, gs))
    if mutation in ("factor2", "factor1.01"):
        c = 2.0 if mutation == "factor2" else 1.01
        return lambda xp, xs, gs: tuple(c * r for r in rule(xp, xs, gs))
    if mutation == "zero":
        return lambda xp, xs, gs: tuple(xp.zeros_like(x) for x in xs)
    if mutation == "ignores":
        if fn.ones_null:
            fixed = [np.random.default_rng(1).standard_normal(g.shape) for g in gs_like(fn)]
            return lambda xp, xs, gs: rule(
                xp, xs, tuple(xp.asarray(c, dtype=g.dtype) for c, g in zip(fixed, gs))
            )
        return lambda xp, xs, gs: rule(xp, xs, tuple(xp.ones_like(g) for g in gs))
    if mutation == "transposed":
        return lambda xp, xs, gs: rule(xp, xs, gs, transposed=True)
    if mutation == "missing":
        return lambda xp, xs, gs: rule(xp, xs, gs, missing=True)
    if mutation == "entry1%":
        a, b, jab = entry

        def one_entry(xp: Any, xs: Any, gs: Any) -> tuple[Any, ...]:
            grads = list(rule(xp, xs, gs))
            x0, g0 = xs[0], gs[0]
            e_b = np.zeros(x0.shape)
            e_b.reshape(-1)[b] = 0.01 * jab
            e_a = np.zeros(g0.shape)
            e_a.reshape(-1)[a] = 1.0
            g_a = xp.sum(g0 * xp.asarray(e_a, dtype=g0.dtype))
            grads[0] = grads[0] + g_a * xp.asarray(e_b, dtype=x0.dtype)
            return tuple(grads)

        return one_entry
    raise ValueError(mutation)


# -- the two frameworks ------------------------------------------------------


def _refuse(xs: Any, only32: bool, is32: Callable[[Any], bool]) -> None:
    if only32 and not all(is32(x) for x in xs):
        raise TypeError("this kernel exists for float32 only")


def torch_function(fn: Function, rule: Callable, only32: bool) -> Callable:
    import array_api_compat.torch as xp
    import torch

    single = len(gs_like(fn)) == 1

    class Rule(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(*xs):
            _refuse(xs, only32, lambda x: x.dtype == torch.float32)
            return fn.forward(xp, *xs)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, *gs):
            return tuple(rule(xp, ctx.saved_tensors, gs))

    def f(*xs):
        out = Rule.apply(*xs)
        return out[0] if single else out

    return f


def jax_function(fn: Function, rule: Callable, only32: bool) -> Callable:
    import jax
    import jax.numpy as jnp

    single = len(gs_like(fn)) == 1

    @jax.custom_vjp
    def f(*xs):
        _refuse(xs, only32, lambda x: x.dtype == jnp.float32)
        out = fn.forward(jnp, *xs)
        return out[0] if single else out

    def fwd(*xs):
        return f(*xs), xs

    def bwd(xs, g):
        return tuple(rule(jnp, xs, (g,) if single else tuple(g)))

    f.defvjp(fwd, bwd)
    return f


# -- running the tools -------------------------------------------------------


def run_gradguard(f: Callable, args: list[Any]) -> dict[str, Any]:
    import gradguard

    started = time.perf_counter()
    try:
        r = gradguard.check(f, *args)
    except Exception as exc:
        return {
            "verdict": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "seconds": time.perf_counter() - started,
        }
    return {
        "verdict": r.verdict,
        "relative_error": r.relative_error,
        "wrong": r.wrong,
        "uncertain": r.uncertain,
        "checked": r.checked,
        "precision": r.precision,
        "diagnosis": list(r.diagnosis),
        "reasons": list(r.reasons),
        "notes": list(r.notes),
        "worst": [
            [m.where(), m.analytical, m.numerical, m.error, m.tolerance, m.status]
            for m in r.worst[:3]
        ],
        "seconds": time.perf_counter() - started,
    }


def run_peer(call: Callable[[], Any]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            call()
    except Exception as exc:
        verdict, error = "fail", f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        verdict, error = "pass", ""
    return {"verdict": verdict, "error": error, "seconds": time.perf_counter() - started}


def cases_for(framework: str, column: str, points: int = 1) -> list[dict[str, Any]]:
    """Every function and rule of one framework and dtype column, all tools."""
    only32 = column == "float32-only"
    results = []
    if framework == "torch":
        import torch

        torch.set_num_threads(THREADS)
        dtype = torch.float64 if column == "float64" else torch.float32

        def make(fn, rule):
            return torch_function(fn, rule, only32)

        def arrays(x):
            return [torch.tensor(a, dtype=dtype) for a in x]

        def peers(f, args):
            def inputs():
                return tuple(a.detach().clone().requires_grad_(True) for a in args)

            return {
                "gradcheck": run_peer(lambda: torch.autograd.gradcheck(f, inputs())),
                "gradcheck-fast": run_peer(
                    lambda: torch.autograd.gradcheck(f, inputs(), fast_mode=True)
                ),
            }
    else:
        import jax
        import jax.numpy as jnp
        from jax.test_util import check_grads

        dtype = jnp.float64 if column == "float64" else jnp.float32

        def make(fn, rule):
            return jax_function(fn, rule, only32)

        def arrays(x):
            return [jnp.asarray(a, dtype=dtype) for a in x]

        def peers(f, args):
            return {
                "check_grads": run_peer(lambda: check_grads(f, tuple(args), order=1, modes=["rev"]))
            }

        del jax
    functions = [fn for fn in FUNCTIONS if fn.float32_only or not only32]
    for fn, index in ((fn, i) for fn in functions for i in range(points)):
        x = point(fn, index)
        entry = planted_entry(fn, x)
        for mutation in ("correct", *mutations_of(fn)):
            f = make(fn, mutated_rule(fn, mutation, entry))
            args = arrays(x)
            tools = {"gradguard": run_gradguard(f, args), **peers(f, args)}
            for tool, outcome in tools.items():
                results.append(
                    {
                        "framework": framework,
                        "column": column,
                        "function": fn.name,
                        "point": index,
                        "kind": fn.kind,
                        "mutation": mutation,
                        "tool": tool,
                        **outcome,
                    }
                )
    return results


def worker(framework: str, columns: list[str], points: int) -> None:
    """Entry point of one worker process: JSON lines on stdout."""
    for column in columns:
        started = time.perf_counter()
        try:
            rows = cases_for(framework, column, points)
        except Exception:
            traceback.print_exc()
            raise
        print(json.dumps({"rows": rows}), flush=True)
        print(
            f"{framework} {column}: {len(rows)} cases in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
            flush=True,
        )


def run_workers(frameworks: list[str], columns: list[str], points: int) -> list[dict[str, Any]]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
        XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        JAX_ENABLE_X64="1",
        JAX_PLATFORMS="cpu",
    )
    procs = {
        fw: subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--worker",
                fw,
                "--columns",
                ",".join(columns),
                "--points",
                str(points),
            ],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for fw in frameworks
    }
    rows: list[dict[str, Any]] = []
    for fw, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"the {fw} worker failed (exit {proc.returncode})")
        for line in out.splitlines():
            if line.startswith("{"):
                rows += json.loads(line)["rows"]
    return rows


# -- tables ------------------------------------------------------------------

TOOL_ROWS = (
    ("gradguard", "torch"),
    ("gradguard", "jax"),
    ("gradcheck", "torch"),
    ("gradcheck-fast", "torch"),
    ("check_grads", "jax"),
)


def named(row: dict[str, Any]) -> bool:
    """The diagnosis names the mutation, and no look-alike shape."""
    text = " ".join(row.get("diagnosis", []))
    words = NAMES[row["mutation"]]
    said = (any if row["mutation"] in ANY_WORDS else all)(w in text for w in words)
    others = [s for s in SHAPES if s not in ALLOWED[row["mutation"]] and s in text]
    return said and not others


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for tool, fw in TOOL_ROWS:
        for column in COLUMNS:
            mine = [
                r
                for r in rows
                if r["tool"] == tool and r["framework"] == fw and r["column"] == column
            ]
            if not mine:
                continue
            correct = [r for r in mine if r["mutation"] == "correct"]
            mutated = [r for r in mine if r["mutation"] != "correct"]
            failed = [r for r in mutated if r["verdict"] == "fail"]
            summary[f"{tool} ({fw}) {column}"] = {
                "tool": tool,
                "framework": fw,
                "column": column,
                "correct": len(correct),
                "false_alarms": sum(r["verdict"] != "pass" for r in correct),
                "false_alarms_inconclusive": sum(r["verdict"] == "inconclusive" for r in correct),
                "mutated": len(mutated),
                "misses": sum(r["verdict"] != "fail" for r in mutated),
                "misses_inconclusive": sum(r["verdict"] == "inconclusive" for r in mutated),
                "errors": sum(r["verdict"] == "error" for r in mine),
                "failed": len(failed),
                "named": sum(named(r) for r in failed) if tool == "gradguard" else None,
                "seconds": sum(r["seconds"] for r in mine),
            }
    return summary


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], command: str) -> str:
    out = [
        "| tool | dtype | false alarms | (inconclusive) | misses | (inconclusive) "
        "| diagnosis named the mutation | time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary.values():
        named_text = f"{s['named']} / {s['failed']}" if s["named"] is not None else "n/a"
        out.append(
            f"| {s['tool']} ({s['framework']}) | {s['column']} "
            f"| {s['false_alarms']} / {s['correct']} | {s['false_alarms_inconclusive']} "
            f"| {s['misses']} / {s['mutated']} | {s['misses_inconclusive']} "
            f"| {named_text} | {s['seconds']:.1f} |"
        )
    # gradguard per mutation kind, all columns and frameworks together.
    out += [
        "",
        "gradguard per mutation (torch and JAX, all three dtype columns):",
        "",
        "| mutation | cases | fail | inconclusive | pass | diagnosis named it |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    ours = [r for r in rows if r["tool"] == "gradguard"]
    for mutation in ("correct", *MUTATIONS):
        mine = [r for r in ours if r["mutation"] == mutation]
        if not mine:
            continue
        verdicts = Counter(r["verdict"] for r in mine)
        fails = [r for r in mine if r["verdict"] == "fail"]
        named_text = "n/a" if mutation == "correct" else f"{sum(map(named, fails))} / {len(fails)}"
        out.append(
            f"| {mutation} | {len(mine)} | {verdicts['fail']} | {verdicts['inconclusive']} "
            f"| {verdicts['pass']} | {named_text} |"
        )
    shortfalls = [
        r
        for r in ours
        if r["verdict"] != ("pass" if r["mutation"] == "correct" else "fail")
        or (r["mutation"] != "correct" and not named(r))
    ]
    if shortfalls:
        # One line per function and mutation; where it happened, and what
        # gradguard said the first time.
        grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in shortfalls:
            grouped[(r["function"], r["mutation"], r["verdict"])].append(r)
        out += [
            "",
            "gradguard's shortfalls (function / mutation: verdict (where); what it said):",
            "",
        ]
        for (function, mutation, verdict), group in grouped.items():
            where = ", ".join(f"{r['framework']} {r['column']}" for r in group)
            first = group[0]
            said = "; ".join(
                first.get("diagnosis") or first.get("reasons") or [first.get("error", "")]
            )
            if len(said) > 160:
                said = said[:157] + "..."
            out.append(f"- {function} / {mutation}: **{verdict}** ({where}); {said}")
    peers_by_function: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if r["tool"] != "gradguard" and r["mutation"] != "correct" and r["verdict"] == "pass":
            peers_by_function[r["tool"]][r["mutation"]] += 1
    if peers_by_function:
        out += ["", "Peers' misses by mutation:", ""]
        for tool, counts in peers_by_function.items():
            out.append(f"- {tool}: " + ", ".join(f"{m} {c}" for m, c in sorted(counts.items())))
    out += ["", f"Command: `{command}`"]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--columns", default=",".join(COLUMNS))
    parser.add_argument(
        "--out", default=str(ROOT / "out" / "detection"), help="path stem for .md and .json"
    )
    parser.add_argument(
        "--points", type=int, default=POINTS, help="seeded points per function (default 3)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    options = parser.parse_args()
    columns = [c for c in options.columns.split(",") if c]
    if options.worker:
        worker(options.worker, columns, options.points)
        return
    started = time.perf_counter()
    rows = run_workers([f for f in options.frameworks.split(",") if f], columns, options.points)
    wall = time.perf_counter() - started
    summary = summarise(rows)
    command = "python benchmarks/detection.py " + " ".join(sys.argv[1:])
    text = markdown(rows, summary, command.strip())
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    text += f"\n\nWall time {wall:.0f} s on {os.cpu_count()} cores ({machine})."
    print(text)
    stem = Path(options.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text + "\n")
    stem.with_suffix(".json").write_text(
        json.dumps({"wall_seconds": wall, "summary": summary, "cases": rows}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
