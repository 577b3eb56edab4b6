"""The ``gradguard`` command as a person runs it: a subprocess, exit codes, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("gradguard")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gradguard.cli"]

NUMPY_FILE = """
import numpy as np

def loss(w, x):
    return np.sum(np.tanh(x @ w))

def loss_grad(w, x):
    s = 1 - np.tanh(x @ w) ** 2
    return x.T @ s, s @ w.T

def wrong(w, x):
    return np.sum(np.tanh(x @ w))

def wrong_grad(w, x):
    s = 1 - np.tanh(x @ w)  # should be 1 - tanh**2
    return x.T @ s, s @ w.T

def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()

def softmax_vjp(g, x):
    s = softmax(x)
    return s * (g - np.sum(g * s))

_rng = np.random.default_rng()

def noisy(x):
    return np.sum(x ** 2) * (1 + 1e-6 * _rng.standard_normal())

def noisy_grad(x):
    return 2 * x

def no_rule(x):
    return np.sum(x)

def crashes(x):
    return np.sum(x) / undefined_name

def crashes_grad(x):
    return x

constant = 3
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "fns.py").write_text(NUMPY_FILE, encoding="utf-8")
    return tmp_path


def test_check_pass_exits_0(workdir):
    done = run("check", "fns.py:loss", "--shape", "3,2", "--shape", "5,3", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gradguard PASS")


def test_check_fail_exits_1_with_the_report_and_json(workdir):
    done = run(
        "check",
        "fns.py:wrong",
        "--shape",
        "3,2",
        "--shape",
        "5,3",
        "--json",
        "out.json",
        cwd=workdir,
    )
    assert done.returncode == 1, done.stderr
    assert "gradguard FAIL" in done.stdout and "worst entries" in done.stdout
    data = json.loads((workdir / "out.json").read_text(encoding="utf-8"))
    assert data["verdict"] == "fail" and data["framework"] == "numpy"
    assert {a["name"] for a in data["arguments"]} == {"w", "x"}
    assert data["worst"][0]["status"] == "wrong"


def test_json_to_stdout(workdir):
    done = run("check", "fns.py:softmax", "--shape", "5", "--json", "-", cwd=workdir)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["verdict"] == "pass" and data["num_outputs"] == 5


def test_inconclusive_exits_2(workdir):
    done = run("check", "fns.py:noisy", "--shape", "4", cwd=workdir)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "INCONCLUSIVE" in done.stdout


def test_options_reach_the_check(workdir):
    done = run(
        "check",
        "fns.py:loss",
        "--shape",
        "3,2",
        "--shape",
        "5,3",
        "--mode",
        "probe",
        "--seed",
        "7",
        "--dtype",
        "float32",
        "--json",
        "-",
        cwd=workdir,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["mode"] == "probe" and data["seed"] == 7
    assert [a["dtype"] for a in data["arguments"]] == ["float32", "float32"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "fns.py:missing", "--shape", "3"], "defines no 'missing'"),
        (["check", "fns.py", "--shape", "3"], "expected FILE.py:FUNC"),
        (["check", "nowhere.py:f", "--shape", "3"], "no such file"),
        (["check", "fns.py:loss", "--shape", "3"], "takes 2 positional argument"),
        (["check", "fns.py:loss", "--shape", "a,b", "--shape", "2"], "--shape"),
        (["check", "fns.py:softmax"], "--shape"),
        (["check", "fns.py:no_rule", "--shape", "3"], "define no_rule_grad"),
        (["check", "fns.py:constant", "--shape", "3"], "not a function"),
        (["check", "fns.py:crashes", "--shape", "3"], "NameError"),
        (["check", "fns.py:loss", "--shape", "3", "--mode", "fast"], "invalid choice"),
        (["demo", "--framework", "mxnet"], "invalid choice"),
        ([], "usage"),
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_traceback(workdir, args, message):
    done = run(*args, cwd=workdir)
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert message in output
    assert "Traceback" not in output


def test_crash_in_the_function_points_at_its_line(workdir):
    done = run("check", "fns.py:crashes", "--shape", "3", cwd=workdir)
    assert "fns.py" in done.stderr and "undefined_name" in done.stderr
    assert "gradguard/" not in done.stderr  # no frames from inside gradguard


def test_plot_writes_a_png(workdir):
    pytest.importorskip("matplotlib")
    done = run(
        "check",
        "fns.py:wrong",
        "--shape",
        "3,2",
        "--shape",
        "5,3",
        "--plot",
        "out.png",
        cwd=workdir,
    )
    assert done.returncode == 1, done.stderr
    png = (workdir / "out.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


def test_torch_file_is_detected_and_checked(workdir):
    pytest.importorskip("torch")
    (workdir / "cube.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Cube(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    ctx.save_for_backward(x)
                    return x ** 3

                @staticmethod
                def backward(ctx, g):
                    (x,) = ctx.saved_tensors
                    return 3 * x * g  # should be 3 * x**2 * g

            def cube(x):
                return Cube.apply(x)
            """
        ),
        encoding="utf-8",
    )
    done = run("check", "cube.py:cube", "--shape", "4", "--json", "-", cwd=workdir)
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["framework"] == "torch" and data["verdict"] == "fail"


def test_demo_numpy_exits_0_with_every_verdict_expected(workdir):
    done = run("demo", "--framework", "numpy", cwd=workdir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 6 verdicts are the expected ones." in done.stdout
    for verdict in ("PASS", "FAIL", "INCONCLUSIVE"):
        assert f"gradguard {verdict}" in done.stdout
    assert "sign flipped" in done.stdout


def test_version(workdir):
    done = run("--version", cwd=workdir)
    assert done.returncode == 0 and done.stdout.startswith("gradguard ")
