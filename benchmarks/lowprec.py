"""Low precision sweep: JAX without x64 and float32-only torch kernels, on
derivatives known to be right (the frameworks' own autodiff).

    python benchmarks/lowprec.py                     # both suites
    python benchmarks/lowprec.py --suite jax --points 4 --verbose

Without float64 the numerical side differences in float32, with steps of
a few hundredths of max(1, |x|): jumps (floor, round, rem), kinks (abs,
sort, cummax, maximum) and poles (tan, x**-2, cbrt) come within reach of the
stencil at ordinary points. A correct derivative must never ``fail`` there,
and a point whose nearest kink is farther than a small step should get a
verdict.

- ``jax``: about 60 jax.lax / jax.numpy operations, each at ``--points``
  seeded random float32 points in a sensible domain for it, checked with
  ``gradguard.check(f, *args)`` in a process where x64 is off (so the
  numerical side runs in float32), next to
  ``jax.test_util.check_grads(f, args, order=1, modes=["rev"])``.
- ``torch``: a subset of the same operations as float32-only kernels (a
  ``torch.autograd.Function`` that raises on any dtype but float32, whose
  backward is torch's own derivative), so the numerical side runs in float32.

Prints the counts of verdicts per suite (and among the cases check_grads
passes), and every case that is not ``pass``. Each suite runs in its own
subprocess with one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

POINTS = 4
SUITES = ("jax", "torch")


@dataclass(frozen=True)
class Op:
    """An operation: ``build(np_module)`` returns ``f(*args)``; ``domains``
    the (low, high) of each argument; ``shape`` of each argument."""

    name: str
    build: Callable[[Any], Callable[..., Any]]
    domains: tuple[tuple[float, float], ...] = ((-3.0, 3.0),)
    shape: tuple[int, ...] = (5,)


def _ops(kind: str) -> list[Op]:
    """The operations, written once against ``m`` (jax.numpy or torch)."""

    def u(name: str, fn: Callable[[Any], Callable[..., Any]], lo=-3.0, hi=3.0, shape=(5,)) -> Op:
        return Op(name, fn, ((lo, hi),), shape)

    def b(name: str, fn: Callable[[Any], Callable[..., Any]], d1=(-3.0, 3.0), d2=(-3.0, 3.0)) -> Op:
        return Op(name, fn, (d1, d2), (4,))

    ops = [
        # smooth
        u("sin", lambda m: m.sin),
        u("cos", lambda m: m.cos),
        u("exp", lambda m: m.exp),
        u("tanh", lambda m: m.tanh),
        u("sinh", lambda m: m.sinh),
        u("log", lambda m: m.log, 0.1, 5.0),
        u("log1p", lambda m: m.log1p, -0.9, 5.0),
        u("expm1", lambda m: m.expm1),
        u("sqrt", lambda m: m.sqrt, 0.05, 5.0),
        u("rsqrt", lambda m: lambda x: 1 / m.sqrt(x), 0.05, 5.0),
        u("erf", lambda m: m.erf if kind == "torch" else _jax_special("erf")),
        u("arctan", lambda m: m.arctan),
        u("arcsin", lambda m: m.arcsin, -0.95, 0.95),
        u("arccos", lambda m: m.arccos, -0.95, 0.95),
        u("arctanh", lambda m: m.arctanh, -0.95, 0.95),
        u("arcsinh", lambda m: m.arcsinh),
        u("arccosh", lambda m: m.arccosh, 1.05, 5.0),
        u("sigmoid", lambda m: lambda x: 1 / (1 + m.exp(-x))),
        u("square", lambda m: lambda x: x * x),
        u("cube", lambda m: lambda x: x**3, -3.0, 3.0),
        u("softplus", lambda m: lambda x: m.log1p(m.exp(x))),
        u("logsumexp", lambda m: lambda x: m.log(m.sum(m.exp(x))), -3.0, 3.0, (6,)),
        u("softmax", lambda m: lambda x: m.exp(x) / m.sum(m.exp(x)), -3.0, 3.0, (6,)),
        u("cumsum", lambda m: lambda x: m.cumsum(x, 0), -3.0, 3.0, (6,)),
        u("cumprod", lambda m: lambda x: m.cumprod(x, 0), 0.5, 1.5, (6,)),
        u("prod", lambda m: lambda x: m.prod(x), 0.5, 1.5, (6,)),
        u("norm", lambda m: lambda x: m.sqrt(m.sum(x * x)), -3.0, 3.0, (6,)),
        b("mul", lambda m: lambda x, y: x * y),
        b("div", lambda m: lambda x, y: x / y, d2=(0.5, 3.0)),
        b("pow", lambda m: lambda x, y: x**y, (0.2, 3.0), (-2.0, 2.0)),
        b("hypot", lambda m: m.hypot),
        # poles and branch points near the domain
        u("tan", lambda m: m.tan, -1.5, 1.5),
        u("cbrt", lambda m: m.cbrt if kind == "jax" else _signed_cbrt(m)),
        u("reciprocal", lambda m: lambda x: 1 / x),
        u("pow-2", lambda m: lambda x: x**-2),
        u("log-abs", lambda m: lambda x: m.log(m.abs(x))),
        b("arctan2", lambda m: m.arctan2 if kind == "jax" else m.atan2),
        # piecewise: kinks
        u("abs", lambda m: m.abs),
        u("relu", lambda m: lambda x: m.maximum(x, 0 * x)),
        u("sign-times", lambda m: lambda x: m.sign(x) * x * x),
        u("clip", lambda m: lambda x: m.clip(x, -1.0, 1.0)),
        u("sort", lambda m: _sort(m, kind), -3.0, 3.0, (6,)),
        u("max", lambda m: lambda x: m.max(x), -3.0, 3.0, (6,)),
        u("cummax", lambda m: _cummax(m, kind), -3.0, 3.0, (6,)),
        u("scatter_max", lambda m: _scatter_max(m, kind), -3.0, 3.0, (6,)),
        b("maximum", lambda m: m.maximum),
        b("minimum", lambda m: m.minimum),
        u("huber", lambda m: lambda x: m.where(m.abs(x) < 1, 0.5 * x * x, m.abs(x) - 0.5)),
        # piecewise: jumps (derivative zero, or one, between the jumps)
        u("floor", lambda m: m.floor),
        u("ceil", lambda m: m.ceil),
        u("round", lambda m: m.round),
        u("sign", lambda m: m.sign),
        u("frac", lambda m: lambda x: x - m.floor(x)),
        u("rem", lambda m: _rem(m, kind)),
        u("floor-times", lambda m: lambda x: m.floor(x) * x),
    ]
    return ops


def _jax_special(name: str) -> Callable[..., Any]:
    import jax.scipy.special as special

    return getattr(special, name)


def _signed_cbrt(m: Any) -> Callable[..., Any]:
    return lambda x: m.sign(x) * m.abs(x) ** (1 / 3)


def _sort(m: Any, kind: str) -> Callable[..., Any]:
    if kind == "jax":
        return m.sort
    return lambda x: m.sort(x).values


def _cummax(m: Any, kind: str) -> Callable[..., Any]:
    if kind == "jax":
        import jax

        return lambda x: jax.lax.cummax(x, axis=0)
    return lambda x: m.cummax(x, 0).values


def _scatter_max(m: Any, kind: str) -> Callable[..., Any]:
    index = [0, 1, 0, 2, 1, 2]
    if kind == "jax":
        idx = m.asarray(index)
        return lambda x: m.full((3,), -10.0, dtype=x.dtype).at[idx].max(x)
    idx = m.tensor(index)
    return lambda x: m.full((3,), -10.0, dtype=x.dtype).scatter_reduce(0, idx, x, "amax")


def _rem(m: Any, kind: str) -> Callable[..., Any]:
    if kind == "jax":
        import jax

        return lambda x: jax.lax.rem(x, m.asarray(0.7, dtype=x.dtype))
    return lambda x: m.fmod(x, 0.7)


def _points(op: Op, point: int) -> list[np.ndarray]:
    rng = np.random.default_rng([sum(map(ord, op.name)), point])
    return [rng.uniform(lo, hi, op.shape).astype(np.float32) for lo, hi in op.domains]


# -- workers -----------------------------------------------------------------


def _run_jax(points: int, only: str | None) -> list[dict[str, Any]]:
    os.environ["JAX_ENABLE_X64"] = "0"
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import gradguard

    assert not jax.config.jax_enable_x64
    rows = []
    for op in _ops("jax"):
        if only and op.name not in only.split(","):
            continue
        f = op.build(jnp)
        for point in range(points):
            args = [jnp.asarray(a) for a in _points(op, point)]
            rows.append(_case("jax", op.name, point, f, args, gradguard, check_grads))
    return rows


def _run_torch(points: int, only: str | None) -> list[dict[str, Any]]:
    import torch

    import gradguard

    torch.set_num_threads(1)
    rows = []
    for op in _ops("torch"):
        if only and op.name not in only.split(","):
            continue
        plain = op.build(torch)
        f = _float32_only(torch, plain)
        peer = _gradcheck(torch, plain)
        for point in range(points):
            args = [torch.from_numpy(a) for a in _points(op, point)]
            rows.append(_case("torch", op.name, point, f, args, gradguard, peer))
    return rows


def _gradcheck(torch: Any, plain: Callable[..., Any]) -> Callable[..., None]:
    """torch.autograd.gradcheck of ``plain`` in float64, as the peer."""

    def peer(f: Any, args: Any, **_: Any) -> None:
        torch.autograd.gradcheck(plain, [a.double().requires_grad_() for a in args])

    return peer


def _float32_only(torch: Any, plain: Callable[..., Any]) -> Callable[..., Any]:
    """``plain`` as a float32-only kernel whose backward is torch's own."""

    class Only32(torch.autograd.Function):
        @staticmethod
        def forward(*xs):
            if any(x.dtype != torch.float32 for x in xs):
                raise TypeError("this kernel exists for float32 only")
            return plain(*xs)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            xs = [x.detach().requires_grad_() for x in ctx.saved_tensors]
            with torch.enable_grad():
                y = plain(*xs)
            grads = torch.autograd.grad(y, xs, g, allow_unused=True)
            return tuple(torch.zeros_like(x) if d is None else d for x, d in zip(xs, grads))

    return Only32.apply


