"""Locate one wrong entry in a model's weight gradient, at model size.

    python benchmarks/model_locate.py                       # torch, jax, keras; 20 seeds
    python benchmarks/model_locate.py --frameworks torch --seeds 5

Per framework, an MLP whose linear layers run a hand-written derivative
(a ``torch.autograd.Function``, a ``jax.custom_vjp``, a
``tf.custom_gradient`` in a Keras layer), in float64:

- torch: 784 -> 1000 -> 200 -> 10 with tanh, 987,210 parameters, a batch of 8;
- jax (an equinox-like module: a dataclass registered as a pytree): 784 -> 300 -> 100
  -> 10, 266,610 parameters;
- keras (a ``keras.Model`` of custom layers): 256 -> 256 -> 256 -> 10, 134,666.

For each seed the model is drawn afresh, and one entry of one layer's
weight gradient (layer and index drawn from the seed) is made 1% too large
in the backward rule. ``gradguard.check`` with default options must say
``fail`` and name that entry (parameter and index) among its wrong entries;
the same model with the right rule must ``pass``. Each check is timed as
wall time and as CPU time of this process (one thread: OMP_NUM_THREADS=1,
torch.set_num_threads(1), XLA single-threaded); the machine is shared, so
the load average is printed with them. One model before the seeds warms
up imports and compilation and is not counted.

Peers, on the same models: torch.autograd.gradcheck(fast_mode=True) (one
random projection of the weight Jacobian, in float64; it cannot say where)
and jax.test_util.check_grads (one random direction; it cannot say where).
TensorFlow's compute_gradient takes one evaluation per entry (10^5 here)
and is left out.

Each model is checked as ``gradguard.check(model, x)``: its parameters (a
torch module's, a JAX pytree module's leaves, a Keras model's trainable
variables) and its input, named as the framework names them.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

FRAMEWORKS = ("torch", "jax", "keras")
SEEDS = 20
FACTOR = 1.01


def _timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _named(report: Any, key: str, index: tuple[int, ...]) -> bool:
    """Whether the report names ``index`` of the parameter ``key`` as wrong."""
    return any(
        w.status == "wrong" and key in w.argument and tuple(w.index) == index
        for w in report.worst
        if w.kind in ("entry", "cotangent")
    )


def _wrong_entry(rng: np.random.Generator, shapes: list[tuple[int, int]]) -> tuple[int, tuple]:
    layer = int(rng.integers(len(shapes)))
    return layer, tuple(int(rng.integers(s)) for s in shapes[layer])


# -- torch ----------------------------------------------------------------------


def _torch_case(seed: int) -> dict[str, Any]:
    import torch

    import gradguard

    class Linear(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, w: Any, b: Any, wrong: Any) -> Any:
            ctx.save_for_backward(x, w)
            ctx.wrong = wrong
            return x @ w.T + b

        @staticmethod
        def backward(ctx: Any, g: Any) -> Any:
            x, w = ctx.saved_tensors
            gw = g.T @ x
            if ctx.wrong is not None:
                gw[ctx.wrong] *= FACTOR
            return g @ w, gw, g.sum(0), None

    class Layer(torch.nn.Module):
        def __init__(self, fan_in: int, fan_out: int) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(fan_out, fan_in) / fan_in**0.5)
            self.bias = torch.nn.Parameter(0.1 * torch.randn(fan_out))
            self.wrong: tuple[int, int] | None = None

        def forward(self, x: Any) -> Any:
            return Linear.apply(x, self.weight, self.bias, self.wrong)

    torch.manual_seed(seed)
    sizes = [784, 1000, 200, 10]
    layers = [Layer(a, b) for a, b in itertools.pairwise(sizes)]
    model = torch.nn.Sequential(layers[0], torch.nn.Tanh(), layers[1], torch.nn.Tanh(), layers[2])
    model = model.double()
    x = torch.randn(8, sizes[0], dtype=torch.float64)
    shapes = [tuple(lay.weight.shape) for lay in layers]
    layer, index = _wrong_entry(np.random.default_rng(seed), shapes)
    key = f"{2 * layer}.weight"
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p: Any, x: Any) -> Any:
        return torch.func.functional_call(model, p, (x,))

    row: dict[str, Any] = {"parameters": sum(v.numel() for v in params.values())}
    for label, wrong in (("right", None), ("wrong", index)):
        layers[layer].wrong = wrong
        report, wall, cpu = _timed(lambda: gradguard.check(model, x))
        row[label] = _outcome(report, wall, cpu, key, index)
        # The peer: gradcheck's fast mode on the same function of the weights.
        passed, wall, cpu = _timed(lambda: _gradcheck_fast(f, params, x))
        row[label]["peer"] = {"passed": bool(passed), "wall": wall, "cpu": cpu}
    return row


def _gradcheck_fast(f: Any, params: dict[str, Any], x: Any) -> bool:
    """torch.autograd.gradcheck(fast_mode=True) on f as a function of the weights."""
    import torch

    names = list(params)

    def g(*values: Any) -> Any:
        return f(dict(zip(names, values)), x)

    inputs = tuple(v.clone().requires_grad_(True) for v in params.values())
    return bool(torch.autograd.gradcheck(g, inputs, fast_mode=True, raise_exception=False))


# -- jax -------------------------------------------------------------------------


def _jax_case(seed: int) -> dict[str, Any]:
    import jax
    import jax.numpy as jnp
    from jax.test_util import check_grads

    import gradguard

    def linear(wrong: Any) -> Any:
        @jax.custom_vjp
        def apply(x: Any, w: Any, b: Any) -> Any:
            return x @ w + b

        def fwd(x: Any, w: Any, b: Any) -> Any:
            return apply(x, w, b), (x, w)

        def bwd(saved: Any, g: Any) -> Any:
            x, w = saved
            gw = x.T @ g
            if wrong is not None:
                gw = gw.at[wrong].multiply(FACTOR)
            return g @ w.T, gw, g.sum(0)

        apply.defvjp(fwd, bwd)
        return apply

    @dataclasses.dataclass
    class MLP:
        """An equinox-like module: a dataclass registered as a pytree, its
        rules static."""

        weights: list
        biases: list
        rules: tuple

        def __call__(self, x: Any) -> Any:
            last = len(self.rules) - 1
            for i, (rule, w, b) in enumerate(zip(self.rules, self.weights, self.biases)):
                x = rule(x, w, b)
                x = jnp.tanh(x) if i < last else x
            return x

    jax.tree_util.register_dataclass(MLP, data_fields=["weights", "biases"], meta_fields=["rules"])

    sizes = [784, 300, 100, 10]
    rng = np.random.default_rng(seed)
    weights, biases = [], []
    for a, b in itertools.pairwise(sizes):
        weights.append(jnp.asarray(rng.normal(size=(a, b)) / a**0.5))
        biases.append(jnp.asarray(rng.normal(size=b) / 10))
    x = jnp.asarray(rng.normal(size=(8, sizes[0])))
    layer, index = _wrong_entry(rng, [(a, b) for a, b in itertools.pairwise(sizes)])
    key = f"weights[{layer}]"
    row: dict[str, Any] = {"parameters": sum(int(a.size) for a in weights + biases)}
    for label, wrong in (("right", None), ("wrong", index)):
        rules = tuple(linear(wrong if i == layer else None) for i in range(len(sizes) - 1))
        model = MLP(weights, biases, rules)
        report, wall, cpu = _timed(lambda model=model: gradguard.check(model, x))
        row[label] = _outcome(report, wall, cpu, key, index)

        def peer(model: Any = model) -> bool:
            try:
                check_grads(lambda m: m(x), (model,), order=1, modes=["rev"])
                return True
            except AssertionError:
                return False

        passed, wall, cpu = _timed(peer)
        row[label]["peer"] = {"passed": passed, "wall": wall, "cpu": cpu}
    return row


# -- keras -----------------------------------------------------------------------


def _keras_case(seed: int) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    import gradguard

    def linear(wrong: Any) -> Any:
        @tf.custom_gradient
        def apply(x: Any, w: Any, b: Any) -> Any:
            def grad(g: Any) -> Any:
                gw = tf.transpose(x) @ g
                if wrong is not None:
                    scale = np.ones(gw.shape)
                    scale[wrong] = FACTOR
                    gw = gw * tf.constant(scale, dtype=gw.dtype)
                return g @ tf.transpose(w), gw, tf.reduce_sum(g, 0)

            return x @ w + b, grad

        return apply

    class Layer(keras.layers.Layer):
        def __init__(self, units: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.units = units
            self.rule = linear(None)

        def build(self, shape: Any) -> None:
            size = (shape[-1], self.units)
            self.kernel = self.add_weight(shape=size, initializer="glorot_normal", name="kernel")
            self.bias = self.add_weight(
                shape=(self.units,), initializer="random_normal", name="bias"
            )

        def call(self, x: Any) -> Any:
            w, b = tf.convert_to_tensor(self.kernel), tf.convert_to_tensor(self.bias)
            return self.rule(x, w, b)

    keras.utils.set_random_seed(seed)
    sizes = [256, 256, 256, 10]
    layers = [Layer(b, dtype="float64") for b in sizes[1:]]
    inputs = keras.Input((sizes[0],), dtype="float64")
    h = inputs
    for i, layer_ in enumerate(layers):
        h = layer_(h)
        h = keras.ops.tanh(h) if i < len(layers) - 1 else h
    model = keras.Model(inputs, h)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(8, sizes[0])))
    layer, index = _wrong_entry(rng, [(a, b) for a, b in itertools.pairwise(sizes)])
    key = layers[layer].kernel.path
    count = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    row: dict[str, Any] = {"parameters": count}
    for label, wrong in (("right", None), ("wrong", index)):
        layers[layer].rule = linear(wrong)
        report, wall, cpu = _timed(lambda: gradguard.check(model, x))
        row[label] = _outcome(report, wall, cpu, key, index)
    return row


# -- running ---------------------------------------------------------------------


def _outcome(report: Any, wall: float, cpu: float, key: str, index: tuple) -> dict[str, Any]:
    return {
        "verdict": report.verdict,
        "named": _named(report, key, index),
        "wall": wall,
        "cpu": cpu,
        "evaluations": report.evaluations,
        "load": os.getloadavg()[0],
        "notes": list(report.notes),
    }


def _worker(framework: str, seeds: int) -> list[dict[str, Any]]:
    if framework == "torch":
        import torch

        torch.set_num_threads(1)
    case = {"torch": _torch_case, "jax": _jax_case, "keras": _keras_case}[framework]
    case(seeds)  # warm-up (imports, compilation): not counted
    rows = []
    for seed in range(seeds):
        row = case(seed)
        row["seed"] = seed
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows


def _summary(framework: str, rows: list[dict[str, Any]]) -> str:
    def count(label: str, test: Any) -> int:
        return sum(bool(test(r[label])) for r in rows)

    def spread(label: str, field: str) -> str:
        values = [r[label][field] for r in rows]
        return f"median {np.median(values):.2f} s, max {max(values):.2f} s"

    n = len(rows)
    loads = [r["wrong"]["load"] for r in rows]
    lines = [
        f"{framework}: {rows[0]['parameters']:,} parameters, {n} seeds, "
        f"load average {min(loads):.1f}-{max(loads):.1f}",
        f"  right rule: pass {count('right', lambda o: o['verdict'] == 'pass')}/{n}; "
        f"CPU {spread('right', 'cpu')}; wall {spread('right', 'wall')}",
        f"  wrong entry: fail {count('wrong', lambda o: o['verdict'] == 'fail')}/{n}, "
        f"entry named {count('wrong', lambda o: o['verdict'] == 'fail' and o['named'])}/{n}; "
        f"CPU {spread('wrong', 'cpu')}; wall {spread('wrong', 'wall')}",
    ]
    if "peer" in rows[0]["right"]:
        peer = rows[0]["right"]["peer"]
        name = "gradcheck(fast_mode=True)" if framework == "torch" else "check_grads"
        values = [r[label]["peer"]["cpu"] for r in rows for label in ("right", "wrong")]
        lines.append(
            f"  peer {name}: passes the right rule "
            f"{sum(r['right']['peer']['passed'] for r in rows)}/{n}, fails the wrong one "
            f"{sum(not r['wrong']['peer']['passed'] for r in rows)}/{n}, names nothing; "
            f"CPU median {np.median(values):.2f} s"
        )
        del peer
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--out", default=None, help="write every case as JSON here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(_worker(options.worker, options.seeds)))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1", JAX_ENABLE_X64="1", KERAS_BACKEND="tensorflow")
    env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    env["TF_NUM_INTRAOP_THREADS"] = env["TF_NUM_INTEROP_THREADS"] = "1"
    results = {}
    for framework in options.frameworks:
        command = [sys.executable, __file__, "--worker", framework, "--seeds", str(options.seeds)]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            continue
        rows = json.loads(done.stdout.strip().splitlines()[-1])
        results[framework] = rows
        print(_summary(framework, rows), flush=True)
    if options.out:
        with open(options.out, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
