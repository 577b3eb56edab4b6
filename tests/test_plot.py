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


# -- what the pictures say, read off the drawn figure (issue 20) -----------------


def layer_one(w):
    return np.tanh(w[:, :1] * 2)


def layer_one_vjp(g, w):  # sign flipped, and nothing for w[:, 1]: which is right, 0
    out = np.zeros_like(w)
    out[:, :1] = -2 * g * (1 - np.tanh(w[:, :1] * 2) ** 2)
    return out


def kink(x):
    return np.sum(np.abs(x) * 3)


def kink_grad(x):
    return np.sign(x) * 3


W = np.random.default_rng(0).standard_normal((3, 2))
KINKED = np.array([0.0, 0.5, -1.0, 2.0, 0.0, 1e-9])  # 1e-9: within the step of the kink


def _drawn(report, f, *args, **options):
    from gradguard.engine.step_curve import add_plot_data
    from gradguard.report.plot import draw_report

    report = add_plot_data(report, f, *args, **options)
    return report, draw_report(report)


def _legend_texts(figure) -> list[str]:
    return [t.get_text() for legend in figure.legends for t in legend.get_texts()]


def _numbers(pattern: str, text: str) -> list[int]:
    import re

    match = re.search(pattern, text)
    assert match, f"{pattern!r} not in {text!r}"
    return [int(g) for g in match.groups()]


@pytest.fixture(scope="module")
def failing_figure():
    report = gradguard.check(layer_one, W, vjp=layer_one_vjp)
    assert report.verdict == "fail"
    return _drawn(report, layer_one, W, vjp=layer_one_vjp)


def test_the_tolerance_at_the_step_is_inside_the_axes(failing_figure, tmp_path):
    report, figure = failing_figure
    curve = figure.axes[0]
    _, error, tolerance = report.chosen_step
    low, high = curve.get_ylim()
    assert low < tolerance < high and low < error < high
    assert error > 1e6 * tolerance  # the picture shows a wrong derivative as one
    figure.savefig(tmp_path / "fail.png")
    _png(tmp_path / "fail.png")


def test_the_star_is_on_the_curve():
    report = gradguard.check(f, X, grad=grad)
    report, figure = _drawn(report, f, X, grad=grad)
    h, error, _ = report.chosen_step
    line = next(ln for ln in figure.axes[0].get_lines() if ln.get_label().startswith("|error|"))
    points = dict(zip(line.get_xdata(), line.get_ydata()))
    assert points[h] == pytest.approx(max(error, 1e-18))


def test_every_mark_has_a_legend_entry(failing_figure):
    report, figure = failing_figure
    texts = _legend_texts(figure)
    for start in ("|error| of the probe", "its tolerance", "the check's step, h = "):
        assert any(t.startswith(start) for t in texts), (start, texts)
    assert f"tolerance there: {report.chosen_step[2]:.2g}" in texts
    assert f"error there: {report.chosen_step[1]:.2g}" in texts
    assert {"wrong: above tolerance (3)", "undecided (0)", "agrees (15)"} <= set(texts)
    # The legends sit outside the panels: nothing covers the corner labels.
    for ax in figure.axes:
        assert ax.get_legend() is None


def test_title_and_map_counts_add_up(failing_figure):
    report, figure = failing_figure
    title = figure._suptitle.get_text()
    heatmap = figure.axes[1].get_title()
    wrong, undecided, compared = _numbers(r"(\d+) wrong, (\d+) undecided of (\d+) compared", title)
    assert (wrong, undecided, compared) == (report.wrong, report.uncertain, report.checked)
    size, map_wrong, map_undecided = _numbers(
        r"= (\d+) Jacobian entries, the map \((\d+) wrong, (\d+) undecided\)", title
    )
    assert _numbers(r"(\d+) wrong, (\d+) undecided of (\d+)$", heatmap) == [
        map_wrong,
        map_undecided,
        size,
    ]
    rest, rest_wrong, rest_undecided = _numbers(
        r"\+ (\d+) products with random cotangents u·J \((\d+) wrong, (\d+) undecided\)", title
    )
    assert size + rest == compared and map_wrong + rest_wrong == wrong
    assert map_undecided + rest_undecided == undecided
    assert (size, map_wrong) == (W.size * 3, 3)  # d out[i] / d w[i, 0], sign flipped


def test_the_map_names_every_input_entry(failing_figure):
    _, figure = failing_figure
    labels = [t.get_text() for t in figure.axes[1].get_xticklabels()]
    assert labels == [f"w[{i}, {j}]" for i in range(3) for j in range(2)]


def test_inconclusive_draws_undecided_cells_apart_and_says_why(tmp_path):
    from matplotlib.colors import to_rgba

    report = gradguard.check(kink, KINKED, grad=kink_grad)
    assert report.verdict == "inconclusive" and report.wrong == 0
    assert report.undecided_entries == ((0, 5),)
    report, figure = _drawn(report, kink, KINKED, grad=kink_grad)
    curve, heatmap = figure.axes[:2]
    star = next(ln for ln in curve.get_lines() if ln.get_label().startswith("error there"))
    assert to_rgba(star.get_color()) == to_rgba("tab:orange")  # not a passing green
    assert any(t.get_text().startswith("undecided: ") for t in curve.texts)
    _, overlay = heatmap.get_images()
    np.testing.assert_array_equal(~np.ma.getmaskarray(overlay.get_array()), [[0, 0, 0, 0, 0, 1]])
    assert "0 wrong, 1 undecided of 6" in heatmap.get_title()
    assert "undecided (1)" in _legend_texts(figure)
    figure.savefig(tmp_path / "inconclusive.png")
    _png(tmp_path / "inconclusive.png")


def test_passing_plot_is_saved(tmp_path):
    report = gradguard.check(f, X, grad=grad)
    report, figure = _drawn(report, f, X, grad=grad)
    assert "0 wrong, 0 undecided" in figure._suptitle.get_text()
    figure.savefig(tmp_path / "pass.png")
    _png(tmp_path / "pass.png")
