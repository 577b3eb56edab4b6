"""Probe mode locates what it finds: a disagreeing probe is split (argument
by argument, then in halves) until the wrong entries are named, each with
an output, on real torch / JAX / TensorFlow rules in small models. Right
models pass, untouched by the split; diagnoses claim only what was shown."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import gradguard
from gradguard.engine.strategies.locate import PATHS

SIZES = (24, 40, 30, 6)  # 2,436 parameters: auto mode would pick probes too
BATCH = 3
SEEDS = range(4)


def draw(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Weights and biases of an MLP of SIZES, and a batch of inputs."""
    rng = np.random.default_rng(seed)
    layers = []
    for a, b in itertools.pairwise(SIZES):
        layers += [rng.standard_normal((a, b)) / math.sqrt(a), 0.1 * rng.standard_normal(b)]
    return layers, rng.standard_normal((BATCH, SIZES[0]))


def wrong_at(layer: int, index: tuple[int, int], factor: float = 1.01) -> dict:
    """A weight-gradient mistake: ``layer``'s gradient at ``index`` times ``factor``."""
    return {layer: (index, factor)}


def located(report) -> list[tuple[str, str, tuple[int, ...]]]:
    """(kind, argument, index) of the located entries the report names as wrong."""
    return [
        (w.kind, w.argument, tuple(w.index))
        for w in report.worst
        if w.kind in ("entry", "cotangent") and w.status == "wrong"
    ]


def assert_named(report, key: str, index: tuple[int, int], factor: float = 1.01) -> None:
    assert report.verdict == "fail", str(report)
    named = [w for w in report.worst if w.kind == "entry" and w.status == "wrong"]
    hits = [w for w in named if key in w.argument and tuple(w.index) == index]
    assert hits, str(report)
    # A Jacobian entry of the rule against finite differences, the mistake's size.
    entry = hits[0]
    assert entry.output_index != () or entry.output
    assert entry.analytical / entry.numerical == pytest.approx(factor, rel=1e-6)
    assert "probes cannot locate" not in " ".join(report.diagnosis)
    assert not any("cannot locate entries" in note for note in report.notes)


# -- torch ---------------------------------------------------------------------


def torch_model(mistakes: dict, dtype: str = "float64"):
    torch = pytest.importorskip("torch")

    class Linear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, b, mistake):
            ctx.save_for_backward(x, w)
            ctx.mistake = mistake
            return x @ w + b

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            gw = x.T @ g
            if ctx.mistake is not None:
                where, factor = ctx.mistake
                if where == "all":
                    gw = gw * factor
                else:
                    gw[where] *= factor
            return g @ w.T, gw, g.sum(0), None

    def f(p, x):
        for i in range(len(SIZES) - 1):
            x = Linear.apply(x, p[f"w{i}"], p[f"b{i}"], mistakes.get(i))
            x = torch.tanh(x) if i < len(SIZES) - 2 else x
        return x

    def arrays(seed):
        layers, x = draw(seed)
        names = [f"{k}{i}" for i in range(len(SIZES) - 1) for k in "wb"]
        as_torch = {n: torch.tensor(a, dtype=getattr(torch, dtype)) for n, a in zip(names, layers)}
        return as_torch, torch.tensor(x, dtype=getattr(torch, dtype))

    return f, arrays


@pytest.mark.parametrize("seed", SEEDS)
def test_torch_right_model_passes_and_one_wrong_entry_is_named(seed):
    f, arrays = torch_model({})
    p, x = arrays(seed)
    right = gradguard.check(f, p, x, wrt=0, seed=seed)
    assert right.verdict == "pass", str(right)
    assert right.mode == "probe"
    assert not located(right)
    index = (7 + seed, 3 * seed + 1)
    f, _ = torch_model(wrong_at(1, index))
    report = gradguard.check(f, p, x, wrt=0, seed=seed)
    assert_named(report, "'w1'", index)
    # Only that entry is named, in w1, and the diagnosis says so.
    assert {name for _, name, _ in located(report)} == {"p['w1']"}, str(report)
    assert "located 1 wrong entry, in p['w1']" in " ".join(report.diagnosis)
    assert "constant factor" not in " ".join(report.diagnosis)
    # Restricted to each parameter tensor, the probe showed where.
    split = "the probe disagrees in p['w1'] and shows no error in the other 5"
    assert any(split in note for note in report.notes), report.notes


def test_the_split_costs_a_few_differences_per_halving():
    f, arrays = torch_model(wrong_at(0, (5, 9)))
    p, x = arrays(0)
    report = gradguard.check(f, p, x, wrt=0, mode="probe")
    assert_named(report, "'w0'", (5, 9))
    n = sum(v.numel() for v in p.values())
    # The probe, its noise check, then at most two differences per halving
    # of the widest argument and one per argument: accuracy (4) points each.
    halvings = math.ceil(math.log2(max(v.numel() for v in p.values())))
    most = 4 * (1 + len(p) + 2 * halvings) + 3
    assert report.evaluations <= most, (report.evaluations, most, n)
    assert report.evaluations < n / 10