def _case(
    suite: str, name: str, point: int, f: Any, args: list[Any], gradguard: Any, peer: Any
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        report = gradguard.check(f, *args)
        verdict, precision = report.verdict, report.precision
        detail = (
            f"{report.wrong} wrong, {report.uncertain} undecided of {report.checked}; "
            + " | ".join((*report.diagnosis[:1], *report.reasons[:1]))
        )
        evaluations = report.evaluations
    except Exception as exc:  # a crash counts as its own verdict
        verdict, precision, detail, evaluations = "error", "", f"{type(exc).__name__}: {exc}", 0
    seconds = time.perf_counter() - started
    try:
        peer(f, args, order=1, modes=["rev"])
        peer_verdict = "pass"
    except Exception:
        peer_verdict = "fail"
    return {
        "suite": suite,
        "op": name,
        "point": point,
        "x": [np.asarray(a).tolist() for a in args],
        "verdict": verdict,
        "precision": precision,
        "peer": peer_verdict,
        "detail": detail,
        "evaluations": evaluations,
        "seconds": seconds,
    }


# -- the driver --------------------------------------------------------------


def _summary(rows: list[dict[str, Any]], verbose: bool) -> str:
    lines = []
    for suite in SUITES:
        mine = [r for r in rows if r["suite"] == suite]
        if not mine:
            continue
        every = Counter(r["verdict"] for r in mine)
        peer_ok = Counter(r["verdict"] for r in mine if r["peer"] == "pass")
        precisions = Counter(r["precision"] for r in mine)
        seconds = sum(r["seconds"] for r in mine)
        evaluations = sum(r["evaluations"] for r in mine)
        lines.append(
            f"{suite}: {len(mine)} cases ({dict(precisions)}), {seconds:.1f} s, "
            f"{evaluations} evaluations"
        )
        lines.append(f"  all cases:           {_counts(every, len(mine))}")
        total = sum(peer_ok.values())
        lines.append(f"  where the peer passes ({total}): {_counts(peer_ok, total)}")
        for r in mine:
            if r["verdict"] != "pass" or verbose:
                lines.append(
                    f"    {r['verdict']:12s} {r['op']:12s} point {r['point']} "
                    f"(peer {r['peer']}): {r['detail']}"
                )
    return "\n".join(lines)


def _counts(counter: Counter[str], total: int) -> str:
    parts = []
    for verdict in ("pass", "inconclusive", "fail", "error"):
        count = counter.get(verdict, 0)
        share = 100.0 * count / total if total else 0.0
        parts.append(f"{verdict} {count} ({share:.1f}%)")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default=",".join(SUITES))
    parser.add_argument("--points", type=int, default=POINTS)
    parser.add_argument("--ops", default=None, help="comma-separated op names")
    parser.add_argument("--out", default=None, help="write every case as JSON here")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        run = _run_jax if options.worker == "jax" else _run_torch
        print(json.dumps(run(options.points, options.ops)))
        return
    rows: list[dict[str, Any]] = []
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_ENABLE_X64="0")
    env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    for suite in options.suite.split(","):
        command = [sys.executable, __file__, "--worker", suite, "--points", str(options.points)]
        if options.ops:
            command += ["--ops", options.ops]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            continue
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    print(_summary(rows, options.verbose))
    if options.out:
        with open(options.out, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
