"""Issue 16, the plumbing families: no false alarm, crash or refusal from how
gradguard hands arrays to frameworks and reads their answers back.

1. aliased VJP results: a backward that returns its incoming gradient (or a
   view of it) must not see the cotangent buffer cleared under it;
2. outputs without a derivative (integers, torch outputs that do not require
   grad) are left out with a note that names them;
7. f is evaluated on fresh arrays laid out as the caller's;
8. a report, not an exception, where a report can answer (empty arrays, a
   gradient of the wrong shape, complex32 outputs, JAX's cache key,
   TensorFlow kernels missing in float64, pfor crashes);
9. arrays f uses that require gradients but are not checked are named.

Every family runs in each framework it applies to; each test also has a
wrong case beside the right one, so that it can fail.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest

import gradguard

# -- helpers ----------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _tf():
    return pytest.importorskip("tensorflow")


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def note_with(report, *words):
    """The first note that contains every one of ``words``."""
    for note in report.notes:
        if all(w in note for w in words):
            return note
    raise AssertionError(f"no note with {words} in {report.notes}")


def assert_nothing_to_compare(report):
    assert report.verdict == "pass", report
    assert report.checked == 0
    assert report.notes[-1].startswith("nothing to compare"), report.notes


# -- 1. aliased VJP results ----------------------------------------------------------------


def _torch_aliasing_cases():
    torch = _torch()
    return {
        "x+1": lambda x: x + 1.0,
        "clone": lambda x: x.clone(),
        "reshape": lambda x: x.reshape(-1),
        "view": lambda x: x.view(3, 4),
        "squeeze": lambda x: x[None].squeeze(0),
        "t": lambda x: x.t(),
        "sum": lambda x: x.sum(),
        "to-same-dtype": lambda x: x.to(torch.float64),
        "dropout-p0": lambda x: torch.nn.functional.dropout(x, 0.0),
        "identity": lambda x: x,
    }


@pytest.mark.parametrize(
    "name",
    [
        "x+1",
        "clone",
        "reshape",
        "view",
        "squeeze",
        "t",
        "sum",
        "to-same-dtype",
        "dropout-p0",
        "identity",
    ],
)
@pytest.mark.parametrize("mode", ["full", "probe"])
def test_torch_backward_returning_its_incoming_gradient_passes(name, mode):
    torch = _torch()
    f = _torch_aliasing_cases()[name]
    x = torch.tensor(randn(4, 3))
    report = gradguard.check(f, x, mode=mode)
    assert report.verdict == "pass", report


def _straight_through(scale):
    """A custom Function whose backward returns grad_output itself: right
    for forward ``x``, wrong for forward ``scale * x``."""
    torch = _torch()

    class StraightThrough(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * scale

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output

    return StraightThrough.apply


@pytest.mark.parametrize("vectorize", [True, False])
def test_torch_straight_through_estimator(vectorize):
    torch = _torch()
    x = torch.tensor(randn(4, 3))
    assert gradguard.check(_straight_through(1.0), x, vectorize=vectorize).verdict == "pass"
    wrong = gradguard.check(_straight_through(2.0), x, vectorize=vectorize)
    assert wrong.verdict == "fail" and wrong.wrong >= 12


def test_jax_custom_vjp_returning_its_cotangent():
    jax = _jax()
    jnp = jax.numpy

    def straight_through(scale):
        @jax.custom_vjp
        def f(x):
            return x * scale

        f.defvjp(lambda x: (x * scale, None), lambda _, g: (g,))
        return f

    x = jnp.asarray(randn(4, 3))
    for vectorize in (True, False):
        report = gradguard.check(straight_through(1.0), x, vectorize=vectorize)
        assert report.verdict == "pass", report
        wrong = gradguard.check(straight_through(2.0), x, vectorize=vectorize)
        assert wrong.verdict == "fail" and wrong.wrong >= 12


def test_tensorflow_custom_gradient_returning_upstream():
    tf = _tf()

    def straight_through(scale):
        @tf.custom_gradient
        def f(x):
            return x * scale, lambda upstream: upstream

        return f

    x = tf.constant(randn(4, 3))
    assert gradguard.check(straight_through(1.0), x).verdict == "pass"
    wrong = gradguard.check(straight_through(2.0), x)
    assert wrong.verdict == "fail" and wrong.wrong >= 12


def test_numpy_vjp_rule_returning_the_cotangent():
    x = randn(4, 3)
    for f in (lambda x: x * 1.0, lambda x: x):
        assert gradguard.check(f, x, vjp=lambda g, x: g).verdict == "pass"
    wrong = gradguard.check(lambda x: 2.0 * x, x, vjp=lambda g, x: g)
    assert wrong.verdict == "fail" and wrong.wrong >= 12


# -- 2. outputs without a derivative ---------------------------------------------------------


def test_torch_outputs_that_do_not_require_grad_are_left_out_by_name():
    torch = _torch()
    x = torch.tensor(randn(4, 5))
    report = gradguard.check(lambda x: torch.native_layer_norm(x, (5,), None, None, 1e-5), x)
    assert report.verdict == "pass", report
    assert report.num_outputs == 20  # the normalised output alone
    assert "out[1], out[2]" in note_with(report, "not compared", "require grad")


def test_torch_integer_outputs_are_left_out_by_name():
    torch = _torch()
    x = torch.tensor(randn(4, 5))
    report = gradguard.check(lambda x: torch.sort(x, -1), x)
    assert report.verdict == "pass", report
    assert "out[1] (int64)" in note_with(report, "not compared", "integer")
    lu = gradguard.check(lambda a: torch.linalg.lu_factor(a), torch.tensor(randn(3, 3)))
    assert lu.verdict == "pass", lu
    assert "out[1] (int32)" in note_with(lu, "not compared")
    assert_nothing_to_compare(gradguard.check(lambda x: torch.argmax(x), x))


def test_torch_a_wrong_derivative_beside_an_integer_output_still_fails():
    torch = _torch()

    class HalfSlope(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.sin()

        @staticmethod
        def backward(ctx, g):
            return 0.5 * g  # wrong: cos(x) * g

    x = torch.tensor(randn(4, 5))
    report = gradguard.check(lambda x: (HalfSlope.apply(x), torch.argmax(x, -1)), x)
    assert report.verdict == "fail"
    note_with(report, "out[1]", "integer")


def test_torch_detached_f_is_still_caught():
    # As gradcheck: when no output is differentiated, all are compared, so a
    # detach() that loses the derivative fails.
    torch = _torch()
    x = torch.tensor(randn(4, 3))
    assert gradguard.check(lambda x: x.detach() * 2.0, x).verdict == "fail"


def test_jax_integer_outputs_are_left_out_by_name():
    jax = _jax()
    jnp = jax.numpy
    x = jnp.asarray(randn(4, 5))
    report = gradguard.check(lambda x: jax.lax.top_k(x, 2), x)
    assert report.verdict == "pass", report
    assert "out[1] (int32)" in note_with(report, "not compared", "integer")
    lu = gradguard.check(jax.scipy.linalg.lu_factor, jnp.asarray(randn(3, 3)))
    assert lu.verdict == "pass", lu
    note_with(lu, "out[1]", "integer")
    assert_nothing_to_compare(gradguard.check(lambda x: jnp.argmax(x), x))


def test_tensorflow_integer_outputs_are_left_out_by_name():
    tf = _tf()
    x = tf.constant(randn(4, 5))
    report = gradguard.check(lambda x: tf.math.top_k(x, 2), x)
    assert report.verdict == "pass", report
    assert "out.indices (int32)" in note_with(report, "not compared", "integer")


def test_numpy_rule_gets_none_for_an_integer_output():
    x = randn(5)
    seen = []

    def vjp(cotangents, x):
        values, indices = cotangents
        seen.append(indices)
        return 2 * x * values

    report = gradguard.check(lambda x: (x**2, np.argsort(x)), x, vjp=vjp)
    assert report.verdict == "pass", report
    assert seen and all(s is None for s in seen)
    note_with(report, "out[1] (int64)")
    wrong = gradguard.check(lambda x: (x**2, np.argsort(x)), x, vjp=lambda c, x: 3 * x * c[0])
    assert wrong.verdict == "fail"


# -- 7. memory layout --------------------------------------------------------------------------


@pytest.mark.parametrize("vectorize", [True, False])
def test_torch_evaluates_on_arrays_laid_out_as_the_callers(vectorize):
    torch = _torch()

    def f(x):
        # What a stride-dependent kernel may do: the value depends on the layout.
        return x.sum(0) * (1.0 if x.is_contiguous() else 2.0)

    x = torch.tensor(randn(5, 3)).t()  # not contiguous
    report = gradguard.check(f, x, vectorize=vectorize)
    assert report.verdict == "pass", report
    assert not report.reasons and not report.notes, report


def test_torch_storage_offset_does_not_reach_f():
    torch = _torch()
    x = torch.tensor(randn(6))

    def f(x):
        # as_strided's storage offset is absolute: on a view into a batch of
        # points it would read another point's entries.
        return torch.as_strided(x, (2,), (2,), 1) * 2.0

    def rule(slope):
        def vjp(g, x):
            out = torch.zeros_like(x)
            out[[1, 3]] = slope * g
            return out

        return vjp

    assert gradguard.check(f, x, vectorize=False).verdict == "pass"
    assert gradguard.check(f, x, vectorize=False, vjp=rule(2.0)).verdict == "pass"
    assert gradguard.check(f, x, vectorize=False, vjp=rule(1.0)).verdict == "fail"


def test_torch_repeat_evaluation_sees_the_callers_layout():
    torch = _torch()

    def f(x):
        # A rounding-sized difference between layouts (pinv's kernels).
        return x.sum(0) + (0.0 if x.is_contiguous() else 1e-13)

    x = torch.tensor(randn(5, 3)).t()
    report = gradguard.check(f, x, vectorize=False)
    assert report.verdict == "pass"
    assert not any("not deterministic" in n for n in report.notes + report.reasons), report
    pinv = gradguard.check(torch.linalg.pinv, torch.tensor(randn(5, 3)).t())
    assert not any("not deterministic" in n for n in pinv.notes + pinv.reasons), pinv


def test_numpy_evaluates_on_arrays_laid_out_as_the_callers():
    def f(x):
        return x.sum(0) * (2.0 if x.flags.f_contiguous and not x.flags.c_contiguous else 1.0)

    x = np.asfortranarray(randn(3, 4))
    report = gradguard.check(f, x, vjp=lambda g, x: 2.0 * np.broadcast_to(g, x.shape))
    assert report.verdict == "pass", report
    wrong = gradguard.check(f, x, vjp=lambda g, x: np.broadcast_to(g, x.shape))
    assert wrong.verdict == "fail"


# -- 8. a report where a report can answer --------------------------------------------------


def test_torch_empty_inputs_and_outputs_have_nothing_to_compare():
    torch = _torch()
    empty = torch.zeros(0, 3, dtype=torch.float64)
    w = torch.tensor(randn(3, 2))
    assert_nothing_to_compare(gradguard.check(lambda a: a @ w, empty))
    assert_nothing_to_compare(gradguard.assert_gradients(lambda a: a @ w, empty))
    assert_nothing_to_compare(gradguard.check(lambda x: x[:0], w))
    # Some empty arguments among others: zero columns, the rest is checked.
    mixed = gradguard.check(lambda a, b: a.sum() + (b**2).sum(), empty, w)
    assert mixed.verdict == "pass" and mixed.checked > 0
    assert mixed.arguments[0].checked == 0


def test_jax_tensorflow_numpy_empty_inputs_have_nothing_to_compare():
    x = np.zeros((0, 3))
    assert_nothing_to_compare(gradguard.check(lambda x: (x**2).sum(), x, grad=lambda x: 2 * x))
    jnp = _jax().numpy
    assert_nothing_to_compare(gradguard.check(lambda x: x @ x.T, jnp.zeros((0, 3))))
    tf = _tf()
    assert_nothing_to_compare(gradguard.check(tf.reduce_sum, tf.zeros((0, 3), tf.float64)))


def test_tensorflow_gradient_of_the_wrong_shape_fails_with_both_shapes():
    tf = _tf()
    features = tf.constant(randn(4, 3))
    beta = tf.constant(randn(3))
    for mode in ("full", "probe"):
        # TensorFlow's own bug: silu's gradient for a vector beta is a scalar.
        report = gradguard.check(lambda f, b: tf.nn.silu(f, b), features, beta, mode=mode)
        assert report.verdict == "fail", report
        (text,) = report.diagnosis
        assert text.startswith("b:") and "shape ()" in text and "(3,)" in text
    assert gradguard.check(lambda f, b: tf.nn.silu(f, b), features, tf.constant(0.7)).passed


def test_torch_and_jax_refuse_gradients_of_the_wrong_shape_themselves():
    # Their autodiff checks shapes: the framework's own error, unchanged.
    torch = _torch()

    class WrongShape(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            return x * b

        @staticmethod
        def backward(ctx, g):
            return g, g.sum()

    x, b = torch.tensor(randn(4, 3)), torch.tensor(randn(3))
    with pytest.raises(RuntimeError, match="invalid gradient"):
        gradguard.check(WrongShape.apply, x, b)
    jax = _jax()
    jnp = jax.numpy

    @jax.custom_vjp
    def wrong_shape(x, b):
        return x * b

    wrong_shape.defvjp(lambda x, b: (x * b, None), lambda _, g: (g, g.sum()))
    with pytest.raises(ValueError, match="bwd rule"):
        gradguard.check(wrong_shape, jnp.ones((4, 3)), jnp.ones(3))


def test_torch_complex32_and_float16_outputs_do_not_crash():
    torch = _torch()
    x = torch.tensor(randn(3))
    for f in (lambda x: (x * 1j).to(torch.complex32), lambda x: x.sin().half()):
        for direction in ("rev", "fwd"):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "ComplexHalf support is experimental")
                report = gradguard.check(f, x, direction=direction)
            assert report.verdict in ("pass", "fail", "inconclusive")
            assert report.checked > 0


def test_all_finite_of_complex32():
    torch = _torch()
    import array_api_compat.torch as xp

    from gradguard.core.norms import all_finite

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ComplexHalf support is experimental")
        a = torch.tensor([1.0, 2.0]).to(torch.complex32)
        assert all_finite(a, xp)
        b = torch.tensor([1.0, float("nan")]).to(torch.complex32)
        assert not all_finite(b, xp)


def test_jax_primitive_whose_jaxpr_cannot_be_printed():
    jax = _jax()
    jnp = jax.numpy

    def f(x):
        return jax.lax.mul_p.bind(x, x)  # printing its jaxpr raises KeyError: 'out_dtype'

    x = jnp.asarray(randn(3))
    assert gradguard.check(f, x, direction="fwd").verdict == "pass"
    # Reverse mode: JAX's own transpose rule fails on this binding; gradguard
    # raises JAX's error, not a KeyError of its cache.
    with pytest.raises(TypeError, match="out_dtype"):
        jax.grad(lambda x: f(x).sum())(x)
    with pytest.raises(TypeError, match="out_dtype"):
        gradguard.check(f, x)


def test_tensorflow_rule_without_float64_kernel_falls_back_with_a_note():
    tf = _tf()
    x = tf.constant(randn(1, 5, 5, 2).astype(np.float32))
    w = tf.constant(randn(2, 2, 2, 3).astype(np.float32))

    def conv(x, w):
        return tf.nn.conv2d(x, w, strides=1, padding="VALID", dilations=2)

    report = gradguard.check(conv, x, w)
    assert report.verdict == "pass", report
    note_with(report, "fails in float64")


def test_tensorflow_expm_does_not_take_the_process_down():
    _tf()
    # In a subprocess: pfor over tape.gradient used to kill the process.
    script = textwrap.dedent(
        """
        import numpy as np, tensorflow as tf, gradguard
        x = tf.constant(np.random.default_rng(0).standard_normal((3, 3)).astype(np.float32))
        for options in ({}, {"vectorize": False}, {"direction": "fwd"}, {"mode": "probe"}):
            print(gradguard.check(tf.linalg.expm, x, **options).verdict)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    verdicts = done.stdout.split()
    assert len(verdicts) == 4 and set(verdicts) <= {"pass", "inconclusive"}, done.stdout


