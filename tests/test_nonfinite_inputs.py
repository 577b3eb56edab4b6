"""Issue 16: points with entries that are not finite get an answer.

PyTorch's OpInfo sample for ``_safe_softmax`` masks entries with -inf, and
``torch.autograd.gradcheck`` accepts it. gradguard holds such entries (NaN,
inf, -inf) fixed: it differentiates and compares the finite entries alone,
names the held ones in a note, and reports "nothing to compare" where no
finite entry is left. Mismatches name entries by their index in the
argument itself. Every framework case has a wrong rule beside the right
one, so that each test can fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradguard

INF = math.inf

# -- helpers ----------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _tf():
    return pytest.importorskip("tensorflow")


def masked_point(seed=0):
    """A 3 x 4 point with -inf at (0, 1) and (2, 3), as an attention mask has."""
    x = np.random.default_rng(seed).standard_normal((3, 4))
    x[0, 1] = -INF
    x[2, 3] = -INF
    return x


#: The finite entry that the wrong rules below get wrong, by its index in the
#: argument: after the -inf at (0, 1), so that a compacted position would differ.
WRONG_AT = (1, 2)


def softmax_np(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_vjp_np(g, x):
    s = softmax_np(x)
    return s * (g - (g * s).sum(-1, keepdims=True))


def assert_held_note(report, name, count, kinds):
    if count == 1:
        tail = "1 entry that is not finite ({}) is held fixed; its derivative is not compared"
    else:
        tail = f"{count} entries that are not finite ({{}}) are held fixed; their derivatives are"
        tail += " not compared"
    expected = f"{name}: " + tail.format(kinds)
    assert expected in report.notes, report.notes


def assert_wrong_at(report, name, index):
    assert report.verdict == "fail", report
    worst = report.worst[0]
    assert (worst.argument, worst.index) == (name, index), report
    assert report.arguments[0].wrong > 0


def assert_nothing_to_compare(report, name):
    assert report.verdict == "pass", report
    assert report.checked == 0
    assert report.notes[-1] == (
        f"nothing to compare: no entry of the arrays to differentiate is finite ({name}); "
        "entries that are not finite are held fixed"
    ), report.notes


# -- torch -------------------------------------------------------------------------------


def _torch_exp_with_wrong_entry():
    """exp as a custom Function whose backward is off by 1e-4 relative at WRONG_AT."""
    torch = _torch()

    class Exp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.exp()

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            scale = torch.ones_like(x)
            scale[WRONG_AT] = 1.0 + 1e-4
            return grad * x.exp() * scale

    return Exp.apply


@pytest.mark.parametrize("direction", ["rev", "fwd", "both"])
def test_torch_masked_softmax_passes_with_a_note(direction):
    torch = _torch()
    x = torch.tensor(masked_point())
    before = x.clone()
    report = gradguard.check(lambda x: torch.softmax(x, -1), x, direction=direction)
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 2, "-inf")
    assert report.arguments[0].shape == (3, 4)
    assert torch.equal(x, before)  # -inf == -inf: bit for bit the caller's
    # The held entries are not compared: fewer entries than at a finite point.
    finite = gradguard.check(
        lambda x: torch.softmax(x, -1), torch.randn(3, 4).double(), direction=direction
    )
    assert 0 < report.checked < finite.checked


def test_torch_safe_softmax_of_opinfo_passes():
    torch = _torch()
    safe_softmax = getattr(torch.ops.aten, "_safe_softmax", None)
    if safe_softmax is None:
        pytest.skip("this torch has no aten._safe_softmax")
    x = torch.tensor(masked_point())
    x[1, :] = -INF  # a row masked whole: _safe_softmax returns zeros there
    report = gradguard.check(lambda x: safe_softmax(x, -1), x)
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 6, "-inf")


def test_torch_wrong_rule_on_a_finite_entry_fails_naming_its_own_index():
    torch = _torch()
    exp = _torch_exp_with_wrong_entry()
    report = gradguard.check(exp, torch.tensor(masked_point()))
    assert_wrong_at(report, "x", WRONG_AT)
    assert_held_note(report, "x", 2, "-inf")
    right = gradguard.check(torch.exp, torch.tensor(masked_point()))
    assert right.verdict == "pass", right


def test_torch_rule_wrong_only_at_held_entries_passes():
    """What a rule returns at held entries is not compared (as gradcheck, whose
    finite difference there is 0 while autograd may say anything)."""
    torch = _torch()

    class Exp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.exp()

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return torch.where(torch.isfinite(x), grad * x.exp(), 123.0)

    report = gradguard.check(Exp.apply, torch.tensor(masked_point()))
    assert report.verdict == "pass", report


def test_torch_nan_entries_are_held_too():
    torch = _torch()
    x = torch.tensor(masked_point())
    x[1, 0] = math.nan
    before = x.clone()

    def f(x):
        return torch.softmax(torch.where(torch.isnan(x), 0.0, x), -1)

    report = gradguard.check(f, x)
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 3, "NaN, -inf")
    assert torch.equal(torch.isnan(x), torch.isnan(before))
    assert torch.equal(torch.nan_to_num(x), torch.nan_to_num(before))


def test_torch_float32_point_with_inf_is_checked_in_float64():
    torch = _torch()
    x = torch.tensor(masked_point(), dtype=torch.float32)
    report = gradguard.check(lambda x: torch.softmax(x, -1), x)
    assert report.verdict == "pass", report
    assert report.precision == "float64"
    bad = gradguard.check(_torch_exp_with_wrong_entry(), torch.tensor(masked_point()).float())
    assert bad.verdict != "pass", bad


def test_torch_probe_mode_and_loop_path():
    torch = _torch()
    x = torch.tensor(masked_point())
    for options in ({"mode": "probe"}, {"vectorize": False}):
        report = gradguard.check(lambda x: torch.softmax(x, -1), x, **options)
        assert report.verdict == "pass", (options, report)
        wrong = gradguard.check(_torch_exp_with_wrong_entry(), x, **options)
        assert wrong.verdict == "fail", (options, wrong)


def test_torch_complex_point_with_inf():
    torch = _torch()
    z = torch.tensor(masked_point()) + 1j * torch.tensor(masked_point(seed=1)).nan_to_num(0.0)

    def f(z):
        return torch.where(torch.isfinite(z), z, 0.0).exp()

    report = gradguard.check(f, z)
    assert report.verdict == "pass", report
    assert_held_note(report, "z", 2, "-inf")


def test_torch_second_argument_all_inf_leaves_the_first_checked():
    torch = _torch()
    x = torch.randn(3, dtype=torch.float64)
    mask = torch.full((3,), -INF, dtype=torch.float64)
    report = gradguard.check(lambda x, mask: torch.softmax(torch.maximum(x, mask), -1), x, mask)
    assert report.verdict == "pass", report
    assert report.checked > 0
    assert_held_note(report, "mask", 3, "-inf")


def test_torch_every_entry_held_is_nothing_to_compare():
    torch = _torch()
    report = gradguard.check(torch.exp, torch.full((2, 3), -INF, dtype=torch.float64))
    assert_nothing_to_compare(report, "args[0]")
    assert_held_note(report, "args[0]", 6, "-inf")
    assert report.arguments[0].shape == (2, 3)


# -- JAX ---------------------------------------------------------------------------------


def _jax_exp_with_wrong_entry():
    jax = _jax()
    jnp = jax.numpy

    @jax.custom_vjp
    def exp(x):
        return jnp.exp(x)

    def forward(x):
        return jnp.exp(x), x

    def backward(x, g):
        return (g * jnp.exp(x) * jnp.ones_like(x).at[WRONG_AT].set(1.0 + 1e-4),)

    exp.defvjp(forward, backward)
    return exp


def test_jax_masked_softmax_passes_and_a_wrong_rule_fails():
    jax = _jax()
    jnp = jax.numpy
    x = jnp.asarray(masked_point())
    report = gradguard.check(lambda x: jax.nn.softmax(x, axis=-1), x, direction="both")
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 2, "-inf")
    assert np.array_equal(np.asarray(x), masked_point())
    wrong = gradguard.check(_jax_exp_with_wrong_entry(), x)
    assert_wrong_at(wrong, "x", WRONG_AT)


def test_jax_cached_code_follows_the_mask():
    """Two checks of one f with as many held entries in other places: the
    second must not run the code compiled for the first mask."""
    jax = _jax()
    jnp = jax.numpy
    exp = _jax_exp_with_wrong_entry()
    first = masked_point()
    second = np.random.default_rng(0).standard_normal((3, 4))
    second[WRONG_AT] = -INF  # the wrong entry held here: nothing wrong to see
    second[0, 0] = -INF
    assert gradguard.check(exp, jnp.asarray(first)).verdict == "fail"
    report = gradguard.check(exp, jnp.asarray(second))
    assert report.verdict == "pass", report
    assert gradguard.check(exp, jnp.asarray(first)).verdict == "fail"


def test_jax_every_entry_held_is_nothing_to_compare():
    jax = _jax()
    report = gradguard.check(jax.numpy.exp, jax.numpy.full((4,), -INF))
    assert_nothing_to_compare(report, "x")


# -- NumPy, with a rule -------------------------------------------------------------------


def test_numpy_vjp_rule_on_a_masked_point():
    x = masked_point()
    before = x.copy()
    report = gradguard.check(softmax_np, x, vjp=softmax_vjp_np)
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 2, "-inf")
    assert np.array_equal(x, before)

    def wrong_vjp(g, x):
        out = softmax_vjp_np(g, x)
        out[WRONG_AT] *= 1.0 + 1e-4
        return out

    assert_wrong_at(gradguard.check(softmax_np, x, vjp=wrong_vjp), "x", WRONG_AT)


def test_numpy_grad_rule_with_nan_entry():
    x = np.array([1.0, math.nan, -2.0, 0.5])

    def f(x):
        return float(np.nansum(x**3))

    def grad(x):
        return np.nan_to_num(3 * x**2)

    report = gradguard.check(f, x, grad=grad)
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 1, "NaN")

    def wrong(x):
        g = grad(x)
        g[2] *= 1.0 + 1e-4
        return g

    assert_wrong_at(gradguard.check(f, x, grad=wrong), "x", (2,))


def test_numpy_point_all_nan_is_nothing_to_compare():
    report = gradguard.check(lambda x: float(np.nansum(x)), np.array(math.nan), grad=np.zeros_like)
    assert_nothing_to_compare(report, "x")
    assert_held_note(report, "x", 1, "NaN")


# -- TensorFlow --------------------------------------------------------------------------


def test_tensorflow_masked_softmax_passes_and_a_wrong_rule_fails():
    tf = _tf()
    x = tf.constant(masked_point())
    report = gradguard.check(lambda x: tf.nn.softmax(x, axis=-1), x, direction="both")
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 2, "-inf")
    assert np.array_equal(x.numpy(), masked_point())

    @tf.custom_gradient
    def exp(x):
        y = tf.exp(x)
        scale = np.ones((3, 4))
        scale[WRONG_AT] = 1.0 + 1e-4
        return y, lambda g: g * y * scale

    assert_wrong_at(gradguard.check(exp, x), "x", WRONG_AT)


def test_tensorflow_many_rows_take_the_traced_loop():
    tf = _tf()
    x = np.random.default_rng(2).standard_normal((8, 8))
    x[:, 3] = -INF
    report = gradguard.check(lambda x: tf.nn.softmax(x, axis=-1), tf.constant(x))
    assert report.verdict == "pass", report
    assert_held_note(report, "x", 8, "-inf")
