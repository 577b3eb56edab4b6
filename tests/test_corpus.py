"""The fast slice of the corpus sweep (benchmarks/corpus.py): gradguard on every
PyTorch OpInfo op with autograd, float64, reverse mode, one sample each.

The derivatives are torch's own. ``tests/data/opinfo_gradcheck_f64.json``
holds what ``torch.autograd.gradcheck`` said of each case (written by
``python benchmarks/corpus.py --suite opinfo --config f64-rev --store-gradcheck
tests/data/opinfo_gradcheck_f64.json``), so only gradguard runs here. Where
gradcheck passed, gradguard must not say ``fail`` (but for the allowlist of
derivatives that are wrong in torch, ``corpus.ALLOWLIST``) nor raise, and may
leave at most 1% ``inconclusive``.
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "tests" / "data" / "opinfo_gradcheck_f64.json"
MAX_INCONCLUSIVE = 0.01


def load_corpus() -> ModuleType:
    """benchmarks/corpus.py, the one home of the case builder and the allowlist."""
    spec = importlib.util.spec_from_file_location("corpus", ROOT / "benchmarks" / "corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


corpus = load_corpus()


def stored_verdicts() -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    pytest.importorskip("expecttest")  # torch's OpInfo database imports it
    stored = json.loads(STORED.read_text())
    if stored["torch"] != torch.__version__:
        pytest.skip(
            f"gradcheck's verdicts in {STORED.name} are for torch {stored['torch']}, "
            f"this is torch {torch.__version__} (op_db changes between versions): "
            "rerun the command in its 'command' field to refresh them"
        )
    return stored


def sweep(only: set[str] | None = None) -> dict[str, dict]:
    """gradguard's summary of each case, keyed ``op#sample``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = {}
    try:
        # The samples are seeded per op: leave torch's global generator as it was.
        with warnings.catch_warnings(), torch.random.fork_rng():
            # op_db and its samples warn (deprecations, sparse betas), and so
            # may gradguard on float32-only kernels: not what is tested here.
            warnings.simplefilter("ignore")
            for name, index, f, inputs, problem in corpus.opinfo_cases("f64-rev", 1, only):
                if f is None:
                    results[f"{name}#{index}"] = {"gg": "skipped", "skip": problem}
                    continue
                results[f"{name}#{index}"] = corpus.run_gradguard(f, inputs, "rev")
    finally:
        torch.set_num_threads(threads)
    return results


def judge(results: dict[str, dict], gradcheck: dict[str, str]) -> dict[str, list[str]]:
    """The offending cases, by kind, among those gradcheck passed."""
    offending: dict[str, list[str]] = {"fail": [], "error": [], "inconclusive": []}
    for key, result in sorted(results.items()):
        if gradcheck.get(key) != "pass":
            continue
        op = key.rpartition("#")[0]
        verdict = result["gg"]
        if verdict == "fail" and corpus.ALLOWLIST.get(("opinfo", op)):
            continue
        if verdict in offending:
            why = result.get("gg_error") or result.get("gg_why", "")
            offending[verdict].append(f"{key}: {verdict}: {why}")
    return offending


@pytest.fixture(scope="module")
def swept() -> tuple[dict[str, dict], dict[str, str], float]:
    stored = stored_verdicts()
    start = time.perf_counter()
    results = sweep()
    return results, stored["gradcheck"], time.perf_counter() - start


def test_the_slice_covers_the_stored_cases(swept: tuple) -> None:
    results, gradcheck, _seconds = swept
    missing = sorted(set(gradcheck) - set(results))
    assert not missing, f"cases gradcheck was run on that op_db no longer yields: {missing}"


def test_no_false_fail(swept: tuple) -> None:
    results, gradcheck, _seconds = swept
    fails = judge(results, gradcheck)["fail"]
    assert not fails, (
        f"gradguard says fail on {len(fails)} OpInfo derivatives that gradcheck passes "
        "(float64, reverse mode; a genuinely wrong one goes in corpus.ALLOWLIST with "
        "its evidence):\n" + "\n".join(fails)
    )


def test_no_exception(swept: tuple) -> None:
    results, gradcheck, _seconds = swept
    errors = judge(results, gradcheck)["error"]
    assert not errors, (
        f"gradguard raised on {len(errors)} OpInfo cases that gradcheck checks:\n"
        + "\n".join(errors)
    )


def test_inconclusive_is_rare(swept: tuple) -> None:
    results, gradcheck, _seconds = swept
    accepted = sum(1 for key in results if gradcheck.get(key) == "pass")
    undecided = judge(results, gradcheck)["inconclusive"]
    assert len(undecided) <= MAX_INCONCLUSIVE * accepted, (
        f"gradguard is inconclusive on {len(undecided)} of {accepted} OpInfo cases "
        f"gradcheck passes (at most {MAX_INCONCLUSIVE:.0%}):\n" + "\n".join(undecided)
    )


def test_judge_accepts_right_verdicts_and_names_wrong_ones() -> None:
    """The logic on real gradguard runs: ops gradguard passes are accepted;
    a fail, an exception or an inconclusive where gradcheck passed are named."""
    stored = stored_verdicts()
    results = sweep({"sin", "mul", "tanh"})
    assert {r["gg"] for r in results.values()} == {"pass"}
    assert judge(results, stored["gradcheck"]) == {"fail": [], "error": [], "inconclusive": []}
    key = next(iter(results))
    gradcheck = {key: "pass"}
    for verdict in ("fail", "error", "inconclusive"):
        planted = {key: {**results[key], "gg": verdict, "gg_why": "planted"}}
        assert judge(planted, gradcheck)[verdict] == [f"{key}: {verdict}: planted"]
        # The same verdict where gradcheck failed too is not gradguard's false alarm.
        assert judge(planted, {key: "fail"})[verdict] == []
