"""Small checks, as a test suite makes them: gradguard beside each framework's checker.

    python benchmarks/small.py                                  # JAX, TensorFlow, torch
    python benchmarks/small.py --frameworks jax --rounds 3
    python benchmarks/small.py --base /tmp/base/src             # and an older checkout
    python benchmarks/small.py --frameworks tensorflow --matmul # tanh(X @ W), n = 3000

A test suite checks many small functions once each. Each round runs, per
framework and tool, one fresh subprocess that checks every small function of
the list once, in order (compilation and tracing included: nothing of a
function is compiled before its check), then once more (the same function
and shapes: what a cache can reuse). Each check is timed by the process's
CPU time (one intra-op thread), which other load on a shared machine
disturbs less than wall time, and counted:

- ``compiles``: XLA compilations during the check (JAX, ``jax.monitoring``);
- ``traces``: calls of ``f`` on symbolic values (a JAX trace, a TensorFlow
  graph trace) during the check; ``eager``: calls of ``f`` on concrete values.

The tools of a framework alternate in order from round to round, and the
ratio of medians (gradguard / peer) is taken round by round; the table shows
the median and range over the rounds.

Functions (every input differentiated, float64):

- jax: the float records of ``lax_test_util.lax_ops()`` and the listed
  ``jax.numpy`` / ``jax.lax`` / ``jax.nn`` functions of ``benchmarks/corpus.py``
  with at most 300 inputs; peer ``jax.test_util.check_grads(order=1, modes=["rev"])``;
- tensorflow: the ops of ``corpus.tf_listed()``; peer ``tf.test.compute_gradient``
  (``corpus.tf_compute_gradient``);
- torch: ``TORCH_CASES`` below; peer ``torch.autograd.gradcheck`` (defaults).

``--matmul`` also times the full check of ``tanh(X @ W)`` in X (100, 30), W
(30, 30) held fixed (n = m = 3000), in TensorFlow beside
``tf.test.compute_gradient``, alternating in one process, after one warm-up
call each.

The report closes with issue 19's goal lines for this tree: the median first
check within GOAL_MS (JAX 100 ms, TensorFlow and torch 50 ms) and the
``tanh(X @ W)`` ratio within MATMUL_GOAL (0.5x), each with its median and
range over the rounds. ``python -m nox -s bench`` runs this after
``benchmarks/run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: Most inputs of a function in the list.
MAX_INPUTS = 300
PEERS = {
    "jax": "check_grads",
    "tensorflow": "compute_gradient",
    "torch": "gradcheck",
}
#: Issue 19's goals: the median first check (compilation included), in ms...
GOAL_MS = {"jax": 100.0, "tensorflow": 50.0, "torch": 50.0}
#: ... and the full check of tanh(X @ W) over compute_gradient's time.
MATMUL_GOAL = 0.5


# -- the functions -----------------------------------------------------------------


def torch_cases() -> list[tuple[str, Callable[..., Any], list[Any]]]:
    """Small torch functions in float64, shaped like the JAX and TensorFlow lists."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)

    def t(*shape: int, spd: bool = False, pos: bool = False) -> Any:
        a = rng.standard_normal(shape)
        if spd:
            a = a @ a.T + shape[0] * np.eye(shape[0])
        if pos:
            a = 0.5 + np.abs(a)
        return torch.tensor(a, dtype=torch.float64)

    return [
        ("sin", torch.sin, [t(3, 4)]),
        ("tanh", torch.tanh, [t(3, 4)]),
        ("exp", torch.exp, [t(3, 4)]),
        ("log", torch.log, [t(3, 4, pos=True)]),
        ("sigmoid", torch.sigmoid, [t(3, 4)]),
        ("softplus", F.softplus, [t(3, 4)]),
        ("gelu", F.gelu, [t(3, 4)]),
        ("mul", torch.mul, [t(3, 4), t(3, 4)]),
        ("div", torch.div, [t(3, 4), t(3, 4, pos=True)]),
        ("atan2", torch.atan2, [t(3, 4), t(3, 4)]),
        ("hypot", torch.hypot, [t(3, 4), t(3, 4)]),
        ("pow", torch.pow, [t(3, 4, pos=True), t(3, 4)]),
        ("matmul", torch.matmul, [t(4, 4), t(4, 3)]),
        ("tanh(x@y)", lambda x, y: torch.tanh(x @ y), [t(3, 4), t(4, 5)]),
        ("softmax", lambda x: torch.softmax(x, -1), [t(3, 4)]),
        ("log_softmax", lambda x: torch.log_softmax(x, -1), [t(3, 4)]),
        ("logsumexp", lambda x: torch.logsumexp(x, -1), [t(3, 4)]),
        ("cumsum", lambda x: torch.cumsum(x, 1), [t(3, 4)]),
        ("cumprod", lambda x: torch.cumprod(x, 1), [t(3, 4)]),
        ("sort", lambda x: torch.sort(x, 1).values, [t(3, 4)]),
        ("sum", torch.sum, [t(3, 4)]),
        ("var", torch.var, [t(3, 4)]),
        ("norm", torch.linalg.norm, [t(3, 4)]),
        ("inv", torch.linalg.inv, [t(4, 4, spd=True)]),
        ("det", torch.linalg.det, [t(4, 4)]),
        ("slogdet", lambda x: torch.linalg.slogdet(x)[1], [t(4, 4)]),
        ("cholesky", torch.linalg.cholesky, [t(4, 4, spd=True)]),
        ("solve", torch.linalg.solve, [t(4, 4, spd=True), t(4, 3)]),
        ("eigvalsh", torch.linalg.eigvalsh, [t(4, 4, spd=True)]),
        ("svdvals", torch.linalg.svdvals, [t(4, 4)]),
        ("layer_norm", lambda x: F.layer_norm(x, (4,)), [t(3, 4)]),
        ("conv1d", lambda x, w: F.conv1d(x, w, padding=1), [t(1, 2, 8), t(3, 2, 3)]),
        ("conv2d", lambda x, w: F.conv2d(x, w, padding=1), [t(1, 2, 6, 6), t(3, 2, 3, 3)]),
        ("max_pool2d", lambda x: F.max_pool2d(x, 2), [t(1, 2, 6, 6)]),
        ("fft.rfft", lambda x: torch.view_as_real(torch.fft.rfft(x)), [t(3, 4)]),
    ]


