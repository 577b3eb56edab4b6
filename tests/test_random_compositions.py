"""Random compositions of ordinary operations never make gradguard say ``fail``.

Their derivatives come from the framework's autodiff, right by
construction (tests/compositions.py): any ``fail`` is a bug of the check.
A fast slice here; ``benchmarks/compositions.py`` runs 1000 seeds.
"""

from __future__ import annotations

import pytest

import gradguard
from compositions import composition

SEEDS = range(60)


def _failures(framework, dtype, seeds):
    found = []
    for seed in seeds:
        description, f, args = composition(seed, framework, dtype)
        report = gradguard.check(f, *args, seed=seed)
        if report.verdict == "fail":
            found.append(f"seed {seed}: {description}\n{report}")
    return found


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_compositions_never_fail(dtype):
    pytest.importorskip("torch")
    assert _failures("torch", dtype, SEEDS) == []


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_jax_compositions_never_fail(dtype):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    # JAX traces each new function: a few seeds here, more in the benchmark.
    assert _failures("jax", dtype, range(6)) == []


def test_the_generator_is_seeded_and_varied():
    pytest.importorskip("torch")
    first = composition(5, "torch")
    again = composition(5, "torch")
    assert first[0] == again[0]
    assert bool((first[1](*first[2]) == again[1](*again[2])).all())
    assert len({composition(s, "torch")[0] for s in range(20)}) == 20
