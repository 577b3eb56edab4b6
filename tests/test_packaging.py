"""What a person sees of the package before running it: its metadata, license, sessions."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest

import gradguard

ROOT = Path(__file__).resolve().parents[1]

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_license_file_is_the_mit_license_the_metadata_names():
    project = _project()
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 gradguard contributors" in text
    assert "WITHOUT WARRANTY OF ANY KIND" in text


def test_classifiers_say_status_python_versions_and_typing():
    project = _project()
    classifiers = project["classifiers"]
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert "Typing :: Typed" in classifiers
    assert (ROOT / "src" / "gradguard" / "py.typed").exists()
    minimum = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert minimum, project["requires-python"]
    versions = sorted(
        int(m.group(1))
        for c in classifiers
        if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c))
    )
    # From the minimum on, without gaps, and none the package refuses to install on.
    assert versions[0] == int(minimum.group(1))
    assert versions == list(range(versions[0], versions[-1] + 1))


def test_keywords_name_what_people_search_for():
    keywords = _project()["keywords"]
    for word in ("gradient check", "finite differences", "pytorch", "jax", "tensorflow"):
        assert word in keywords


def test_report_verdict_is_a_literal_for_type_checkers():
    hints = typing.get_type_hints(gradguard.Report)
    assert typing.get_origin(hints["verdict"]) is typing.Literal
    assert set(typing.get_args(hints["verdict"])) == {"pass", "fail", "inconclusive"}


def test_every_nox_session_is_listed_with_a_whole_sentence():
    """``nox -l`` prints each session's first docstring line: it must not stop mid-sentence."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    sessions = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(d) for d in node.decorator_list)
    ]
    assert len(sessions) >= 5
    for node in sessions:
        first = (ast.get_docstring(node) or "").splitlines()[0]
        assert first.endswith((".", ".)")), f"{node.name}: {first!r}"
        assert first.count("(") == first.count(")"), f"{node.name}: {first!r}"