def cases(framework: str) -> Iterator[tuple[str, Callable[..., Any], tuple[Any, ...]]]:
    """``(name, f, framework arrays)`` for every small differentiable function."""
    import math

    import corpus

    if framework == "jax":
        import jax

        for name, f, args in corpus.jax_cases("float64", None):
            if f is None or sum(math.prod(a.shape) for a in args) > MAX_INPUTS:
                continue
            yield name, f, tuple(jax.device_put(a) for a in args)
    elif framework == "tensorflow":
        import tensorflow as tf

        for name, f, specs in corpus.tf_listed():
            arrays = tuple(tf.constant(a) for a in corpus.case_arrays(name, specs, "float64"))
            if sum(math.prod(a.shape) for a in arrays) > MAX_INPUTS:
                continue
            try:
                f(*arrays)
            except Exception:
                continue  # no float64 kernel: not a case
            yield name, f, arrays
    else:
        for name, f, args in torch_cases():
            yield name, f, tuple(args)


# -- one tool over the list, in this process ---------------------------------------


class Counted:
    """``f``, counting its calls on symbolic values (traces) and on concrete ones."""

    def __init__(self, f: Callable[..., Any], symbolic: Callable[[tuple[Any, ...]], bool]):
        self.f = f
        self.symbolic = symbolic
        self.counts: Counter[str] = Counter()

    def __call__(self, *args: Any) -> Any:
        self.counts["traces" if self.symbolic(args) else "eager"] += 1
        return self.f(*args)


def setup(framework: str) -> tuple[Callable[[tuple[Any, ...]], bool], Counter[str]]:
    """One intra-op thread, float64; what tells a symbolic call; the compile counter."""
    compiles: Counter[str] = Counter()
    if framework == "jax":
        import jax
        from jax import monitoring

        jax.config.update("jax_enable_x64", True)

        def listen(event: str, duration: float, **kwargs: Any) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                compiles["compiles"] += 1

        monitoring.register_event_duration_secs_listener(listen)
        return (lambda args: any(isinstance(a, jax.core.Tracer) for a in args)), compiles
    if framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        return (lambda args: not tf.executing_eagerly()), compiles
    import torch

    torch.set_num_threads(1)
    return (lambda args: False), compiles