def test_torch_vectorize_false_batches_no_derivative():
    torch = _torch()
    calls = []

    class Counting(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x):
            return x.sin()

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            calls.append(tuple(g.shape))
            (x,) = ctx.saved_tensors
            return g * x.cos()

    x = torch.tensor(randn(4))
    assert gradguard.check(Counting.apply, x).verdict == "pass"
    # Batched: one backward for the one-hot rows, one for the dense cotangents.
    assert len(calls) == 2
    calls.clear()
    report = gradguard.check(Counting.apply, x, vectorize=False)
    assert report.verdict == "pass" and report.path == "loop"
    assert len(calls) == 4 + 2  # one backward per cotangent


# -- 9. arrays f uses that are not checked -----------------------------------------------


def test_torch_module_parameters_left_out_by_wrt_are_named_as_not_checked():
    # A model's parameters are checked with its inputs by default (issue 17:
    # tests/test_models_torch.py); those wrt= leaves out are named in a note.
    torch = _torch()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, 3).double()
            self.w = torch.nn.Parameter(torch.tensor(randn(3, 2)))

        def forward(self, x):
            return self.lin(x) @ self.w

    model = Model()
    x = torch.tensor(randn(4, 5))
    for f, args, wrt in (
        (model, (x,), "inputs"),
        (model.forward, (x,), 0),
        (lambda m, x: m(x), (model, x), "x"),
        (lambda x: model(x), (x,), None),
    ):
        report = gradguard.check(f, *args, wrt=wrt)
        assert report.verdict == "pass"
        note = note_with(report, "not checked", "require gradients", "wrt='all'")
        for name in ("lin.weight (3, 5) float64", "lin.bias (3,) float64", "w (3, 2) float64"):
            assert name in note, note
    # A tensor that requires grad outside any module, read by name: by its
    # name (checked with wrt="all": tests/test_models_torch.py).
    scale = torch.tensor(randn(3), requires_grad=True)
    report = gradguard.check(lambda x: x * scale, torch.tensor(randn(3)))
    note = note_with(report, "not checked")
    assert "scale (3,) float64" in note and "wrt='all'" in note
    # One gradguard cannot reach (an attribute of an object): by shape and dtype.
    holder = types.SimpleNamespace(scale=scale)
    report = gradguard.check(lambda x: x * holder.scale, torch.tensor(randn(3)))
    note = note_with(report, "not checked")
    assert "a tensor (3,) float64" in note and "pass them as arguments" in note
    plain = gradguard.check(torch.sin, x)
    assert not any("not checked" in n for n in plain.notes)


