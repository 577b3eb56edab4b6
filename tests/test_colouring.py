"""Columns that share no output (as the analytical Jacobian has it) are
measured together: one 4-point stencil per colour of a distance-2 colouring,
instead of points per column. Elementwise rules take one colour; blocks
(softmax over rows) as many as a block is wide; bands (convolutions) as many
as the band.

These tests hold that shortcut to what the column-by-column path promises,
and above all to catching what the analytical side misses: an entry it has
as zero shows in its colour's measurement, and the check then goes column by
column and locates it.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradguard
from gradguard.engine.strategies import colouring as _colouring_module
from reports import assert_fail_at, diagnosis, wrong
from test_screen import N, _derivative, _sin_times_x, _x


def _vjp(g, x):
    return (g * _derivative(x),)


def _together(report):
    return any("measured together" in note for note in report.notes)


def _column_by_column(monkeypatch, f, *args, **options):
    monkeypatch.setattr(_colouring_module, "COLOUR_COLUMNS", False)
    report = gradguard.check(f, *args, **options)
    monkeypatch.undo()
    return report


def test_an_elementwise_rule_settles_in_a_few_evaluations(monkeypatch):
    x = _x()
    report = gradguard.check(_sin_times_x, x, vjp=_vjp, mode="full")
    assert report.verdict == "pass", str(report)
    assert _together(report), str(report)
    assert report.evaluations <= 8  # f at x, maybe again for noise, and 4 points
    # The same books as column by column: every entry, the same error.
    other = _column_by_column(monkeypatch, _sin_times_x, x, vjp=_vjp, mode="full")
    assert other.evaluations >= 2 * N and not _together(other)
    assert report.checked == other.checked
    assert report.arguments[0].checked == other.arguments[0].checked
    assert report.relative_error < 1e-10 and other.relative_error < 1e-10
    # The worst list names diagonal entries, with the true derivative.
    d = _derivative(x)
    entries = [m for m in report.worst if m.kind == "entry"]
    assert entries, str(report)
    for m in entries:
        (i,), (j,) = m.index, m.output_index
        assert i == j and m.status == "ok"
        assert m.analytical == pytest.approx(d[i], abs=1e-12)


@pytest.mark.parametrize("position", [0, 777, N - 1])
def test_one_wrong_entry_is_located_column_by_column(position):
    x = _x()

    def vjp(g, x):
        d = _derivative(x)
        d[position] *= 1.001
        return (g * d,)

    report = gradguard.check(_sin_times_x, x, vjp=vjp, mode="full")
    assert_fail_at(report, "x", indices=[(position,)])
    assert not _together(report)


def test_an_entry_the_rule_misses_is_caught_and_located():
    """f[i] also depends on x[i - 1]; the rule has only the diagonal, so its
    Jacobian looks elementwise. The combined measurement sees x[i - 1]'s
    step in every output, and the columns then locate the missing entries."""
    x = _x()

    def f(x):
        return np.sin(x) * x + 1e-3 * np.roll(x, 1)

    report = gradguard.check(f, x, vjp=_vjp, mode="full")
    assert report.verdict == "fail", str(report)
    assert report.wrong >= N, str(report)
    for m in wrong(report):
        if m.kind == "entry":
            (i,), (j,) = m.index, m.output_index
            assert j == (i + 1) % N, str(report)
            assert m.analytical == 0 and m.numerical == pytest.approx(1e-3, rel=1e-6)


def test_missing_entries_that_cancel_at_equal_steps_are_caught():
    """x[i] - x[i - 1] with a rule that returns zeros: every output depends on
    no entry as the rule has it. With every x in [-1, 1] the steps are equal,
    and one equal step in every entry would move each output by exactly
    nothing; random weights on the steps make it move."""
    x = np.linspace(-0.9, 0.9, N)

    def f(x):
        return x - np.roll(x, 1)

    report = gradguard.check(f, x, vjp=lambda g, x: (np.zeros_like(x),), mode="full")
    assert report.verdict == "fail", str(report)
    assert not _together(report)


def test_a_permutation_settles_and_a_wrong_one_is_caught():
    perm = np.random.default_rng(3).permutation(N)
    x = _x()

    def f(x):
        return 2.0 * x[perm] ** 3

    def vjp_for(order):
        def vjp(g, x):
            grad = np.zeros_like(x)
            grad[order] = g * 6.0 * x[order] ** 2
            return (grad,)

        return vjp

    report = gradguard.check(f, x, vjp=vjp_for(perm), mode="full")
    assert report.verdict == "pass" and _together(report), str(report)
    swapped = perm.copy()
    swapped[[10, 11]] = swapped[[11, 10]]
    report = gradguard.check(f, x, vjp=vjp_for(swapped), mode="full")
    assert report.verdict == "fail", str(report)
    located = {(m.index, m.output_index) for m in wrong(report) if m.kind == "entry"}
    assert located & {((perm[10],), (11,)), ((perm[11],), (10,))}, str(report)


def test_each_argument_settles_on_its_own():
    x, y = _x(seed=1), _x(seed=2)

    def f(x, y):
        return x * np.sin(y)

    def vjp_with(dy_error):
        def vjp(g, x, y):
            dy = x * np.cos(y)
            dy[5] += dy_error
            return g * np.sin(y), g * dy

        return vjp

    report = gradguard.check(f, x, y, vjp=vjp_with(0.0), mode="full")
    assert report.verdict == "pass", str(report)
    assert sum("measured together" in note for note in report.notes) == 2
    report = gradguard.check(f, x, y, vjp=vjp_with(1e-3), mode="full")
    assert_fail_at(report, "y", indices=[(5,)])
    # x still settled together; y went column by column.
    assert [note.split(":")[0] for note in report.notes if "together" in note] == ["x"]
    by_name = {a.name: a for a in report.arguments}
    assert by_name["x"].wrong == 0 and by_name["x"].checked >= N * N


def test_a_kink_gets_the_same_verdict_as_column_by_column(monkeypatch):
    x = _x()
    x[[3, 900]] = 0.0

    def relu_vjp(g, x):
        return (g * (x > 0),)

    report = gradguard.check(lambda x: np.maximum(x, 0.0), x, vjp=relu_vjp, mode="full")
    other = _column_by_column(
        monkeypatch, lambda x: np.maximum(x, 0.0), x, vjp=relu_vjp, mode="full"
    )
    assert report.verdict == other.verdict == "inconclusive", str(report)
    assert report.uncertain == other.uncertain


def test_steps_far_apart_go_column_by_column():
    """An entry 1000 times larger than the rest has a step 1000 times longer:
    an entry the rule missed in its column would show 1000 times smaller in
    another column's output, so such an argument is not measured at once."""
    x = _x()
    x[0] = 1000.0
    report = gradguard.check(_sin_times_x, x, vjp=_vjp, mode="full")
    assert report.verdict == "pass", str(report)
    assert not _together(report) and report.evaluations >= 2 * N


