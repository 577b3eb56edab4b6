"""The README's command-line session with an input file runs and prints what it shows.

Each ``$ ...`` line of the text block after ``# scaled_log.py`` is run in
order in one directory (``python`` is this interpreter); every line shown
under a command starts a line it prints (``...`` stands for lines left out),
and ``$ echo $?`` gives the status of the command before it.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SCRIPT = Path(sys.executable).with_name("gradguard")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gradguard.cli"]

pytestmark = pytest.mark.slow


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## The command line")
    return text[start : text.index("\n## ", start + 1)]


def _session(module_name: str) -> tuple[str, list[str]]:
    section = _section()
    blocks = re.findall(r"```(python|text)\n(.*?)```", section, re.S)
    for at, (language, code) in enumerate(blocks):
        if language == "python" and code.startswith(f"# {module_name}"):
            return code, blocks[at + 1][1].splitlines()
    raise AssertionError(f"no # {module_name} block in the README's command-line section")


def _commands(lines: list[str]) -> list[tuple[str, list[str]]]:
    commands: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    return commands


def test_the_input_file_example_runs_as_shown(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    code, lines = _session("scaled_log.py")
    (tmp_path / "scaled_log.py").write_text(code, encoding="utf-8")
    status = None
    ran = []
    for command, shown in _commands(lines):
        if command == "echo $?":
            assert shown == [str(status)], (ran[-1], shown)
            continue
        words = shlex.split(command)
        program = {"python": [sys.executable], "gradguard": COMMAND}[words[0]]
        done = subprocess.run(
            [*program, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        status, printed = done.returncode, done.stdout.splitlines()
        ran.append(command)
        for line in shown:
            if line.strip() == "...":
                continue
            assert any(p.startswith(line) for p in printed), (command, line, done.stderr)
    assert any("--inputs point.npz" in c for c in ran) and any("--range" in c for c in ran)
    report = (tmp_path / "report.json").read_text(encoding="utf-8")
    assert '"verdict": "fail"' in report