def peer_check(framework: str, f: Callable[..., Any], arrays: tuple[Any, ...]) -> str:
    if framework == "jax":
        from jax.test_util import check_grads

        check_grads(f, arrays, order=1, modes=["rev"])
        return "pass"
    if framework == "tensorflow":
        import corpus

        return "pass" if corpus.tf_compute_gradient(f, arrays, "float64") is True else "fail"
    import torch

    inputs = tuple(a.detach().requires_grad_(True) for a in arrays)
    return "pass" if torch.autograd.gradcheck(f, inputs, raise_exception=False) else "fail"


def run_tool(framework: str, tool: str) -> None:
    """Every function once, then once more; one JSON line per function on stdout."""
    symbolic, compiles = setup(framework)
    import gradguard

    for name, f, arrays in list(cases(framework)):
        counted = Counted(f, symbolic)
        row: dict[str, Any] = {"name": name, "inputs": sum(_size(a) for a in arrays)}
        for when in ("first", "again"):
            counted.counts.clear()
            compiles.clear()
            start = time.process_time()
            try:
                if tool == "gradguard":
                    verdict = gradguard.check(counted, *arrays).verdict
                else:
                    verdict = peer_check(framework, counted, arrays)
            except Exception as exc:
                verdict = f"error: {type(exc).__name__}: {str(exc)[:120]}"
            row[when] = {
                "cpu": time.process_time() - start,
                "verdict": verdict,
                **counted.counts,
                **compiles,
            }
        print(json.dumps(row), flush=True)


def _size(a: Any) -> int:
    import math

    return math.prod(int(s) for s in a.shape)


def run_matmul() -> None:
    """TensorFlow tanh(X @ W) at n = 3000: gradguard's full check beside compute_gradient."""
    symbolic, _ = setup("tensorflow")
    import numpy as np
    import tensorflow as tf

    import gradguard

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((100, 30)))
    w = tf.constant(rng.standard_normal((30, 30)) / 6)
    counted = Counted(lambda x: tf.tanh(x @ w), symbolic)

    def gg() -> str:
        return gradguard.check(counted, x, mode="full").verdict

    def peer() -> str:
        theoretical, numerical = tf.test.compute_gradient(counted, [x])
        error = float(np.max(np.abs(theoretical[0] - numerical[0])))
        return "pass" if error < 1e-4 else "fail"

    for when in ("warm-up", "timed"):
        for tool, call in (("gradguard", gg), ("compute_gradient", peer)):
            counted.counts.clear()
            start = time.process_time()
            verdict = call()
            cpu = time.process_time() - start
            print(json.dumps({"tool": tool, "when": when, "cpu": cpu, "verdict": verdict,
                              **counted.counts}), flush=True)  # fmt: skip


# -- rounds ----------------------------------------------------------------------


def worker(args: list[str], src: str, timeout: float) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, __file__, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not rows:
        sys.stderr.write(done.stderr[-3000:])
    return rows