def test_two_wrong_entries_in_two_arguments_are_both_named():
    mistakes = {**wrong_at(0, (2, 3)), **wrong_at(2, (11, 4), 0.98)}
    f, arrays = torch_model(mistakes)
    p, x = arrays(1)
    report = gradguard.check(f, p, x, wrt=0, mode="probe", seed=1)
    assert_named(report, "'w0'", (2, 3))
    assert_named(report, "'w2'", (11, 4), 0.98)
    assert "located 2 wrong entries, in p['w0'], p['w2']" in " ".join(report.diagnosis)


def test_an_error_spread_over_a_whole_weight_names_a_few_entries_and_says_so():
    f, arrays = torch_model({1: ("all", 2.0)})
    p, x = arrays(2)
    report = gradguard.check(f, p, x, wrt=0, mode="probe", seed=2)
    assert report.verdict == "fail"
    names = located(report)
    assert 1 <= len(names) <= PATHS
    assert all(name == "p['w1']" for _, name, _ in names), str(report)
    assert any("the error is spread over many entries" in note for note in report.notes)
    # Each named entry is twice the numerical one, as the whole tensor is.
    for w in report.worst:
        if w.kind == "entry":
            assert w.analytical / w.numerical == pytest.approx(2.0, rel=1e-6)


def float32_only(f):
    def g(p, x):
        if any(str(v.dtype) != "torch.float32" for v in p.values()):
            raise TypeError("float32 only")
        return f(p, x)

    return g


def test_float32_only_function_locates_with_its_own_steps():
    # f accepts float32 only: the numerical side differences in float32,
    # with longer and shorter steps (the run's own path, at every coordinate).
    wrong, arrays = torch_model(wrong_at(1, (3, 4), 1.5), dtype="float32")
    right, _ = torch_model({}, dtype="float32")
    p, x = arrays(3)
    report = gradguard.check(float32_only(wrong), p, x, wrt=0, mode="probe", seed=3)
    assert "float32" in report.precision
    assert report.verdict == "fail", str(report)
    assert any(name == "p['w1']" and index == (3, 4) for _, name, index in located(report))
    report = gradguard.check(float32_only(right), p, x, wrt=0, mode="probe", seed=3)
    assert report.verdict == "pass", str(report)


# -- JAX -----------------------------------------------------------------------


def jax_model(mistakes: dict):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    def linear(mistake):
        @jax.custom_vjp
        def apply(x, w, b):
            return x @ w + b

        def fwd(x, w, b):
            return apply(x, w, b), (x, w)

        def bwd(saved, g):
            x, w = saved
            gw = x.T @ g
            if mistake is not None:
                where, factor = mistake
                gw = gw.at[where].multiply(factor)
            return g @ w.T, gw, g.sum(0)

        apply.defvjp(fwd, bwd)
        return apply

    rules = [linear(mistakes.get(i)) for i in range(len(SIZES) - 1)]

    def f(p, x):
        for i, (rule, layer) in enumerate(zip(rules, p["layers"])):
            x = rule(x, layer["w"], layer["b"])
            x = jnp.tanh(x) if i < len(rules) - 1 else x
        return x

    def arrays(seed):
        layers, x = draw(seed)
        pairs = zip(layers[::2], layers[1::2])
        tree = {"layers": [{"w": jnp.asarray(w), "b": jnp.asarray(b)} for w, b in pairs]}
        return tree, jnp.asarray(x)

    return f, arrays


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_jax_pytree_right_model_passes_and_one_wrong_entry_is_named(seed):
    f, arrays = jax_model({})
    p, x = arrays(seed)
    right = gradguard.check(f, p, x, wrt=0, seed=seed)
    assert right.verdict == "pass", str(right)
    assert right.mode == "probe"
    index = (20 + seed, 2)
    f, _ = jax_model(wrong_at(0, index))
    report = gradguard.check(f, p, x, wrt=0, seed=seed)
    assert_named(report, "['layers'][0]['w']", index)


# -- TensorFlow ------------------------------------------------------------------


def tf_model(mistakes: dict):
    tf = pytest.importorskip("tensorflow")

    def linear(mistake):
        @tf.custom_gradient
        def apply(x, w, b):
            def grad(g):
                gw = tf.transpose(x) @ g
                if mistake is not None:
                    where, factor = mistake
                    scale = np.ones(gw.shape)
                    scale[where] = factor
                    gw = gw * tf.constant(scale, dtype=gw.dtype)
                return g @ tf.transpose(w), gw, tf.reduce_sum(g, 0)

            return x @ w + b, grad

        return apply

    rules = [linear(mistakes.get(i)) for i in range(len(SIZES) - 1)]

    def f(p, x):
        for i, rule in enumerate(rules):
            x = rule(x, p[2 * i], p[2 * i + 1])
            x = tf.tanh(x) if i < len(rules) - 1 else x
        return x

    def arrays(seed):
        layers, x = draw(seed)
        return [tf.constant(a) for a in layers], tf.constant(x)

    return f, arrays


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_tensorflow_right_model_passes_and_one_wrong_entry_is_named(seed):
    f, arrays = tf_model({})
    p, x = arrays(seed)
    right = gradguard.check(f, p, x, wrt=0, seed=seed)
    assert right.verdict == "pass", str(right)
    index = (4, 2 + seed)
    f, _ = tf_model(wrong_at(2, index))
    report = gradguard.check(f, p, x, wrt=0, seed=seed)
    assert_named(report, "[4]", index)