def test_a_dense_jacobian_is_not_grouped():
    x = _x()

    def f(x):
        return np.tanh(x + np.mean(x))

    def vjp(g, x):
        d = g * (1 - np.tanh(x + np.mean(x)) ** 2)
        return (d + np.sum(d) / N,)

    report = gradguard.check(f, x, vjp=vjp, mode="full")
    assert report.verdict == "pass" and not _together(report), str(report)


def _framework_rule(name, scale):
    """sin(x) * x in framework ``name`` with a custom rule whose derivative
    is multiplied by ``scale``; and the point, as that framework's array."""
    x = _x()
    if name == "torch":
        torch = pytest.importorskip("torch")
        factor = torch.from_numpy(scale)

        class SinTimesX(torch.autograd.Function):
            generate_vmap_rule = True

            @staticmethod
            def forward(x):
                return torch.sin(x) * x

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(inputs[0])

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return g * (torch.cos(x) * x + torch.sin(x)) * factor

        def f(x):
            return SinTimesX.apply(x)

        return f, torch.from_numpy(x)
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)
        jnp = jax.numpy

        @jax.custom_vjp
        def f(x):
            return jnp.sin(x) * x

        f.defvjp(
            lambda x: (f(x), x),
            lambda x, g: (g * (jnp.cos(x) * x + jnp.sin(x)) * scale,),
        )
        return f, jnp.asarray(x)
    tf = pytest.importorskip("tensorflow")

    @tf.custom_gradient
    def f(x):
        def grad(g):
            return g * (tf.cos(x) * x + tf.sin(x)) * scale

        return tf.sin(x) * x, grad

    return f, tf.constant(x)