def test_jax_pytree_class_argument_is_traversed():
    # Registered pytree classes were passed through whole (and named in a
    # note); since issue 17 their arrays are differentiated like a tuple's.
    jax = _jax()
    jnp = jax.numpy

    @jax.tree_util.register_pytree_node_class
    class Params:
        def __init__(self, w, b):
            self.w, self.b = w, b

        def tree_flatten(self):
            return (self.w, self.b), None

        @classmethod
        def tree_unflatten(cls, aux, children):
            return cls(*children)

    params = Params(jnp.asarray(randn(5, 3)), jnp.asarray(randn(3)))
    x = jnp.asarray(randn(4, 5))
    report = gradguard.check(lambda p, x: jnp.tanh(x @ p.w + p.b), params, x)
    assert report.verdict == "pass"
    assert [a.name for a in report.arguments] == ["p[0]", "p[1]", "x"]
    assert not any("not checked" in n for n in report.notes)


def test_tensorflow_variables_are_named_as_not_checked():
    tf = _tf()
    kernel = tf.Variable(randn(5, 3), name="kernel")
    x = tf.constant(randn(4, 5))
    report = gradguard.check(lambda x: tf.tanh(x @ kernel), x)
    assert report.verdict == "pass"
    assert "kernel:0 (5, 3) float64" in note_with(report, "not checked")
