"""Reports as people read them: plain text, rich tables, JSON that round-trips."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

import gradguard
from gradguard import ArgumentSummary, Mismatch, Report


def _f(x):
    return np.sum(np.sin(x) * x)


def _grad(x):
    return np.cos(x) * x + np.sin(x)


def _half_wrong(x):
    return _grad(x) * np.where(x > 0.5, 2.0, 1.0)


X = np.random.default_rng(0).standard_normal((3, 4))


@pytest.fixture(scope="module")
def failing() -> Report:
    return gradguard.check(_f, X, grad=_half_wrong)


def _handmade(**changes) -> Report:
    values = dict(
        verdict="fail",
        relative_error=0.25,
        framework="torch",
        mode="full",
        direction="rev",
        order=1,
        precision="float64",
        path="vectorized",
        evaluations=42,
        seconds=0.5,
        seed=3,
        num_inputs=6,
        num_outputs=2,
        checked=12,
        wrong=1,
        uncertain=1,
        worst=(
            Mismatch("entry", "w", (1, 2), "out", (0,), 2.0, 1.0, 1.0, 1e-9, "wrong"),
            Mismatch("entry", "w", (0, 0), "out", (1,), 1.0, 1.5, 0.5, 0.0, "uncertain"),
            Mismatch("probe", "probe 0", (), "", (), 1.0, 1.0, math.nan, 1e-9, "uncertain"),
        ),
        arguments=(
            ArgumentSummary("w", (2, 3), "float64", 0.25, 12, 1, 1),
            ArgumentSummary("b", (3,), "float32", math.inf, 3, 0, 0),
        ),
        diagnosis=("sign flipped: the analytical derivative is minus the numerical one",),
        reasons=("1 compared value(s) sit where f is not smooth",),
        notes=("a note",),
    )
    values.update(changes)
    return Report(**values)


def test_plain_text_says_verdict_where_and_by_how_much(failing):
    text = str(failing)
    assert text.startswith("gradguard FAIL")
    assert "relative error" in text and "diagnosis:" in text
    assert "worst entries:" in text
    for column in ("analytical", "numerical", "|error|", "tolerance", "error/tol", "status"):
        assert column in text
    worst = next(m for m in failing.worst if m.status == "wrong")
    assert worst.where() in text
    # x > 0.5 is where the rule doubles: those entries are the wrong ones.
    assert X[worst.index] > 0.5


def test_plain_text_of_every_part():
    text = str(_handmade())
    assert "d out[0] / d w[1, 2]" in text
    assert "why undecided:" in text and "note: a note" in text
    assert "by argument:" in text and "b (3,) float32" in text
    assert " inf " in text  # zero tolerance: an infinite ratio, printed, not a crash


def test_repr_is_one_line():
    text = repr(_handmade())
    assert "\n" not in text and text.startswith("<Report fail")


def test_json_round_trip(failing):
    text = failing.to_json()
    assert Report.from_json(text) == failing
    assert Report.from_dict(json.loads(text)) == failing
    assert Report.from_dict(failing.to_dict()) == failing


def test_json_is_strict_and_keeps_nonfinite_numbers():
    report = _handmade()

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(report.to_json(), parse_constant=refuse)
    assert data["worst"][2]["error"] == "NaN"
    again = Report.from_json(report.to_json())
    assert math.isnan(again.worst[2].error)
    assert again.arguments[1].relative_error == math.inf
    assert again.worst[:2] == report.worst[:2]
    assert again.arguments[0] == report.arguments[0]
    assert again.worst[0].index == (1, 2)  # tuples come back as tuples


def test_from_dict_keeps_unknown_keys_in_extra():
    data = _handmade().to_dict()
    data["added_later"] = [1, 2]
    report = Report.from_dict(data)
    assert report.extra["added_later"] == [1, 2]


def test_show_plain_when_not_a_terminal(failing):
    out = io.StringIO()
    failing.show(out)
    assert out.getvalue().strip() == str(failing)


def test_show_rich_table(failing):
    pytest.importorskip("rich")
    out = io.StringIO()
    failing.show(out, color=True)
    text = out.getvalue()
    assert "FAIL" in text and "worst entries" in text and "error/tol" in text
    assert next(m for m in failing.worst if m.status == "wrong").where() in text


def test_show_rich_every_part():
    pytest.importorskip("rich")
    out = io.StringIO()
    _handmade().show(out, color=True)
    text = out.getvalue()
    assert "by argument" in text and "why undecided" in text and "note: a note" in text


def test_no_color_env_means_plain(failing, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setenv("NO_COLOR", "1")
    out = Terminal()
    failing.show(out)
    assert out.getvalue().strip() == str(failing)


def test_import_gradguard_imports_no_renderer_or_plotter():
    code = (
        "import sys, gradguard; "
        "bad = [m for m in ('rich', 'matplotlib', 'torch', 'jax', 'tensorflow') "
        "if m in sys.modules]; sys.exit(str(bad) if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- what the report calls things (issue 20) ------------------------------------


def test_a_torch_function_s_inputs_are_named_after_forward_s_parameters():
    torch = pytest.importorskip("torch")

    class Affine(torch.autograd.Function):
        @staticmethod
        def forward(ctx, weight, bias):
            return weight * 3 + bias

        @staticmethod
        def backward(ctx, g):
            return 2 * g, g  # weight's derivative is wrong: 3

    class Modern(torch.autograd.Function):  # forward without ctx: setup_context
        @staticmethod
        def forward(weight, bias):
            return weight * 3 + bias

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return 3 * g, g

    x = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64)
    report = gradguard.check(Affine.apply, x, x.clone())
    assert [a.name for a in report.arguments] == ["weight", "bias"]
    assert report.verdict == "fail" and "args[" not in str(report)
    assert {m.argument for m in report.worst if m.status == "wrong"} == {"weight"}
    modern = gradguard.check(Modern.apply, x, x.clone())
    assert [a.name for a in modern.arguments] == ["weight", "bias"] and modern.passed


def test_the_exceptions_carry_their_public_name():
    for name in gradguard._errors.__all__:
        cls = getattr(gradguard, name)
        assert cls.__module__ == "gradguard" and getattr(gradguard, cls.__name__) is cls


def _relu_sum(x):
    return np.sum(np.maximum(x, 0) * x)


def _relu_sum_grad(x):  # 0.1 too much everywhere: where x < 0 the truth is exactly 0
    return 2 * np.maximum(x, 0) + 0.1


RELU_X = np.array([-1.5, -0.5, 0.4, 1.2, -2.0, 0.8])


def test_a_scalar_output_shows_each_entry_once_and_says_why():
    report = gradguard.check(_relu_sum, RELU_X, grad=_relu_sum_grad)
    assert report.verdict == "fail"
    from gradguard.report.rows import shown_rows

    bad = [m for m in report.worst if m.status != "ok"]
    shown, folded = shown_rows(report.worst)
    assert folded == len(bad) - len(shown) > 0
    assert {m.kind for m in bad} == {"entry", "cotangent"}
    text = str(report)
    table = text.split("worst entries:\n", 1)[1].splitlines()[1 : 1 + len(shown)]
    wheres = [line.split()[4] for line in table]  # "d out / d x[4]": the entry itself
    assert len(wheres) == len(set(wheres)) and all(w.startswith("x[") for w in wheres)
    assert "random cotangent" not in "\n".join(table)
    assert f"{folded} more at these entries are products with random cotangents" in text
    assert "the entry times a random u" in text


def test_a_zero_derivative_reads_as_zero_not_as_rounding_noise():
    report = gradguard.check(_relu_sum, RELU_X, grad=_relu_sum_grad)
    text = str(report)
    negative = [m for m in report.worst if m.kind == "entry" and RELU_X[m.index] < 0]
    assert negative and all(abs(m.numerical) < 1e-9 for m in negative)
    for m in negative:
        line = next(line for line in text.splitlines() if m.where() in line)
        assert line.split()[5:7] == ["0.1", "~0"], line
    # A real value is printed as it is, however small, when the other side is as small.
    from gradguard.report.rows import shown_value

    assert shown_value(3e-12, 4e-12, 1e-11) == "3e-12"
    assert shown_value(3e-12, 0.1, 1e-11) == "~0"
    assert shown_value(3e-12, 0.1, 1e-13) == "3e-12"  # outside the tolerance: a value
    assert shown_value(0.0, 0.1, 1e-11) == "0" == shown_value(-0.0, 0.1, 1e-11)


def test_the_rich_table_has_the_plain_text_columns():
    pytest.importorskip("rich")
    report = gradguard.check(_relu_sum, RELU_X, grad=_relu_sum_grad)
    out = io.StringIO()
    report.show(out, color=True)
    rich_text = out.getvalue()
    header = next(line for line in rich_text.splitlines() if "error/tol" in line)
    for column in ("status", "where", "analytical", "numerical", "|error|", "tolerance"):
        assert column in header
    worst = next(m for m in report.worst if m.status == "wrong" and m.kind == "entry")
    assert f"{worst.tolerance:.3g}" in rich_text and "~0" in rich_text
    assert "more at these entries" in " ".join(rich_text.split())