@pytest.mark.parametrize("name", ["torch", "jax", "tensorflow"])
def test_each_framework_settles_together_and_catches_a_wrong_rule(name):
    """Through each framework's own autodiff, running a custom rule."""
    report = gradguard.check(*_framework_rule(name, np.ones(N)), mode="full")
    assert report.verdict == "pass" and _together(report), str(report)
    scale = np.ones(N)
    scale[321] = 1.001
    report = gradguard.check(*_framework_rule(name, scale), mode="full")
    assert_fail_at(report, "x", indices=[(321,)])


def test_an_executor_gives_the_same_report():
    from concurrent.futures import ThreadPoolExecutor

    x = _x(600)
    reference = gradguard.check(_sin_times_x, x, vjp=_vjp, mode="full")
    with ThreadPoolExecutor(2) as pool:
        report = gradguard.check(_sin_times_x, x, vjp=_vjp, mode="full", executor=pool)
    assert _together(reference) and _together(report), str(report)
    assert report.verdict == reference.verdict == "pass"
    assert report.relative_error == reference.relative_error
    assert report.worst == reference.worst


# -- blocks, bands and irregular patterns ----------------------------------------------

ROW = 50  # the width of a block: softmax over rows of ROW


def _softmax_rows(x):
    r = np.reshape(x, (-1, ROW))
    e = np.exp(r - r.max(axis=1, keepdims=True))
    return np.reshape(e / e.sum(axis=1, keepdims=True), -1)


def _softmax_rows_vjp(g, x):
    s = np.reshape(_softmax_rows(x), (-1, ROW))
    g = np.reshape(g, (-1, ROW))
    return (np.reshape(s * (g - np.sum(g * s, axis=1, keepdims=True)), -1),)


def _groups(report):
    """The number of colours the note names, or None when nothing settled."""
    for note in report.notes:
        if "measured together" in note:
            return int(note.split(" in ")[1].split(" group")[0])
    return None


def test_softmax_over_rows_takes_one_stencil_per_column_of_a_row(monkeypatch):
    x = _x()  # 30 rows of 50
    report = gradguard.check(_softmax_rows, x, vjp=_softmax_rows_vjp, mode="full")
    assert report.verdict == "pass", str(report)
    assert _groups(report) == ROW, str(report)
    assert report.evaluations <= 4 * ROW + 4, str(report)
    other = _column_by_column(monkeypatch, _softmax_rows, x, vjp=_softmax_rows_vjp, mode="full")
    assert other.verdict == "pass" and other.evaluations >= 2 * N
    assert report.checked == other.checked
    assert report.relative_error < 1e-9 and other.relative_error < 1e-9


def _mix_rows(a):
    """x in rows of ROW, each row times ``a``: a block-diagonal Jacobian."""

    def f(x):
        return np.reshape(np.reshape(x, (-1, ROW)) @ a, -1)

    return f


