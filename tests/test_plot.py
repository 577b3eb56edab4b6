"""Pictures: the error-versus-step V curve and the per-entry error map."""

from __future__ import annotations

import numpy as np
import pytest

import gradguard
from gradguard import Report

pytest.importorskip("matplotlib")

X = np.random.default_rng(0).standard_normal((3, 4))


def f(x):
    return np.sum(np.sin(x) * x)


def grad(x):
    return np.cos(x) * x + np.sin(x)


def half_wrong(x):
    return grad(x) * np.where(x > 0.5, 2.0, 1.0)


def _png(path) -> bytes:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    assert len(data) > 20_000, "suspiciously small picture"
    return data


def test_failing_check_draws_both_panels(tmp_path):
    report = gradguard.check(f, X, grad=half_wrong)
    path = report.plot(tmp_path / "fail.png", f, X, grad=half_wrong)
    assert path == tmp_path / "fail.png"
    _png(path)


def test_plot_data_v_curve_and_map(tmp_path):
    from gradguard.engine.step_curve import add_plot_data

    good = add_plot_data(gradguard.check(f, X, grad=grad), f, X, grad=grad)
    steps, errors, tolerances = (np.array(c) for c in zip(*good.step_curve))
    assert np.all(np.diff(steps) > 0)
    # The V: rounding on the left, truncation on the right, small in between.
    _, at_step, tol_at_step = good.chosen_step
    assert at_step < tol_at_step and at_step < 1e-8
    assert errors[0] > 100 * at_step and errors[-1] > 100 * at_step
    assert np.all(
        errors[(steps > 1e-6) & (steps < 1e-4)] < tolerances[(steps > 1e-6) & (steps < 1e-4)]
    )
    ratios = np.array(good.error_map)
    assert ratios.shape == (1, 12) and np.all(ratios <= 1)

    bad = add_plot_data(gradguard.check(f, X, grad=half_wrong), f, X, grad=half_wrong)
    _, errors, tolerances = (np.array(c) for c in zip(*bad.step_curve))
    assert bad.chosen_step[1] > bad.chosen_step[2]  # wrong: above the tolerance at the step
    ratios = np.array(bad.error_map).reshape(X.shape)
    np.testing.assert_array_equal(ratios > 1, X > 0.5)  # exactly the doubled entries


def test_plot_data_round_trips_through_json(tmp_path):
    from gradguard.engine.step_curve import add_plot_data

    report = add_plot_data(gradguard.check(f, X, grad=grad), f, X, grad=grad)
    again = Report.from_json(report.to_json())
    assert again == report
    again.plot(tmp_path / "again.png")  # drawn from the JSON alone
    _png(tmp_path / "again.png")


def test_a_full_check_carries_its_map_and_plots_without_f(tmp_path):
    report = gradguard.check(f, X, grad=half_wrong)
    assert np.array(report.error_map).shape == (1, X.size) and not report.step_curve
    report.plot(tmp_path / "map.png")
    _png(tmp_path / "map.png")


def test_a_probe_report_without_data_draws_its_worst_entries(tmp_path):
    report = gradguard.check(f, X, grad=half_wrong, mode="probe")
    assert not report.step_curve and not report.error_map
    report.plot(tmp_path / "worst.png")
    _png(tmp_path / "worst.png")


def test_svg_by_suffix(tmp_path):
    report = gradguard.check(f, X, grad=grad)
    report.plot(tmp_path / "pass.svg", f, X, grad=grad)
    assert (tmp_path / "pass.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_torch_probe_check_draws_the_v_curve_only(tmp_path):
    torch = pytest.importorskip("torch")

    def g(x, w):
        return torch.tanh(x @ w)

    x = torch.asarray(X, dtype=torch.float32)
    w = torch.asarray(np.ones((4, 2)), dtype=torch.float32)
    report = gradguard.check(g, x, w, mode="probe")
    from gradguard.engine.step_curve import add_plot_data

    with_data = add_plot_data(report, g, x, w)
    assert with_data.step_curve and not with_data.error_map
    with_data.plot(tmp_path / "probe.png")
    _png(tmp_path / "probe.png")


def test_several_arguments_and_outputs(tmp_path):
    def layer(x, w):
        return np.tanh(x @ w)

    def vjp(g, x, w):
        s = g * (1 - np.tanh(x @ w) ** 2)
        return s @ w.T, x.T @ s

    w = np.ones((4, 2))
    report = gradguard.check(layer, X, w, vjp=vjp)
    from gradguard.engine.step_curve import add_plot_data

    with_data = add_plot_data(report, layer, X, w, vjp=vjp)
    assert np.array(with_data.error_map).shape == (6, 20)
    with_data.plot(tmp_path / "layer.png")
    _png(tmp_path / "layer.png")
