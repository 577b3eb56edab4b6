"""``import gradguard`` must not import torch, jax or tensorflow: they cost
seconds and hundreds of megabytes, and a broken install of one would break
every user of the others. The core must not even mention them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import gradguard

FRAMEWORKS = ("torch", "jax", "jaxlib", "tensorflow", "keras")
CORE = Path(gradguard.__file__).parent / "core"


@pytest.mark.parametrize("module", ["gradguard", "gradguard.core"])
def test_import_leaves_frameworks_unimported(module):
    code = (
        "import json, sys\n"
        f"import {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{FRAMEWORKS!r})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(completed.stdout) == []


def test_checking_numpy_arrays_imports_no_framework():
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "import gradguard\n"
        "gradguard.check_gradient(lambda x: x[0] ** 2, np.array([3.0]), np.array([6.0]))\n"
        "gradguard.numerical_gradient(lambda x: x[0] ** 2, [3.0], order=4)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{FRAMEWORKS!r})))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(completed.stdout) == []


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def test_core_sources_import_no_framework():
    sources = sorted(CORE.rglob("*.py"))
    assert sources, f"no sources found under {CORE}"
    offenders = {
        str(path.relative_to(CORE)): sorted(
            name for name in _imported_modules(path) if name.split(".")[0] in FRAMEWORKS
        )
        for path in sources
    }
    assert {p: names for p, names in offenders.items() if names} == {}


def test_the_static_check_would_see_a_framework_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nfrom jax import numpy\nimport torch.nn as nn\n"
        "import importlib\nimportlib.import_module('tensorflow')\n"
        "from . import sibling\n"
    )
    assert _imported_modules(sample) == {"os", "jax", "torch.nn", "importlib", "tensorflow"}
