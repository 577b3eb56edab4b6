"""Tolerance floors with hand-written NumPy rules (issue 16, families 5 and 12).

A gradient far below what finite differences resolve on f's values cannot
be confirmed: a sign flip of it is ``inconclusive``, never ``pass``. The
same gradient of a function that is itself that small is resolved, and a
sign flip fails; so does one entry off by 1e-4.
"""

from __future__ import annotations

import numpy as np

import gradguard


def point(n=5, seed=0):
    return np.random.default_rng(seed).standard_normal(n)


def test_an_invisible_gradient_cannot_pass_a_sign_flip():
    r = gradguard.check(
        lambda x: 1 + 1e-12 * np.sin(x).sum(), point(), grad=lambda x: -1e-12 * np.cos(x)
    )
    assert r.verdict == "inconclusive", str(r)
    assert any("resolution" in s for s in r.reasons), str(r)


def test_the_same_gradient_of_a_small_function_is_resolved():
    r = gradguard.check(
        lambda x: 1e-12 * np.sin(x).sum(), point(), grad=lambda x: -1e-12 * np.cos(x)
    )
    assert r.verdict == "fail", str(r)
    right = gradguard.check(
        lambda x: 1e-12 * np.sin(x).sum(), point(), grad=lambda x: 1e-12 * np.cos(x)
    )
    assert right.verdict == "pass", str(right)


def test_one_entry_off_by_1e4_relative_fails():
    def grad(x):
        return np.cos(x) * np.where(np.arange(x.size) == 2, 1 + 1e-4, 1.0)

    r = gradguard.check(lambda x: np.sin(x).sum(), point(), grad=grad)
    assert r.verdict == "fail", str(r)


def test_a_staircase_is_never_a_failure():
    r = gradguard.check(
        lambda x: (((x + 1e8) - 1e8) * 2).sum(), point(), grad=lambda x: 2 * np.ones_like(x)
    )
    assert r.verdict != "fail", str(r)