def summary(rows: list[dict[str, Any]], when: str, field: str) -> float:
    values = [r[when].get(field, 0) for r in rows]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="jax,tensorflow,torch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", help="src/ of another checkout, measured alongside")
    parser.add_argument("--matmul", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", default=str(ROOT / "out" / "small.json"))
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    parser.add_argument("--matmul-worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.tool:
        framework, tool = options.tool.split(":")
        run_tool(framework, tool)
        return
    if options.matmul_worker:
        run_matmul()
        return
    src = str(ROOT / "src")
    trees = {"gradguard": src} | ({"gradguard-base": options.base} if options.base else {})
    results: dict[str, Any] = {"rounds": []}
    for r in range(options.rounds):
        this_round: dict[str, Any] = {}
        for framework in options.frameworks.split(","):
            tools = [(name, "gradguard", path) for name, path in trees.items()]
            tools.append((PEERS[framework], "peer", src))
            if r % 2:
                tools.reverse()
            for label, tool, path in tools:
                rows = worker(["--tool", f"{framework}:{tool}"], path, options.timeout)
                this_round[f"{framework}:{label}"] = rows
            if options.matmul and framework == "tensorflow":
                for label, path in trees.items():
                    rows = worker(["--matmul-worker"], path, options.timeout)
                    this_round[f"matmul:{label}"] = rows
        results["rounds"].append(this_round)
        report(results, trees, options.frameworks.split(","))
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    Path(options.out).write_text(json.dumps(results, indent=1))


def report(results: dict[str, Any], trees: dict[str, str], frameworks: list[str]) -> None:
    rounds = results["rounds"]
    print(f"\n## {len(rounds)} round(s), CPU time, one thread")
    print("| framework | tool | cases | first: median ms | again: median ms | "
          "compiles (first/again) | traces (first/again) | not pass | ratio to peer |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for framework in frameworks:
        peer = PEERS[framework]
        peer_key = f"{framework}:{peer}"
        for label in [*trees, peer]:
            key = f"{framework}:{label}"
            per_round = [rd[key] for rd in rounds if rd.get(key)]
            if not per_round:
                continue
            first = [1e3 * summary(rows, "first", "cpu") for rows in per_round]
            again = [1e3 * summary(rows, "again", "cpu") for rows in per_round]
            rows = per_round[-1]
            counts = " / ".join(
                f"{summary(rows, 'first', f):g}/{summary(rows, 'again', f):g}"
                for f in ("compiles", "traces")
            )
            bad = sum(1 for row in rows if row["first"]["verdict"] != "pass")
            ratios = [
                summary(rd[key], "first", "cpu") / summary(rd[peer_key], "first", "cpu")
                for rd in rounds
                if rd.get(key) and rd.get(peer_key)
            ]
            print(
                f"| {framework} | {label} | {len(rows)} | {_range(first)} | {_range(again)} | "
                f"{counts.replace(' / ', ' | ')} | {bad} | {_range(ratios, '.2f')} |"
            )
    for label in trees:
        runs = [rd[f"matmul:{label}"] for rd in rounds if rd.get(f"matmul:{label}")]
        timed = [{r["tool"]: r for r in rows if r["when"] == "timed"} for rows in runs]
        ratios = [t["gradguard"]["cpu"] / t["compute_gradient"]["cpu"] for t in timed if t]
        if ratios:
            gg = [t["gradguard"]["cpu"] for t in timed]
            cg = [t["compute_gradient"]["cpu"] for t in timed]
            traces = timed[-1]["gradguard"].get("traces", 0)
            print(
                f"\ntanh(X @ W), n = 3000, {label}: full check {_range(gg)} s, "
                f"compute_gradient {_range(cg)} s, ratio {_range(ratios, '.2f')}, "
                f"traces of f in the check: {traces}"
            )
    goals(rounds, frameworks)


def goals(rounds: list[dict[str, Any]], frameworks: list[str]) -> None:
    """Issue 19's goal lines for this tree (label ``gradguard``): median and
    range over the rounds, and whether the median is within the goal."""
    lines = []
    for framework in frameworks:
        per_round = [
            rd[f"{framework}:gradguard"] for rd in rounds if rd.get(f"{framework}:gradguard")
        ]
        if per_round:
            first = [1e3 * summary(rows, "first", "cpu") for rows in per_round]
            met = statistics.median(first) <= GOAL_MS[framework]
            lines.append(
                f"- {framework}: median first check {_range(first)} ms; "
                f"goal <= {GOAL_MS[framework]:g} ms: {'holds' if met else 'MISSED'}"
            )
    timed = [
        {r["tool"]: r for r in rd["matmul:gradguard"] if r["when"] == "timed"}
        for rd in rounds
        if rd.get("matmul:gradguard")
    ]
    ratios = [t["gradguard"]["cpu"] / t["compute_gradient"]["cpu"] for t in timed if len(t) == 2]
    if ratios:
        met = statistics.median(ratios) <= MATMUL_GOAL
        lines.append(
            f"- tensorflow tanh(X @ W), n = 3000: full check ÷ compute_gradient "
            f"{_range(ratios, '.2f')}; goal <= {MATMUL_GOAL:g}x: {'holds' if met else 'MISSED'}"
        )
    if lines:
        print("\nGoals (issue 19), CPU time, one thread:\n" + "\n".join(lines))


def _range(values: list[float], spec: str = ".3g") -> str:
    if not values:
        return ""
    mid = statistics.median(values)
    if len(values) == 1:
        return format(mid, spec)
    return f"{mid:{spec}} ({min(values):{spec}}-{max(values):{spec}})"


if __name__ == "__main__":
    main()
