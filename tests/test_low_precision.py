"""Low precision: the numerical side in float32 (JAX without x64, kernels
that raise on float64), where the steps are a few hundredths of
max(1, |x|) and the stencil spans three of them (issue 16, family 6).

- a jump within reach of the stencil (floor, ceil, round, rem) never makes
  a correct zero derivative ``fail``: shorter steps decide it (``pass``);
- near, not at, a kink (abs, sign, sort, cummax, maximum) or a pole or
  branch point (tan, cbrt, atan2, x**-2) a correct derivative passes;
- only columns that the first step cannot decide are measured again;
- detection does not weaken: a wrong rule still fails, also near a kink,
  where only a shorter step sees it, and at a jump (a straight-through
  estimator claimed as floor's derivative).

JAX's x64 switch is process-wide and other test modules turn it on, so the
JAX cases run in a fresh subprocess with ``JAX_ENABLE_X64=0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradguard

# Each case: name -> (f, points, derivative rule or None for JAX's own).
# Points are ordinary: the nearest jump, kink or pole lies within reach of
# the first float32 step's stencil (about 0.12 max(1, |x|)) or of its 8x
# longer second step, but farther than three of the shortest steps.
_JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import jax, jax.numpy as jnp
    import gradguard

    assert not jax.config.jax_enable_x64

    def off_by(scale, primal, derivative):
        @jax.custom_vjp
        def f(x):
            return primal(x)
        f.defvjp(lambda x: (primal(x), x), lambda x, g: (scale * g * derivative(x),))
        return f

    def straight_through():
        @jax.custom_vjp
        def f(x):
            return jnp.floor(x)
        f.defvjp(lambda x: (jnp.floor(x), None), lambda _, g: (g,))
        return f

    rem = lambda x: jax.lax.rem(x, jnp.float32(0.7))
    cases = {
        "floor": (jnp.floor, [0.3, -2.9, 1.88, -1.38, 0.82]),
        "ceil": (jnp.ceil, [0.3, -2.9, 1.88, -1.38, 0.82]),
        "round": (jnp.round, [0.82, -1.381, -2.754, -2.9008, 1.8796]),
        "rem": (rem, [0.3, -2.9, 1.88, -1.38, 0.82]),
        "abs": (jnp.abs, [0.05, -0.04, 2.0, -1.5]),
        "sign": (jnp.sign, [0.05, -0.04, 2.0, -1.5]),
        "sort": (jnp.sort, [0.3, 0.35, -1.0, 2.0, 0.28]),
        "cummax": (lambda x: jax.lax.cummax(x, axis=0), [0.3, 0.25, 0.33, -1.0, 0.36]),
        "maximum": (lambda x: jnp.maximum(x, 0.1), [0.15, 0.04, 2.0, -1.0]),
        "tan": (jnp.tan, [1.5, -1.49, 0.3, 1.1]),
        "cbrt": (jnp.cbrt, [0.03, -0.05, 1.0, 2.0]),
        "atan2": (lambda x: jnp.arctan2(x[:2], x[2:]), [0.05, -0.03, 0.04, -0.06]),
        "pow-2": (lambda x: x**-2, [0.08, -0.1, 1.0, 2.5]),
        "sin": (jnp.sin, [0.05, -0.04, 2.0, -1.5]),
        "abs-1%": (off_by(1.01, jnp.abs, jnp.sign), [0.05, -0.04, 2.0, -1.5]),
        "tan-1%": (off_by(1.01, jnp.tan, lambda x: 1 / jnp.cos(x) ** 2), [1.5, 0.3]),
        "floor-straight-through": (straight_through(), [0.3, -2.9, 1.88, -1.38]),
    }
    results = {}
    for name, (f, x) in cases.items():
        r = gradguard.check(f, jnp.asarray(x, dtype=jnp.float32))
        results[name] = {
            "verdict": r.verdict,
            "precision": r.precision,
            "evaluations": r.evaluations,
            "text": str(r),
        }
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def jax_without_x64():
    pytest.importorskip("jax")
    env = dict(os.environ, JAX_ENABLE_X64="0", OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "name",
    ["floor", "ceil", "round", "rem", "abs", "sign", "sort", "cummax", "maximum", "sin"],
)
def test_jax_without_x64_jumps_and_kinks_within_reach_pass(jax_without_x64, name):
    result = jax_without_x64[name]
    assert result["precision"] == "float32", result["text"]
    assert result["verdict"] == "pass", result["text"]


@pytest.mark.parametrize("name", ["tan", "cbrt", "atan2", "pow-2"])
def test_jax_without_x64_near_a_pole_never_fails(jax_without_x64, name):
    result = jax_without_x64[name]
    assert result["precision"] == "float32", result["text"]
    assert result["verdict"] == "pass", result["text"]


@pytest.mark.parametrize("name", ["abs-1%", "tan-1%", "floor-straight-through"])
def test_jax_without_x64_wrong_rule_still_fails(jax_without_x64, name):
    result = jax_without_x64[name]
    assert result["precision"] == "float32", result["text"]
    assert result["verdict"] == "fail", result["text"]


# -- torch: float32-only kernels -------------------------------------------------


def _float32_only(torch, primal, derivative=None, scale=1.0):
    """``primal`` as a kernel that raises on any dtype but float32; its
    backward is ``scale`` times ``derivative(x) * g``, or torch's own."""

    class Only32(torch.autograd.Function):
        @staticmethod
        def forward(x):
            if x.dtype != torch.float32:
                raise TypeError("this kernel exists for float32 only")
            return primal(x)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            if derivative is not None:
                return scale * g * derivative(x)
            x = x.detach().requires_grad_()
            with torch.enable_grad():
                (d,) = torch.autograd.grad(primal(x), x, g)
            return scale * d

    return Only32.apply


