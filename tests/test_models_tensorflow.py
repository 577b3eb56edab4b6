"""gradguard.check on TensorFlow / Keras models (issue 17): tf.Variables and
Keras Variables anywhere in the arguments; a Keras layer or model checked
as ``check(layer, x)`` with respect to its trainable variables, named by
variable path (``dense/kernel``).

The broken layer is a Keras layer whose ``tf.custom_gradient`` linear map
halves the kernel's gradient: it must fail naming the kernel.
"""

from __future__ import annotations

import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import numpy as np  # noqa: E402

import gradguard  # noqa: E402
from gradguard import ArgumentError  # noqa: E402
from reports import assert_fail_at, diagnosis  # noqa: E402


def randn(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).standard_normal(shape))


class CustomLinear(keras.layers.Layer):
    """x @ kernel + bias through a tf.custom_gradient rule; ``kernel_scale``
    0.5 halves the kernel's gradient (the bug)."""

    def __init__(self, units, kernel_scale=1.0, **kwargs):
        super().__init__(dtype="float64", **kwargs)
        self.units = units
        self.kernel_scale = kernel_scale

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")
        self.bias = self.add_weight(shape=(self.units,), name="bias", initializer="normal")

    def call(self, x):
        scale = self.kernel_scale

        @tf.custom_gradient
        def linear(x, w):
            def grad(g):
                return g @ tf.transpose(w), scale * (tf.transpose(x) @ g)

            return x @ w, grad

        return linear(x, tf.convert_to_tensor(self.kernel)) + self.bias


def layer(kernel_scale=1.0, name="custom"):
    keras.utils.set_random_seed(0)
    built = CustomLinear(3, kernel_scale, name=name)
    built(randn(1, 5))
    return built


def names(report):
    return [a.name for a in report.arguments]


def test_a_keras_layer_is_checked_with_its_trainable_variables():
    x = randn(4, 5)
    report = gradguard.check(layer(), x)
    assert report.verdict == "pass", str(report)
    assert names(report) == ["x", "custom/kernel", "custom/bias"]
    broken = gradguard.check(layer(0.5), x)
    assert_fail_at(broken, "custom/kernel")
    assert "only custom/kernel is wrong" in diagnosis(broken)
    assert gradguard.check(layer(0.5), x, mode="probe").verdict == "fail"


def test_the_layer_variables_are_left_as_they_were():
    checked = layer(0.5)
    before = [v.numpy().copy() for v in checked.weights]
    gradguard.check(checked, randn(4, 5))
    for value, variable in zip(before, checked.weights):
        np.testing.assert_array_equal(variable.numpy(), value)


def test_a_keras_model_is_named_by_variable_path():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="float64"),
            keras.layers.Dense(4, activation="tanh", dtype="float64", name="dense"),
            CustomLinear(2, 0.5, name="custom"),
        ],
        name="net",
    )
    x = randn(3, 5)
    report = gradguard.check(model, x, kwargs={"training": False})
    expected = ["net/dense/kernel", "net/dense/bias", "net/custom/kernel", "net/custom/bias"]
    assert names(report)[1:] == expected
    assert_fail_at(report, "net/custom/kernel")
    dense = gradguard.check(model, x, wrt="net/dense")
    assert names(dense) == expected[:2] and dense.verdict == "pass"


def test_a_function_using_a_layer_names_its_variables_and_checks_them_when_asked():
    broken = layer(0.5, name="inner")
    x = randn(4, 5)

    def loss(x):
        return tf.reduce_sum(broken(x) ** 2)

    default = gradguard.check(loss, x)
    assert default.verdict == "pass" and names(default) == ["x"]
    note = next(n for n in default.notes if "not checked" in n)
    assert "inner/kernel" in note and "wrt='all'" in note
    asked = gradguard.check(loss, x, wrt="all")
    assert names(asked) == ["x", "inner/kernel", "inner/bias"]
    assert_fail_at(asked, "inner/kernel")


def test_variables_anywhere_in_the_arguments_are_differentiated():
    keras_variable = keras.Variable(np.random.default_rng(2).standard_normal((5, 3)))
    tf_variable = tf.Variable(np.random.default_rng(3).standard_normal(3))
    params = {"w": [keras_variable], "b": tf_variable}

    def f(params, x):
        return tf.tanh(x @ params["w"][0] + params["b"])

    report = gradguard.check(f, params, randn(4, 5))
    assert report.verdict == "pass", str(report)
    assert names(report) == ["params['w'][0]", "params['b']", "x"]


def test_has_aux_and_keyword_arguments_pass_through():
    x = randn(4, 5)

    def loss(model, x, *, power):
        out = model(x)
        return tf.reduce_sum(out**power), {"out": out}

    report = gradguard.check(loss, layer(0.5), x, kwargs={"power": 2}, has_aux=True)
    assert_fail_at(report, "custom/kernel")
    assert gradguard.check(loss, layer(), x, kwargs={"power": 2}, has_aux=True).verdict == "pass"


def test_an_unbuilt_layer_is_refused_with_the_fix():
    with pytest.raises(ArgumentError, match=r"not built.*layer\(x\)"):
        gradguard.check(CustomLinear(3), randn(4, 5))


def test_variables_read_from_a_closure_are_checked_when_asked():
    kernel = tf.Variable(np.random.default_rng(4).standard_normal((5, 3)), name="kernel")
    before = kernel.numpy().copy()

    @tf.custom_gradient
    def halved(x, w):
        def grad(g):
            return g @ tf.transpose(w), 0.5 * (tf.transpose(x) @ g)

        return x @ w, grad

    def f(x):
        return tf.tanh(halved(x, tf.convert_to_tensor(kernel)))

    x = randn(4, 5)
    default = gradguard.check(f, x)
    assert default.verdict == "pass" and names(default) == ["x"]
    assert "kernel:0 (5, 3) float64" in " ".join(default.notes)
    asked = gradguard.check(f, x, wrt="all")
    assert names(asked) == ["x", "kernel"]
    assert_fail_at(asked, "kernel")
    np.testing.assert_array_equal(kernel.numpy(), before)
