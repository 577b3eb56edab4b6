"""Two checkouts of gradguard on the same checks, in paired rounds.

    python benchmarks/trees.py OLD/src NEW/src
    python benchmarks/trees.py /tmp/base/src src --rounds 7 --cases torch-full-3000

For a change that must leave speed alone (a refactor): each round runs every
case once in a fresh subprocess per tree (the two trees in alternating order),
each case timed over a few calls after a warm-up call, by CPU time of the
process (less disturbed by other load on a shared machine than wall time).
The ratio NEW / OLD is taken round by round, so both sides see the same state
of the machine; the table shows its median and range over the rounds, and
whether the two trees gave the same verdicts. Only the public API is used,
so any two commits can be compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Timed calls per case in each round (after one warm-up call).
CALLS = 3


def _cases() -> dict[str, Callable[[], Callable[[], str]]]:
    """Case name -> a builder returning one check (a call that returns its verdict)."""

    def torch_full(n: int) -> Callable[[], str]:
        import torch

        import gradguard

        x = torch.from_numpy(_x(n))
        return lambda: gradguard.check(lambda x: x.sin() * x, x, mode="full").verdict

    def torch_softmax_rows() -> Callable[[], str]:
        import torch

        import gradguard

        x = torch.from_numpy(_x(40 * 25).reshape(40, 25))
        return lambda: gradguard.check(lambda x: torch.softmax(x, -1), x, mode="full").verdict

    def torch_probe(n: int) -> Callable[[], str]:
        import torch

        import gradguard

        x = torch.from_numpy(_x(n))
        return lambda: gradguard.check(lambda x: x.sin() * x, x, mode="probe").verdict

    def jax_full(n: int) -> Callable[[], str]:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        import gradguard

        x = jnp.asarray(_x(n))
        return lambda: gradguard.check(lambda x: jnp.sin(x) * x, x, mode="full").verdict

    def tf_full(n: int) -> Callable[[], str]:
        import tensorflow as tf

        import gradguard

        x = tf.constant(_x(n))
        return lambda: gradguard.check(lambda x: tf.sin(x) * x, x, mode="full").verdict

    def numpy_full(n: int) -> Callable[[], str]:
        import numpy as np

        import gradguard

        x = _x(n)
        return lambda: (
            gradguard.check(
                lambda x: np.sum(np.sin(x) * x), x, grad=lambda x: np.cos(x) * x + np.sin(x)
            ).verdict
        )

    return {
        "torch-full-300": lambda: torch_full(300),
        "torch-full-3000": lambda: torch_full(3000),
        "torch-softmax-rows-1000": torch_softmax_rows,
        "torch-probe-10000": lambda: torch_probe(10_000),
        "jax-full-300": lambda: jax_full(300),
        "tf-full-300": lambda: tf_full(300),
        "numpy-full-300": lambda: numpy_full(300),
    }


def _x(n: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).standard_normal(n)


def child(names: list[str]) -> None:
    """Run the cases in this process (the tree is whatever PYTHONPATH gives)."""
    import gradguard

    builders = _cases()
    out: dict[str, Any] = {"gradguard": str(Path(gradguard.__file__).parent)}
    for name in names:
        check = builders[name]()
        verdict = check()  # warm-up: imports, compilation, caches
        cpus = []
        for _ in range(CALLS):
            started = time.process_time()
            verdict = check()
            cpus.append(time.process_time() - started)
        out[name] = {"cpu_s": statistics.median(cpus), "verdict": verdict}
    print(json.dumps(out))


def _run_tree(src: str, names: list[str]) -> dict[str, Any]:
    env = dict(
        os.environ,
        PYTHONPATH=str(Path(src).resolve()),
        OMP_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONWARNINGS="ignore",
    )
    command = [sys.executable, __file__, "--child", ",".join(names)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{src}: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", nargs="?", help="the old tree's src/ folder")
    parser.add_argument("new", nargs="?", help="the new tree's src/ folder")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--cases", default=",".join(_cases()), help="comma-separated")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child.split(","))
        return
    if not (args.old and args.new):
        parser.error("give the old and the new tree's src/ folders")
    names = args.cases.split(",")
    unknown = [n for n in names if n not in _cases()]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(_cases())}")
    ratios: dict[str, list[float]] = {n: [] for n in names}
    verdicts: dict[str, set[tuple[str, str]]] = {n: set() for n in names}
    old_cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.rounds):
        order = [("old", args.old), ("new", args.new)]
        results = dict((side, _run_tree(src, names)) for side, src in order[:: 1 - 2 * (r % 2)])
        for n in names:
            ratios[n].append(results["new"][n]["cpu_s"] / results["old"][n]["cpu_s"])
            old_cpu[n].append(results["old"][n]["cpu_s"])
            verdicts[n].add((results["old"][n]["verdict"], results["new"][n]["verdict"]))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"new / old CPU time, {args.rounds} paired rounds, {CALLS} calls per case per round")
    print("| case | old CPU s (median) | new/old median | range | verdicts old -> new |")
    print("|---|---|---|---|---|")
    for n in names:
        rs = ratios[n]
        seen = ", ".join(sorted(f"{a} -> {b}" for a, b in verdicts[n]))
        print(
            f"| {n} | {statistics.median(old_cpu[n]):.3f} | {statistics.median(rs):.2f} | "
            f"{min(rs):.2f}-{max(rs):.2f} | {seen} |"
        )


if __name__ == "__main__":
    main()