# -- what the diagnosis claims ---------------------------------------------------


def test_one_wrong_bias_entry_of_a_scalar_loss_never_reads_as_a_factor():
    # A scalar f: the two cotangents of a probe are one projection, scaled,
    # so they fitted any error "as a factor" (1.01 times) for half the seeds.
    torch = pytest.importorskip("torch")

    class Linear(torch.autograd.Function):
        @staticmethod
        def forward(x, w, b):
            return x @ w + b

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            x, w, b = ctx.saved_tensors
            scale = torch.ones_like(b)
            scale[3] = 1.01
            return g @ w.T, x.T @ g, g.sum(0) * scale

    rng = np.random.default_rng(0)

    def t(*shape):
        return torch.tensor(rng.standard_normal(shape), dtype=torch.float64)

    x, w1, b1, w2 = 0.01 * t(5, 32), t(32, 64) / 6, t(64), t(64, 8) / 8

    def loss(w1, b1, w2):
        return ((torch.tanh(Linear.apply(x, w1, b1)) @ w2) ** 2).sum()

    for seed in range(12):
        report = gradguard.check(loss, w1, b1, w2, mode="probe", seed=seed)
        text = " ".join(report.diagnosis)
        assert "constant factor" not in text, (seed, report.diagnosis)
        assert "located 1 wrong entry, in b1" in text, (seed, report.diagnosis)
        assert ("entry", "b1", (3,)) in located(report), str(report)


def test_two_cotangents_of_one_output_are_one_projection():
    from array_api_compat import numpy as xp

    from gradguard.core.diagnosis import Evidence, diagnose
    from gradguard.core.verdict import Tally

    def evidence(outputs: int) -> Evidence:
        # Two values, the second twice the first on both sides: the two
        # cotangents of one probe of f with ``outputs`` outputs.
        a, n = np.array([1.01, 2.02]), np.array([1.0, 2.0])
        tally = Tally(
            checked=2,
            wrong=2,
            diff_sq=float((a - n) @ (a - n)),
            num_sq=float(n @ n),
            ana_sq=float(a @ a),
            cross=float(a @ n),
            active=2,
        )
        return Evidence(
            tally=tally,
            arguments=[("x", Tally())],
            mode="probe",
            directions={"rev": tally},
            out_widths=[outputs],
        )

    assert "constant factor" not in " ".join(diagnose(evidence(1), xp))
    assert "is 1.01 times" in " ".join(diagnose(evidence(5), xp))


# -- forward mode ------------------------------------------------------------------


def test_a_wrong_forward_rule_is_located_with_its_output():
    torch = pytest.importorskip("torch")

    class Layer(torch.autograd.Function):
        @staticmethod
        def forward(x, w):
            return torch.tanh(x @ w)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs, output)
            ctx.save_for_forward(*inputs, output)

        @staticmethod
        def backward(ctx, g):
            x, w, y = ctx.saved_tensors
            g = g * (1 - y**2)
            return g @ w.T, x.T @ g

        @staticmethod
        def jvp(ctx, tx, tw):
            x, w, y = ctx.saved_tensors
            tw = tw.clone()
            tw[7, 3] = tw[7, 3] * 1.01
            return (tx @ w + x @ tw) * (1 - y**2)

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((4, 60)))
    w = torch.tensor(rng.standard_normal((60, 50)) / 8)

    def f(x, w):
        return Layer.apply(x, w)

    for direction in ("fwd", "both"):
        report = gradguard.check(f, x, w, direction=direction, mode="probe")
        assert report.verdict == "fail", str(report)
        entries = [m for m in report.worst if m.kind == "entry" and m.status == "wrong"]
        assert [(m.argument, m.index) for m in entries] == [("w", (7, 3))], str(report)
        # w[7, 3] reaches output column 3 only: the output named is in it.
        assert entries[0].output_index[1] == 3
        assert entries[0].analytical / entries[0].numerical == pytest.approx(1.01, rel=1e-6)
        assert "located 1 wrong entry, in w" in " ".join(report.diagnosis)
    right = gradguard.check(lambda x, w: torch.tanh(x @ w), x, w, direction="both", mode="probe")
    assert right.verdict == "pass", str(right)
