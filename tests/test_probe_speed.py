"""Probe mode: what it evaluates, and what it still catches.

A probe is one random direction: its stencil costs 4 evaluations of f in
float64, and the first batch of a check carries one more (f at x, to check
the batch against f's own call). At model size (MODEL_SIZE inputs) the
default is two probes, the second measured only while the first leaves the
verdict open; a probe count the caller asks for other than that is measured
in full. Sensitivity: one Jacobian entry 1% off fails at n=1000 in 20 seeds
of 20, and at model size in every seed tried. NumPy rules, so nothing
here needs a framework; the torch case runs where torch is installed.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradguard
from gradguard.engine.strategies.probes import MODEL_SIZE

#: Evaluations of a check of one probe (4 stencil points and f at x).
ONE_PROBE = 5


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n)


def f(x):
    return np.sin(x) * x


def vjp_off(position=None, factor=1.0):
    """The VJP of f, with the diagonal entry at ``position`` times ``factor``."""

    def vjp(g, x):
        out = g * (np.cos(x) * x + np.sin(x))
        if position is not None:
            out[..., position] *= factor
        return out

    return vjp


def test_model_size_right_rule_stops_after_one_probe():
    report = gradguard.check(f, _x(MODEL_SIZE), vjp=vjp_off(), mode="probe")
    assert report.verdict == "pass"
    assert report.evaluations == ONE_PROBE


def test_model_size_open_first_probe_measures_the_second():
    # A kink at an entry of x (relu at 0, whose rule says 0 where the
    # centred difference sees 1/2) leaves the first probe uncertain.
    x = _x(MODEL_SIZE)
    x[5] = 0.0
    report = gradguard.check(
        lambda x: np.maximum(x, 0.0), x, vjp=lambda g, x: g * (x > 0), mode="probe"
    )
    assert report.verdict == "inconclusive"
    assert report.evaluations == ONE_PROBE + 4


def test_two_probes_the_caller_asks_for_at_model_size_are_both_measured():
    report = gradguard.check(f, _x(MODEL_SIZE), vjp=vjp_off(), mode="probe", probes=2)
    assert report.verdict == "pass"
    assert report.evaluations == ONE_PROBE + 4


@pytest.mark.parametrize("probes", [2, 3])
def test_probes_the_caller_asks_for_below_model_size_are_all_measured(probes):
    report = gradguard.check(f, _x(1000), vjp=vjp_off(), mode="probe", probes=probes)
    assert report.verdict == "pass"
    assert report.evaluations == ONE_PROBE + 4 * (probes - 1)


def test_one_entry_one_percent_off_fails_at_1000_in_every_seed():
    n = 1000
    positions = np.random.default_rng(1).choice(n, size=20, replace=False)
    missed = [
        seed
        for seed, position in enumerate(positions)
        if gradguard.check(
            f, _x(n), vjp=vjp_off(int(position), 1.01), mode="probe", seed=seed
        ).verdict
        != "fail"
    ]
    assert missed == []


@pytest.mark.parametrize("seed", range(3))
def test_one_entry_one_percent_off_fails_and_is_named_at_model_size(seed):
    position = int(np.random.default_rng(seed).integers(MODEL_SIZE))
    report = gradguard.check(
        f, _x(MODEL_SIZE), vjp=vjp_off(position, 1.01), mode="probe", seed=seed
    )
    assert report.verdict == "fail"
    named = [tuple(w.index) for w in report.worst if w.status == "wrong" and w.kind == "entry"]
    assert (position,) in named


def test_torch_model_size_right_and_wrong():
    torch = pytest.importorskip("torch")

    def rule(position):
        class SinTimesX(torch.autograd.Function):
            @staticmethod
            def forward(x):
                return x.sin() * x

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(inputs[0])

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                grad = g * (x.cos() * x + x.sin())
                if position is not None:
                    grad[..., position] *= 1.01
                return grad

        return SinTimesX.apply

    x = torch.from_numpy(_x(MODEL_SIZE))
    right = gradguard.check(rule(None), x, mode="probe")
    assert (right.verdict, right.evaluations) == ("pass", ONE_PROBE)
    wrong = gradguard.check(rule(12345), x, mode="probe")
    assert wrong.verdict == "fail"
    assert (12345,) in [tuple(w.index) for w in wrong.worst if w.status == "wrong"]


def _bench():
    """benchmarks/run.py, as a module."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_pairs_probe_mode_with_fast_mode_up_to_a_million():
    bench = _bench()
    pairs = {(f, n) for tool, other, f, n in bench.PAIRS if other == "gradcheck-fast"}
    wanted = {(f, n) for f in ("elementwise", "scalar") for n in (1000, 10_000, 1_000_000)}
    assert wanted <= pairs
    assert bench.runs_at("gradguard-torch-probe", 1_000_000)
    assert bench.runs_at("gradcheck-fast", 1_000_000)
    # A full check at 10^6 inputs (10^6 evaluations) never runs.
    full = [t for t in bench.TOOLS if t not in bench.PROBE_STYLE]
    assert full and not any(bench.runs_at(t, 1_000_000) for t in full)
    assert all(bench.runs_at(t, 10_000) for t in bench.TOOLS)
