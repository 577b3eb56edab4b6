"""Float64 inputs, float32 outputs on TensorFlow's own ops (issue 16, family 3).

``tf.image.resize`` returns float32 whatever its input: the numerical side
differences in float64, but f's values carry float32 rounding, and the step
and the rounding estimate must follow that.
"""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")

import numpy as np  # noqa: E402

import gradguard  # noqa: E402


def randn(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), dtype=tf.float64)


def test_image_resize_returns_float32_and_passes():
    r = gradguard.check(lambda im: tf.image.resize(im, (6, 6)), randn(1, 4, 4, 1))
    assert r.verdict == "pass", str(r)


def test_a_cast_to_float32_passes():
    r = gradguard.check(lambda x: tf.cast(tf.sin(x), tf.float32), randn(3, 4))
    assert r.verdict == "pass", str(r)


def test_a_wrong_rule_behind_a_cast_to_float32_fails():
    @tf.custom_gradient
    def sin32(x):
        def grad(g):
            return tf.cast(g, tf.float64) * tf.cos(x) * 1.01

        return tf.cast(tf.sin(x), tf.float32), grad

    r = gradguard.check(sin32, randn(6))
    assert r.verdict == "fail", str(r)