def _torch_cases(torch):
    def rem(x):  # x mod 0.7, its derivative 1 between the jumps
        return x - 0.7 * torch.floor(x / 0.7)

    return {
        "floor": (torch.floor, [0.3, -2.9, 1.88, -1.38, 0.82]),
        "round": (torch.round, [0.82, -1.381, -2.754, -2.9008, 1.8796]),
        "rem": (rem, [0.3, -2.9, 1.88, -1.38, 0.82]),
        "abs": (torch.abs, [0.05, -0.04, 2.0, -1.5]),
        "sort": (lambda x: torch.sort(x).values, [0.3, 0.35, -1.0, 2.0, 0.28]),
        "cummax": (lambda x: torch.cummax(x, 0).values, [0.3, 0.25, 0.33, -1.0, 0.36]),
        "tan": (torch.tan, [1.5, -1.49, 0.3, 1.1]),
        "pow-2": (lambda x: x**-2, [0.08, -0.1, 1.0, 2.5]),
    }


@pytest.mark.parametrize("name", ["floor", "round", "rem", "abs", "sort", "cummax", "tan", "pow-2"])
def test_torch_float32_only_near_jumps_kinks_and_poles_passes(name):
    torch = pytest.importorskip("torch")
    primal, x = _torch_cases(torch)[name]
    r = gradguard.check(_float32_only(torch, primal), torch.tensor(x, dtype=torch.float32))
    assert r.precision == "float32", str(r)
    assert r.verdict == "pass", str(r)


def test_torch_float32_only_wrong_rule_near_a_kink_fails():
    """abs at 0.05 and -0.04: the first stencil straddles the kink; only a
    shorter step measures the slope, and the 1% error shows there."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([0.05, -0.04, 2.0, -1.5], dtype=torch.float32)
    f = _float32_only(torch, torch.abs, torch.sign, scale=1.01)
    r = gradguard.check(f, x)
    assert r.precision == "float32", str(r)
    assert r.verdict == "fail", str(r)
    wrong = {m.index for m in r.worst if m.status == "wrong" and m.kind == "entry"}
    assert wrong == {(0,), (1,), (2,), (3,)}, str(r)


def test_torch_float32_only_straight_through_floor_fails():
    """A rule that claims floor's derivative is 1 (a straight-through
    estimator) is wrong everywhere but at the jumps, also in float32."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([0.3, -2.9, 1.88, -1.38], dtype=torch.float32)
    f = _float32_only(torch, torch.floor, torch.ones_like)
    r = gradguard.check(f, x)
    assert r.verdict == "fail", str(r)
    assert r.wrong >= 4 and r.uncertain == 0, str(r)


def test_torch_float32_only_measures_again_only_undecided_columns():
    """abs and sin at the same points, one entry 0.05 from abs's kink: abs
    costs one stencil more, for that column alone, at a quarter step."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([0.05, 2.0, -1.5, 2.5, 1.3], dtype=torch.float32)
    smooth = gradguard.check(_float32_only(torch, torch.sin), x)
    kinked = gradguard.check(_float32_only(torch, torch.abs), x)
    assert smooth.verdict == kinked.verdict == "pass", f"{smooth}\n{kinked}"
    assert kinked.evaluations - smooth.evaluations == 6  # accuracy 6, one column


@pytest.mark.parametrize("name", ["floor", "round", "rem"])
def test_torch_float32_only_staircase_far_from_zero_never_fails(name):
    """At |x| of hundreds the float32 steps are longer than a stair: from
    near the middle of one, the staircase is odd about x at every such
    scale, looks smooth and has slope 1. A step shorter than the stair must
    see it before anything is called wrong."""
    torch = pytest.importorskip("torch")
    primal, _ = _torch_cases(torch)[name]
    x = torch.tensor([-262.01376, 896.6569, -859.1589, 243.76718], dtype=torch.float32)
    r = gradguard.check(_float32_only(torch, primal), x)
    assert r.verdict != "fail" and r.wrong == 0, str(r)


def test_torch_float32_only_rough_at_every_step_stays_undecided():
    """floor at 1e-4 above a jump: every step's stencil straddles it; the
    check says so instead of guessing."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([1.0001, 0.5], dtype=torch.float32)
    r = gradguard.check(_float32_only(torch, torch.floor), x)
    assert r.verdict == "inconclusive", str(r)
    assert r.wrong == 0
    assert {m.index for m in r.worst if m.status == "uncertain"} == {(0,)}, str(r)


