"""Every use-case example in the README runs and prints what it says.

Python blocks are run as scripts (each ``print(...)  # expected`` line must
print ``expected``); a block that starts with ``# test_NAME.py`` is a test
file run by pytest; one that starts with ``# NAME.py`` is a module for the
command line, which the ``$ gradguard ...`` line of the next text block runs.
Each runs in a fresh process, so they are slow (framework imports).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCRIPT = Path(sys.executable).with_name("gradguard")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gradguard.cli"]

FIRST = "## Check a custom `torch.autograd.Function`"
LAST = "## The command line"


def _sections() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(FIRST)
    end = text.index("\n## ", text.index(LAST) + 1)
    parts = re.split(r"\n(?=## )", text[start:end])
    return {part.splitlines()[0][3:]: part for part in parts}


def _blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def _frameworks(code: str) -> list[str]:
    return [
        name
        for name in ("torch", "jax", "tensorflow")
        if re.search(rf"^\s*import {name}\b", code, re.M)
    ]


def _skip_missing(code: str) -> None:
    for name in _frameworks(code):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed")


SECTIONS = _sections()


def test_there_is_a_section_per_use_case():
    titles = " ".join(SECTIONS)
    for needle in ("torch", "JAX", "TensorFlow", "NumPy", "cross-framework", "command line"):
        assert needle in titles


@pytest.mark.parametrize(
    "title", [t for t in SECTIONS if _blocks(SECTIONS[t], "python") and t != LAST[3:]]
)
def test_example_runs(title, tmp_path):
    for code in _blocks(SECTIONS[title], "python"):
        _skip_missing(code)
        first = code.splitlines()[0]
        name = re.match(r"# (test_\w+\.py)", first)
        if name:
            (tmp_path / name.group(1)).write_text(code, encoding="utf-8")
            done = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name.group(1)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert done.returncode == 0, done.stdout + done.stderr
            continue
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        expected = [
            line.split("#", 1)[1].strip()
            for line in code.splitlines()
            if line.startswith("print(") and "  # " in line
        ]
        assert done.stdout.split("\n")[: len(expected)] == expected


def test_command_line_example(tmp_path):
    section = SECTIONS[LAST[3:]]
    module = _blocks(section, "python")[0]
    name = re.match(r"# (\w+\.py)", module.splitlines()[0]).group(1)
    (tmp_path / name).write_text(module, encoding="utf-8")
    shown = _blocks(section, "text")[0].splitlines()
    command = shown[0].removeprefix("$ gradguard ").split()
    if "--plot" in command and importlib.util.find_spec("matplotlib") is None:
        at = command.index("--plot")
        del command[at : at + 2]
    done = subprocess.run(
        [*COMMAND, *command], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    status = int(shown[shown.index("$ echo $?") + 1])
    assert done.returncode == status, done.stderr
    # The report as shown, up to the times and the lines the README elides.
    printed = done.stdout.splitlines()
    for line in shown[1 : shown.index("$ echo $?")]:
        if line.strip() == "...":
            continue
        if " s (seed " in line:
            line = line.split(" evaluations of f in ")[0]
        assert any(p.startswith(line) for p in printed), line
