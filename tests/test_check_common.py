"""What gradguard.check does the same way for every framework: several
arguments, pytrees, pass-through arguments, ``wrt=``, output kinds, complex
inputs, seeds, probe-mode sensitivity, ``assert_gradients`` and precision.

Most tests use PyTorch (cheap per call); complex conventions use both PyTorch
and JAX. Each test skips only when its framework is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradguard
from reports import wrong


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def randn(torch, *shape, seed=0, dtype=None):
    values = np.random.default_rng(seed).standard_normal(shape)
    return torch.tensor(values, dtype=dtype or torch.float64)


def scaled_function(torch, factor):
    """A torch Function computing ``x * w`` whose backward for w is multiplied
    by ``factor`` (1: correct)."""

    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(x, w):
            return x * w

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(*inputs)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            return g * w, g * x * factor

    return Scale.apply


# -- arguments -----------------------------------------------------------------


def test_several_positional_arguments(torch):
    def f(a, b, c):
        return a * torch.sin(b) + c**2

    args = [randn(torch, 4, seed=s) for s in range(3)]
    report = gradguard.check(f, *args, mode="full")
    assert report.verdict == "pass", str(report)
    assert [a.name for a in report.arguments] == ["a", "b", "c"]
    assert report.num_inputs == 12


def test_nested_pytrees_of_arguments(torch):
    bad_scale = scaled_function(torch, 3.0)

    def model(params, x):
        h = torch.tanh(params["layers"][0][0] @ x + params["layers"][0][1])
        h = params["layers"][1] * h
        return {"y": (params["w"] * h).sum(), "h": [h]}

    params = {
        "w": randn(torch, 3, seed=1),
        "layers": [(randn(torch, 3, 2, seed=2), randn(torch, 3, seed=3)), randn(torch, 3, seed=4)],
    }
    x = randn(torch, 2, seed=5)
    report = gradguard.check(model, params, x, mode="full")
    assert report.verdict == "pass", str(report)
    names = [a.name for a in report.arguments]
    assert names == [
        "params['w']",
        "params['layers'][0][0]",
        "params['layers'][0][1]",
        "params['layers'][1]",
        "x",
    ]
    # The caller's containers and tensors are untouched.
    assert set(params) == {"w", "layers"} and len(params["layers"]) == 2

    def wrong_model(params, x):
        out = model(params, x)
        out["h"].append(bad_scale(params["layers"][1], params["w"]))
        return out

    report = gradguard.check(wrong_model, params, x, mode="full")
    assert report.verdict == "fail", str(report)
    assert {m.argument for m in wrong(report) if m.kind == "entry"} == {"params['w']"}
    assert {m.output for m in wrong(report) if m.kind == "entry"} == {"out['h'][1]"}
    by_name = {a.name: a.wrong for a in report.arguments}
    assert by_name["params['w']"] > 0
    assert sum(by_name.values()) == by_name["params['w']"]


def test_non_array_arguments_are_passed_through(torch):
    seen = []

    def f(x, power, label, table, indices):
        seen.append((type(power), label, table["k"], indices.dtype))
        assert isinstance(power, int) and label == "hello" and table["k"] is None
        return x[indices] ** power

    x = randn(torch, 5, seed=1)
    indices = torch.tensor([0, 2, 4])
    report = gradguard.check(f, x, 3, "hello", {"k": None}, indices, mode="full")
    assert report.verdict == "pass", str(report)
    assert [a.name for a in report.arguments] == ["x"]  # integers are not differentiated
    assert all(s == (int, "hello", None, torch.int64) for s in seen)


def test_wrt_selects_arguments(torch):
    f = scaled_function(torch, 2.0)  # right for x, wrong for w

    def g(x, w):
        return f(x, w)

    x, w = randn(torch, 4, seed=1), randn(torch, 4, seed=2)
    only_x = gradguard.check(g, x, w, wrt=0, mode="full")
    assert only_x.verdict == "pass", str(only_x)
    assert [a.name for a in only_x.arguments] == ["x"]
    only_w = gradguard.check(g, x, w, wrt=1, mode="full")
    assert only_w.verdict == "fail", str(only_w)
    assert [a.name for a in only_w.arguments] == ["w"]
    assert "constant factor" in " ".join(only_w.diagnosis), str(only_w)
    both = gradguard.check(g, x, w, wrt=(0, -1), mode="probe")
    assert both.verdict == "fail", str(both)


def test_sign_flip_of_one_argument_is_diagnosed(torch):
    def g(x, w):
        return scaled_function(torch, -1.0)(x, w)

    report = gradguard.check(g, randn(torch, 4, seed=1), randn(torch, 4, seed=2), mode="full")
    assert "only w is wrong" in " ".join(report.diagnosis), str(report)
    assert "sign flipped" in " ".join(report.diagnosis), str(report)


# -- outputs ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_scalar_array_and_dict_outputs(torch, mode):
    x = randn(torch, 2, 3, seed=1)
    outputs = {
        "scalar": lambda x: (x**3).sum(),
        "array": lambda x: torch.sin(x) @ x.T,
        "dict": lambda x: {"a": x.exp(), "b": (x.sum(0), x.prod())},
    }
    for name, f in outputs.items():
        report = gradguard.check(f, x, mode=mode)
        assert report.verdict == "pass", (name, str(report))
    dict_report = gradguard.check(outputs["dict"], x, mode="full")
    assert dict_report.num_outputs == 6 + 3 + 1


def test_wrong_entry_of_a_dict_output_is_named(torch):
    f = scaled_function(torch, -1.0)

    def g(x, w):
        return {"good": torch.cos(x), "bad": f(x, w)}

    report = gradguard.check(g, randn(torch, 3, seed=1), randn(torch, 3, seed=2), mode="full")
    assert report.verdict == "fail", str(report)
    entries = [m for m in wrong(report) if m.kind == "entry"]
    assert entries and {m.output for m in entries} == {"out['bad']"}
    assert {m.argument for m in entries} == {"w"}


# -- complex inputs --------------------------------------------------------------------


def complex_tensor(torch, n, seed=0):
    rng = np.random.default_rng(seed)
    return torch.tensor(rng.standard_normal(n) + 1j * rng.standard_normal(n))


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_complex_torch_convention(torch, mode):
    z = complex_tensor(torch, 4, seed=1)
    for f in (lambda z: z**2, lambda z: z.abs() ** 2, lambda z: (z * z.conj()).real.sum()):
        report = gradguard.check(f, z, mode=mode)
        assert report.verdict == "pass", str(report)

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(z):
            return z * z

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            return g * (2 * z).conj()  # torch's convention: conjugate derivative

    class SquareNoConj(Square):
        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            return g * 2 * z  # the conjugate is missing

    assert gradguard.check(Square.apply, z, mode=mode).verdict == "pass"
    report = gradguard.check(SquareNoConj.apply, z, mode=mode)
    assert report.verdict == "fail", str(report)


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_complex_jax_convention(jax, mode):
    import jax.numpy as jnp

    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.standard_normal(4) + 1j * rng.standard_normal(4))
    for f in (lambda z: z**2, lambda z: jnp.abs(z) ** 2):
        report = gradguard.check(f, z, mode=mode)
        assert report.verdict == "pass", str(report)

    @jax.custom_vjp
    def square(z):
        return z * z

    square.defvjp(lambda z: (z * z, z), lambda z, g: (g * 2 * z,))  # JAX: no conjugate

    @jax.custom_vjp
    def square_conj(z):
        return z * z

    square_conj.defvjp(lambda z: (z * z, z), lambda z, g: (g * jnp.conj(2 * z),))

    @jax.custom_vjp
    def abs2(z):
        return jnp.real(z * jnp.conj(z))

    abs2.defvjp(lambda z: (abs2(z), z), lambda z, g: (2 * g * jnp.conj(z),))

    @jax.custom_vjp
    def abs2_torch_style(z):
        return jnp.real(z * jnp.conj(z))

    abs2_torch_style.defvjp(lambda z: (abs2_torch_style(z), z), lambda z, g: (2 * g * z,))

    assert gradguard.check(square, z, mode=mode).verdict == "pass"
    assert gradguard.check(abs2, z, mode=mode).verdict == "pass"
    for mistake in (square_conj, abs2_torch_style):
        report = gradguard.check(mistake, z, mode=mode)
        assert report.verdict == "fail", str(report)


# -- seeds ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_same_seed_same_result(torch, mode):
    f = scaled_function(torch, 1.001)
    x, w = randn(torch, 6, seed=1), randn(torch, 6, seed=2)
    for seed in (0, 7):
        a = gradguard.check(f, x, w, mode=mode, seed=seed)
        b = gradguard.check(f, x, w, mode=mode, seed=seed)
        assert a.seed == b.seed == seed
        assert a.verdict == b.verdict == "fail"
        assert a.relative_error == b.relative_error
        assert [(m.argument, m.index, m.analytical, m.numerical) for m in a.worst] == [
            (m.argument, m.index, m.analytical, m.numerical) for m in b.worst
        ]
        assert a.diagnosis == b.diagnosis


# -- probe mode sensitivity -------------------------------------------------------

N = 1000
RUNS = 20


def x_sin_x_function(torch):
    class XSinX(torch.autograd.Function):
        """x.sin() * x; the diagonal entry ``position`` of its backward is
        multiplied by ``factor`` (position < 0: correct)."""

        @staticmethod
        def forward(x, position, factor):
            return x.sin() * x

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, position, factor = inputs
            ctx.save_for_backward(x)
            ctx.position, ctx.factor = position, factor

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            d = x.cos() * x + x.sin()
            if ctx.position >= 0:
                d = d.clone()
                d[ctx.position] = d[ctx.position] * ctx.factor
            return g * d, None, None

    def f(x, position, factor):
        return XSinX.apply(x, position, factor)

    return f


def test_probe_mode_catches_one_wrong_entry_in_a_thousand(torch):
    f = x_sin_x_function(torch)
    rng = np.random.default_rng(2024)
    positions = rng.choice(N, size=RUNS, replace=False)
    caught, alarms = 0, 0
    for run, position in enumerate(positions):
        x = randn(torch, N, seed=100 + run)
        bad = gradguard.check(f, x, int(position), 1.01, mode="probe", seed=run)
        assert bad.mode == "probe" and bad.num_inputs == N
        caught += bad.verdict == "fail"
        good = gradguard.check(f, x, -1, 1.0, mode="probe", seed=run)
        alarms += good.verdict != "pass"
    assert (caught, alarms) == (RUNS, 0)


def test_auto_mode_picks_probes_for_large_inputs(torch):
    f = x_sin_x_function(torch)
    x = randn(torch, 5000, seed=3)
    report = gradguard.check(f, x, 1234, 1.01)
    assert report.mode == "probe"
    assert report.verdict == "fail", str(report)
    assert gradguard.check(f, randn(torch, 10, seed=3), 3, 1.01).mode == "full"


# -- assert_gradients ----------------------------------------------------------------


def test_assert_gradients(torch):
    x, w = randn(torch, 4, seed=1), randn(torch, 4, seed=2)
    report = gradguard.assert_gradients(scaled_function(torch, 1.0), x, w, mode="full")
    assert isinstance(report, gradguard.Report) and report.passed and bool(report)

    with pytest.raises(gradguard.GradientError) as info:
        gradguard.assert_gradients(scaled_function(torch, -1.0), x, w, mode="full")
    assert isinstance(info.value, AssertionError)
    failed = info.value.report
    assert failed.verdict == "fail" and not failed.passed
    assert str(info.value) == str(failed)
    assert "FAIL" in str(info.value) and "only w is wrong" in str(
        info.value
    )  # forward(x, w)'s names

    # Options reach the check: wrt=0 only checks the right argument.
    gradguard.assert_gradients(scaled_function(torch, -1.0), x, w, wrt=0, mode="full")


# -- precision ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["full", "probe"])
def test_float32_inputs_checked_in_float64(torch, mode):
    x = randn(torch, 50, seed=1, dtype=torch.float32)
    w = randn(torch, 50, seed=2, dtype=torch.float32)
    report = gradguard.check(scaled_function(torch, 1.0), x, w, mode=mode)
    assert report.verdict == "pass", str(report)
    assert "float64" in report.precision
    # ...and still sensitive: a 1% error in float32 inputs is found.
    report = gradguard.check(scaled_function(torch, 1.01), x, w, mode=mode)
    assert report.verdict == "fail", str(report)


def _saturated_softmax(framework):
    """A saturated softmax (largest weight 1 - 4e-6) in float32: its float32 VJP
    carries cancellation error of ~0.1-1%, yet it is the right derivative."""
    x = np.random.default_rng(3).standard_normal(30)
    module = pytest.importorskip(framework)
    if framework == "torch":
        return (lambda x: module.softmax(x * 10, 0)), module.tensor(x, dtype=module.float32)
    if framework == "jax":
        module.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return (lambda x: module.nn.softmax(x * 10)), jnp.asarray(x, dtype=jnp.float32)
    return (lambda x: module.nn.softmax(x * 10)), module.constant(x, dtype=module.float32)


@pytest.mark.parametrize("mode", ["full", "probe"])
@pytest.mark.parametrize("framework", ["torch", "jax", "tensorflow"])
def test_float32_saturated_softmax_is_no_false_alarm(framework, mode):
    f, x = _saturated_softmax(framework)
    for seed in range(2):
        report = gradguard.check(f, x, mode=mode, seed=seed)
        assert report.verdict == "pass", (seed, str(report))