def test_torch_float32_only_straight_through_near_a_jump_still_fails():
    """The wrong rule, with one entry whose jump every step straddles: that
    entry is undecided, the others still fail."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([1.0001, 0.5, -2.3], dtype=torch.float32)
    r = gradguard.check(_float32_only(torch, torch.floor, torch.ones_like), x)
    assert r.verdict == "fail", str(r)
    entries = {m.index: m.status for m in r.worst if m.kind == "entry"}
    assert entries == {(0,): "uncertain", (1,): "wrong", (2,): "wrong"}, str(r)


@pytest.mark.parametrize("name", ["abs", "floor", "tan", "sort"])
def test_torch_float32_only_probe_mode_shortens_steps(name):
    """Probe mode moves every coordinate at once: a direction whose stencil
    reaches a kink, jump or pole is measured again along shorter steps."""
    torch = pytest.importorskip("torch")
    functions = {
        "abs": torch.abs,
        "floor": torch.floor,
        "tan": torch.tan,
        "sort": lambda x: torch.sort(x).values,
    }
    x = torch.tensor([0.05, -0.04, 2.2, -1.5, 0.7, 1.1], dtype=torch.float32)
    r = gradguard.check(_float32_only(torch, functions[name]), x, mode="probe")
    assert r.precision == "float32", str(r)
    assert r.verdict == "pass", str(r)


def test_torch_float32_only_probe_mode_wrong_rule_near_a_kink_fails():
    torch = pytest.importorskip("torch")
    x = torch.tensor([0.05, -0.04, 2.2, -1.5, 0.7, 1.1], dtype=torch.float32)
    f = _float32_only(torch, torch.abs, torch.sign, scale=1.01)
    r = gradguard.check(f, x, mode="probe")
    assert r.verdict == "fail", str(r)


# -- TensorFlow: a float32-only function --------------------------------------------


def test_tensorflow_float32_only_floor_and_a_wrong_rule():
    tf = pytest.importorskip("tensorflow")

    def only32(primal, derivative):
        @tf.custom_gradient
        def f(x):
            if x.dtype != tf.float32:
                raise TypeError("this kernel exists for float32 only")

            def grad(g):
                return g * derivative(x)

            return primal(x), grad

        return f

    x = tf.constant(np.array([0.3, -2.9, 1.88, -1.38], dtype=np.float32))
    right = gradguard.check(only32(tf.math.floor, tf.zeros_like), x)
    assert right.precision == "float32", str(right)
    assert right.verdict == "pass", str(right)
    wrong = gradguard.check(only32(tf.math.floor, tf.ones_like), x)
    assert wrong.verdict == "fail", str(wrong)
    near = tf.constant(np.array([0.05, -0.04, 2.0], dtype=np.float32))
    kink = gradguard.check(only32(tf.math.abs, lambda x: 1.01 * tf.math.sign(x)), near)
    assert kink.verdict == "fail", str(kink)


# -- float64: a jump within reach of the short step ---------------------------------


def test_float64_round_to_three_decimals_gets_shorter_steps():
    """round(x, decimals=3) jumps every 0.001: at 20 points, some stencil of
    float64 step reaches a jump. Shorter steps decide those entries. The
    same staircase as a float32-only kernel with a rule that claims a slope
    of 0.01 still fails."""
    torch = pytest.importorskip("torch")
    x = torch.tensor(np.random.default_rng(0).uniform(-3, 3, 20), dtype=torch.float64)

    def rounded(x):
        return torch.round(x, decimals=3)

    r = gradguard.check(rounded, x)
    assert r.precision == "float64", str(r)
    assert r.verdict == "pass", str(r)
    wrong = _float32_only(torch, rounded, lambda x: torch.full_like(x, 0.01))
    r = gradguard.check(wrong, x.float())
    assert r.verdict == "fail", str(r)