def test_a_block_rule_missing_an_off_diagonal_term_fails_where_it_is():
    """The rule has a[3, 7] as zero: in every block, output 7 misses its
    dependence on entry 3. Its colour's stencil moves output 7 by input 3's
    step, where the rule says nothing of that colour moves it."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((ROW, ROW))
    rule = a.copy()
    rule[3, 7] = 0.0

    def vjp(g, x):
        return (np.reshape(np.reshape(g, (-1, ROW)) @ rule.T, -1),)

    x = _x()
    report = gradguard.check(_mix_rows(a), x, vjp=vjp, mode="full")
    blocks = N // ROW
    assert_fail_at(report, "x", indices=[(b * ROW + 3,) for b in range(blocks)])
    # One wrong entry per block, each also in the dense cotangents' products.
    assert f"{blocks} of the {blocks * ROW * ROW} nonzero" in diagnosis(report), str(report)
    for m in wrong(report):
        if m.kind == "entry":
            ((i,), (j,)) = m.index, m.output_index
            assert j == i - 3 + 7 and m.analytical == 0.0, str(report)
            assert m.numerical == pytest.approx(a[3, 7], rel=1e-6)
    # The right rule settles in ROW colours.
    good = gradguard.check(
        _mix_rows(a),
        x,
        vjp=lambda g, x: (np.reshape(np.reshape(g, (-1, ROW)) @ a.T, -1),),
        mode="full",
    )
    assert good.verdict == "pass" and _groups(good) == ROW, str(good)


TAPS = np.array([0.25, -0.5, 1.0, 0.75, -0.125])


def _convolve(x):
    return np.convolve(x, TAPS, mode="same")


def _convolve_vjp(taps):
    def vjp(g, x):
        # The adjoint of 'same' convolution with an odd kernel: correlation.
        return (np.convolve(g, taps[::-1], mode="same"),)

    return vjp


def test_a_convolution_takes_one_stencil_per_tap():
    x = _x()
    report = gradguard.check(_convolve, x, vjp=_convolve_vjp(TAPS), mode="full")
    assert report.verdict == "pass", str(report)
    assert _groups(report) == TAPS.size and report.evaluations <= 4 * TAPS.size + 4


def test_a_convolution_rule_missing_a_tap_fails_on_that_band():
    """The rule drops the tap two places off the diagonal: a band the
    analytical side has as zeros, which the colours' stencils see."""
    taps = TAPS.copy()
    taps[0] = 0.0
    x = _x()
    report = gradguard.check(_convolve, x, vjp=_convolve_vjp(taps), mode="full")
    assert report.verdict == "fail", str(report)
    located = [m for m in wrong(report) if m.kind == "entry"]
    assert located, str(report)
    for m in located:
        ((i,), (j,)) = m.index, m.output_index
        assert i - j == 2 and m.analytical == 0.0, str(report)
        assert m.numerical == pytest.approx(TAPS[0], rel=1e-6)


def test_an_irregular_pattern_is_coloured_greedily_and_a_missed_entry_caught():
    """Each output depends on its own entry and on one elsewhere: a pattern
    no residue colouring fits, coloured greedily in a few colours."""
    perm = np.random.default_rng(11).permutation(N)
    x = _x()

    def f(x):
        return np.sin(x) + 0.5 * x[perm] ** 2

    def vjp_for(weight):
        def vjp(g, x):
            grad = g * np.cos(x)
            np.add.at(grad, perm, weight * g * x[perm])
            return (grad,)

        return vjp

    report = gradguard.check(f, x, vjp=vjp_for(1.0), mode="full")
    assert report.verdict == "pass", str(report)
    assert _groups(report) is not None and _groups(report) <= 6, str(report)
    assert report.evaluations <= 4 * 6 + 4, str(report)
    # A rule without the second term: every output misses one entry.
    report = gradguard.check(f, x, vjp=vjp_for(0.0), mode="full")
    assert report.verdict == "fail" and report.wrong >= N - 1, str(report)


@pytest.mark.parametrize("n", [100, 511, 512, 513])
def test_no_cliff_between_neighbouring_sizes(n):
    """An elementwise rule settles in one stencil at every size, not only
    past the screen's threshold."""
    report = gradguard.check(_sin_times_x, _x(n), vjp=_vjp, mode="full")
    assert report.verdict == "pass" and report.evaluations <= 8, str(report)


def test_a_small_check_measured_together_fills_its_error_map():
    """Small checks carry error / tolerance per entry (report.error_map, the
    plot's heatmap): settled colours fill it where the analytical Jacobian
    has entries, as the column-by-column path would."""
    x = _x(100)
    report = gradguard.check(_sin_times_x, x, vjp=_vjp, mode="full")
    assert report.evaluations <= 8
    table = np.array(report.error_map)
    assert table.shape == (100, 100)
    diagonal = np.diag(table)
    assert (diagonal > 0).all() and (diagonal < 1).all()
    assert not (table - np.diag(diagonal)).any()

    def off(g, x):
        d = _derivative(x)
        d[7] *= 1.001
        return (g * d,)

    wrong_map = np.array(gradguard.check(_sin_times_x, x, vjp=off, mode="full").error_map)
    assert wrong_map[7, 7] > 1 and np.sum(wrong_map > 1) == 1
