"""The ``gradguard`` command as a person runs it: a subprocess, exit codes, JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
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


# -- the options a person reaches for (issue 20) ------------------------------------

LOG_FILE = """
import numpy as np

def logsum(x):
    return np.sum(np.log(x))

def logsum_grad(x):
    return 1 / x

def bent(x):
    return np.sum(x ** 3)

def bent_grad(x):  # right below 1, wrong above
    return np.where(x < 1, 3 * x ** 2, 3 * x)

def power(x, p=2):
    return np.sum(x ** p)

def power_grad(x, p=2):
    return p * x ** (p - 1)

def pair(w, b):
    return np.sum(np.tanh(w) * b)

def pair_grad(w, b):
    return (1 - np.tanh(w) ** 2) * b, np.tanh(w)

def bent_inputs():
    return (np.linspace(1.5, 3.0, 4),)

def pair_inputs(rng):
    return rng.uniform(0.1, 0.9, 3), rng.uniform(0.1, 0.9, 3)
"""


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The command in this process (a subprocess per case would import NumPy again)."""
    import warnings

    from gradguard.cli import main

    with warnings.catch_warnings():
        # f at a point out of its domain warns; pytest would make that an error.
        warnings.simplefilter("ignore", RuntimeWarning)
        status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def logs(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "logs.py").write_text(LOG_FILE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_range_moves_random_inputs_where_f_is_defined(logs, capsys):
    status, _, err = cli(capsys, "check", "logs.py:logsum", "--shape", "5")
    assert status == 2 and "--range LOW,HIGH" in err  # log of normal draws: NaN
    assert "check at another x" not in err
    status, out, err = cli(capsys, "check", "logs.py:logsum", "--shape", "5", "--range", "0.5,2")
    assert status == 0, err
    status, out, _ = cli(
        capsys, "check", "logs.py:logsum", "--shape", "5", "--range", "0.5,2", "--json", "-"
    )
    assert json.loads(out)["verdict"] == "pass"


@pytest.mark.parametrize("bad", ["2,1", "a,b", "1", "0,inf"])
def test_a_bad_range_is_a_usage_error(logs, capsys, bad):
    status, _, err = cli(capsys, "check", "logs.py:logsum", "--shape", "5", "--range", bad)
    assert status == 2 and "--range" in err


def test_inputs_from_npy_and_npz_are_the_point_checked(logs, capsys):
    below, above = np.linspace(0.1, 0.9, 4), np.linspace(1.5, 3.0, 4)
    np.save(logs / "below.npy", below)
    np.save(logs / "above.npy", above)
    np.savez(logs / "named.npz", x=above)
    np.savez(logs / "unnamed.npz", below)
    assert cli(capsys, "check", "logs.py:bent", "--inputs", "below.npy")[0] == 0
    assert cli(capsys, "check", "logs.py:bent", "--inputs", "above.npy")[0] == 1
    assert cli(capsys, "check", "logs.py:bent", "--inputs", "named.npz")[0] == 1
    assert cli(capsys, "check", "logs.py:bent", "--inputs", "unnamed.npz")[0] == 0


def test_npz_arrays_go_to_the_parameters_they_are_named_after(logs, capsys):
    w, b = np.linspace(-1, 1, 3), np.array([1.0, 2.0, 3.0])
    np.savez(logs / "wb.npz", b=b, w=w)  # not in the parameters' order
    status, out, err = cli(capsys, "check", "logs.py:pair", "--inputs", "wb.npz", "--json", "-")
    assert status == 0, err
    shapes = {a["name"]: a["shape"] for a in json.loads(out)["arguments"]}
    assert shapes == {"w": [3], "b": [3]}
    np.savez(logs / "wrong.npz", weights=w)
    status, _, err = cli(capsys, "check", "logs.py:pair", "--inputs", "wrong.npz")
    assert status == 2 and "weights" in err and "w, b" in err


def test_the_files_factory_gives_the_inputs(logs, capsys):
    assert cli(capsys, "check", "logs.py:bent")[0] == 1  # bent_inputs: above 1, wrong there
    assert cli(capsys, "check", "logs.py:bent", "--shape", "4", "--range", "0.1,0.9")[0] == 0
    status, out, err = cli(capsys, "check", "logs.py:pair", "--json", "-", "--seed", "3")
    assert status == 0, err  # pair_inputs(rng): the generator seeded by --seed
    assert json.loads(out)["seed"] == 3


def test_without_inputs_the_message_says_the_three_ways(logs, capsys):
    status, _, err = cli(capsys, "check", "logs.py:logsum")
    assert status == 2
    assert "--shape" in err and "--inputs" in err and "logsum_inputs()" in err


def test_inputs_and_shape_together_is_a_usage_error(logs, capsys):
    np.save(logs / "x.npy", np.ones(3))
    status, _, err = cli(capsys, "check", "logs.py:bent", "--inputs", "x.npy", "--shape", "3")
    assert status == 2 and "--shape" in err and "--inputs" in err
    status, _, err = cli(capsys, "check", "logs.py:bent", "--inputs", "x.txt")
    assert status == 2 and ".npy" in err


def test_kwarg_reaches_f_and_its_rule(logs, capsys):
    status, out, err = cli(
        capsys, "check", "logs.py:power", "--shape", "4", "--kwarg", "p=3", "--json", "-"
    )
    assert status == 0, err
    data = json.loads(out)
    assert [a["name"] for a in data["arguments"]] == ["x"]  # p is held, not differentiated
    status, _, err = cli(capsys, "check", "logs.py:power", "--shape", "4", "--kwarg", "p")
    assert status == 2 and "NAME=VALUE" in err


def test_wrt_by_name_or_position(logs, capsys):
    for wrt in ("b", "1"):
        status, out, err = cli(
            capsys, "check", "logs.py:pair", "--shape", "3", "--shape", "3", "--wrt", wrt,
            "--json", "-",
        )  # fmt: skip
        assert status == 0, err
        assert [a["name"] for a in json.loads(out)["arguments"]] == ["b"]
    status, _, err = cli(
        capsys, "check", "logs.py:pair", "--shape", "3", "--shape", "3", "--wrt", "bias"
    )
    assert status == 2 and "--wrt" in err and "w, b" in err


def test_eps_rtol_atol_probes_reach_the_check(logs, capsys):
    import gradguard

    module = _import(logs / "logs.py")
    x = np.random.default_rng(0).standard_normal(5)
    api = {
        "eps": gradguard.check(module.power, x, grad=module.power_grad, eps=1e-2),
        "rtol": gradguard.check(module.power, x, grad=module.power_grad, rtol=1e-3),
        "probes": gradguard.check(module.power, x, grad=module.power_grad, mode="probe", probes=3),
    }
    default = gradguard.check(module.power, x, grad=module.power_grad)
    base = ["check", "logs.py:power", "--shape", "5", "--json", "-"]
    eps = json.loads(cli(capsys, *base, "--eps", "1e-2")[1])
    assert eps["relative_error"] == api["eps"].relative_error != default.relative_error
    rtol = json.loads(cli(capsys, *base, "--rtol", "1e-3")[1])
    assert rtol["worst"][0]["tolerance"] == api["rtol"].worst[0].tolerance
    assert rtol["worst"][0]["tolerance"] > 100 * default.worst[0].tolerance
    atol = json.loads(cli(capsys, *base, "--atol", "1e-3")[1])
    assert atol["worst"][0]["tolerance"] >= 1e-3 > default.worst[0].tolerance
    probes = json.loads(cli(capsys, *base, "--mode", "probe", "--probes", "3")[1])
    assert probes["checked"] == api["probes"].checked > 2
    for flag, bad in (("--eps", "0"), ("--rtol", "-1"), ("--atol", "nan"), ("--probes", "0")):
        with pytest.raises(SystemExit) as exit_:
            cli(capsys, *base, flag, bad)
        assert exit_.value.code == 2 and flag in capsys.readouterr().err


def _import(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("logs_for_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_messages_speak_flags_and_file_names(logs, capsys):
    status, _, err = cli(capsys, "check", "logs.py:power", "--shape", "3", "--direction", "fwd")
    assert status == 2
    assert "--direction rev" in err and "power_grad" in err
    assert "direction='rev'" not in err and "grad=" not in err
    status, _, err = cli(capsys, "check", "logs.py:power", "--shape", "3", "--order", "2")
    assert status == 2 and "--order 2" in err and "order=2" not in err


def test_every_option_has_help_text():
    from gradguard.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        for action in sub._actions:
            assert action.help, f"gradguard {name} {action.option_strings or action.dest}"


def test_help_names_the_new_options(capsys):
    from gradguard.cli import main

    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = capsys.readouterr().out
    for flag in ("--wrt", "--eps", "--rtol", "--atol", "--probes", "--inputs", "--range"):
        assert flag in text
    for word in ("forward rules", "derivative of the derivative", "dtype of the inputs"):
        assert word in " ".join(text.split())


def test_torch_function_apply_is_a_target(workdir):
    pytest.importorskip("torch")
    (workdir / "fn.py").write_text(
        textwrap.dedent(
            """
            import torch

            class Scale(torch.autograd.Function):
                @staticmethod
                def forward(ctx, weight, bias):
                    ctx.save_for_backward(weight)
                    return weight * 3 + bias

                @staticmethod
                def backward(ctx, g):
                    return 3 * g, g
            """
        ),
        encoding="utf-8",
    )
    done = run("check", "fn.py:Scale.apply", "--shape", "4", "--shape", "4", "--json", "-",
               cwd=workdir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [a["name"] for a in data["arguments"]] == ["weight", "bias"]
    done = run("check", "fn.py:Scale.forward2", "--shape", "4", cwd=workdir)
    assert done.returncode == 2 and "fn.py:Scale defines no 'forward2'" in done.stderr


def test_plot_without_matplotlib_still_prints_the_report(workdir):
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
        "from gradguard.cli import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )
    args = ["check", "fns.py:wrong", "--shape", "3,2", "--shape", "5,3", "--plot", "out.png"]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=workdir, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the check's verdict: fail
    assert done.stdout.startswith("gradguard FAIL") and "worst entries" in done.stdout
    assert "matplotlib is not installed" in done.stderr and "gradguard[plot]" in done.stderr
    assert not (workdir / "out.png").exists()


@pytest.mark.parametrize(("name", "verdict", "status"), [("wrong", "fail", 1), ("loss", "pass", 0)])
def test_json_is_written_when_stdout_is_closed_early(workdir, name, verdict, status):
    import os

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line (`| head -0`)
    try:
        done = subprocess.run(
            [*COMMAND, "check", f"fns.py:{name}", "--shape", "3,2", "--shape", "5,3",
             "--json", "out.json"],
            cwd=workdir, stdout=write, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and done.returncode == status  # the verdict's
    data = json.loads((workdir / "out.json").read_text(encoding="utf-8"))
    assert data["verdict"] == verdict


def test_a_kwarg_takes_its_parameter_out_of_the_positional_ones(logs, capsys):
    status, _, err = cli(
        capsys, "check", "logs.py:pair", "--shape", "3", "--shape", "3", "--kwarg", "b=1.0"
    )
    assert status == 2 and "takes 1 positional argument(s) (w); got 2 input(s)" in err


@pytest.mark.parametrize(
    ("message", "expected", "absent"),
    [
        (
            "direction: grad= and vjp= rules are reverse mode; use direction='rev'",
            "--direction: loss_grad and loss_vjp rules are reverse mode; use --direction rev",
            "direction=",
        ),
        (
            "f: returned NaN or inf in out at the point itself; finite differences need f "
            "finite at x: check at another x",
            "loss: returned NaN or inf in out at the point itself; finite differences need "
            "loss finite at x: check at another point: --range LOW,HIGH",
            "another x",
        ),
        (
            "grad: f has 3 real outputs; grad= needs a real scalar f, use vjp=fn "
            "(fn(cotangent, *args)) instead",
            "loss_grad: loss has 3 real outputs; loss_grad needs a real scalar loss, use "
            "loss_vjp(cotangent, *args) instead",
            "=",
        ),
        ("order: order=2 needs autodiff, not grad=/vjp=", "--order: --order 2", "order="),
        ("wrt: index 3 is out of range", "--wrt: index 3", "wrt:"),
        (
            "f: output out is list; f must return arrays",
            "loss: output out is list; loss must",
            "f ",
        ),
    ],
)
def test_check_messages_in_flag_words(message, expected, absent):
    from gradguard._cli_words import in_flag_words

    text = in_flag_words(message, "loss", "model.py")
    import re

    assert text.startswith(expected), text
    assert absent not in re.sub(r"--\w+", "", text), text  # outside the flags themselves
