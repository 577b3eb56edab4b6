"""The README's commands are the ones CI runs and the ones that work."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _test_command() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- test-command -->(.*?)<!-- /test-command -->", text, re.S)
    assert match, "README.md has no <!-- test-command --> block"
    lines = [
        line.strip()
        for line in match.group(1).splitlines()
        if line.strip() and not line.strip().startswith("```")
    ]
    assert len(lines) == 1, lines
    return lines[0]


def test_readme_test_command_is_one_line_that_runs_nox():
    command = _test_command()
    assert "pip install" in command and "nox" in command


@pytest.mark.skipif(not (ROOT / ".ci" / "run").exists(), reason="no .ci/run in this tree")
def test_ci_runs_the_readme_command():
    """.ci/run extracts the command with sed; it must find the same line."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extract = re.search(r"command=\$\((sed .*?)\)\n", script, re.S)
    assert extract, "could not find how .ci/run reads the command"
    completed = subprocess.run(
        ["bash", "-c", extract.group(1).replace("\\\n", " ")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.strip() == _test_command()


def test_readme_seed_example_prints_what_it_says():
    text = README.read_text(encoding="utf-8")
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) == 5
    expected = block.strip().splitlines()[-1].split("#", 1)[1].strip()
    completed = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert completed.stdout.strip() == expected
