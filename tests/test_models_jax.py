"""gradguard.check on JAX models (issue 17): any ``jax.tree_util`` pytree as an
argument (registered classes, dataclasses, NamedTuples, an equinox-like
module), named by key path; a callable pytree checked as ``check(model, x)``.

The broken layer is a ``jax.custom_vjp`` linear map whose weight gradient
is halved, inside a registered pytree class: it must fail naming the weight.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradguard  # noqa: E402
from reports import assert_fail_at, diagnosis  # noqa: E402


def randn(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def linear_rule(weight_scale):
    @jax.custom_vjp
    def linear(x, w):
        return x @ w

    def forward(x, w):
        return x @ w, (x, w)

    def backward(saved, g):
        x, w = saved
        return g @ w.T, weight_scale * (x.T @ g)

    linear.defvjp(forward, backward)
    return linear


LINEAR = linear_rule(1.0)
HALF_WEIGHT = linear_rule(0.5)


class Module:
    """A minimal equinox-like Module: a dataclass whose fields are its
    children, keyed by name (jax.tree_util.register_pytree_with_keys)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True)(cls)

        def flatten(module):
            fields = dataclasses.fields(module)
            return [(jax.tree_util.GetAttrKey(f.name), getattr(module, f.name)) for f in fields], ()

        def unflatten(aux, children):
            module = object.__new__(cls)
            for field, child in zip(dataclasses.fields(cls), children):
                object.__setattr__(module, field.name, child)
            return module

        jax.tree_util.register_pytree_with_keys(cls, flatten, unflatten)


class Linear(Module):
    weight: Any
    bias: Any
    rule: Any  # a function: a leaf that is no array, passed through

    def __call__(self, x):
        return self.rule(x, self.weight) + self.bias


class MLP(Module):
    layers: list
    activation: Any

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x)


def mlp(first_rule=LINEAR):
    return MLP(
        [Linear(randn(4, 5, seed=1), randn(5, seed=2), first_rule),
         Linear(randn(5, 2, seed=3), randn(2, seed=4), LINEAR)],
        jnp.tanh,
    )  # fmt: skip


def names(report):
    return [a.name for a in report.arguments]


MLP_NAMES = ["layers[0].weight", "layers[0].bias", "layers[1].weight", "layers[1].bias"]


def test_an_equinox_like_module_is_checked_with_its_parameters():
    x = randn(3, 4)
    report = gradguard.check(mlp(), x)
    assert report.verdict == "pass", str(report)
    assert names(report) == ["x", *MLP_NAMES]
    broken = gradguard.check(mlp(HALF_WEIGHT), x)
    assert_fail_at(broken, "layers[0].weight")
    assert "only layers[0].weight is wrong" in diagnosis(broken)
    assert gradguard.check(mlp(HALF_WEIGHT), x, mode="probe").verdict == "fail"


def test_a_module_as_an_argument_is_traversed_and_named_by_key_path():
    x = randn(3, 4)

    def loss(model, x):
        return jnp.sum(model(x) ** 2)

    report = gradguard.check(loss, mlp(HALF_WEIGHT), x)
    assert names(report) == [f"model.{n}" for n in MLP_NAMES] + ["x"]
    assert_fail_at(report, "model.layers[0].weight")
    assert gradguard.check(loss, mlp(), x).verdict == "pass"
    inputs = gradguard.check(loss, mlp(HALF_WEIGHT), x, wrt="x")
    assert names(inputs) == ["x"] and inputs.verdict == "pass"
    model_only = gradguard.check(loss, mlp(HALF_WEIGHT), x, wrt="model")
    assert names(model_only) == [f"model.{n}" for n in MLP_NAMES]


@jax.tree_util.register_pytree_node_class
class Dense:
    """A registered class with its rule inside."""

    def __init__(self, w, b, rule=LINEAR):
        self.w, self.b, self.rule = w, b, rule

    def tree_flatten(self):
        return (self.w, self.b), self.rule

    @classmethod
    def tree_unflatten(cls, rule, children):
        return cls(*children, rule=rule)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Scale:
    s: Any
    label: str = dataclasses.field(default="scale", metadata={"static": True})


class Pair(NamedTuple):
    first: Any
    second: Any


def test_pytrees_of_every_kind_inside_a_dict_are_named_by_key_path():
    params = {
        "dense": Dense(randn(4, 3, seed=5), randn(3, seed=6), HALF_WEIGHT),
        "scale": Scale(randn(3, seed=7)),
        "pair": Pair(randn(3, seed=8), 2),
        "steps": 3,
    }
    x = randn(2, 4)

    def f(params, x):
        dense = params["dense"]
        h = dense.rule(x, dense.w) + dense.b
        assert params["steps"] == 3 and params["pair"].second == 2  # passed through
        return jnp.tanh(h) * params["scale"].s + params["pair"].first

    report = gradguard.check(f, params, x)
    assert names(report) == [
        "params['dense'][0]",
        "params['dense'][1]",
        "params['scale'].s",
        "params['pair'].first",
        "x",
    ]
    assert_fail_at(report, "params['dense'][0]")
    params["dense"] = Dense(params["dense"].w, params["dense"].b)
    assert gradguard.check(f, params, x).verdict == "pass"


def test_non_array_leaves_reach_f_untouched():
    marker = object()

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Holder:
        w: Any
        tag: Any  # a leaf, not static: an object JAX does not know
        empty: Any  # None: JAX's empty node

    seen = []

    def f(h, x):
        seen.append((h.tag, h.empty))
        return jnp.sin(x * h.w)

    holder = Holder(randn(3), marker, None)
    report = gradguard.check(f, holder, randn(3, seed=1), vectorize=False)
    assert report.verdict == "pass" and names(report) == ["h.w", "x"]
    assert seen and all(tag is marker and empty is None for tag, empty in seen)


def test_has_aux_and_keyword_arguments_pass_through():
    x = randn(3, 4)

    def loss(model, x, *, power):
        out = model(x)
        return jnp.sum(out**power), {"out": out, "name": "aux"}

    report = gradguard.check(loss, mlp(HALF_WEIGHT), x, kwargs={"power": 2}, has_aux=True)
    assert_fail_at(report, "model.layers[0].weight")
    assert gradguard.check(loss, mlp(), x, kwargs={"power": 2}, has_aux=True).verdict == "pass"


def test_wrt_selects_leaves_inside_an_argument_by_path():
    x = randn(3, 4)

    def loss(model, x):
        return jnp.sum(model(x) ** 2)

    first = gradguard.check(loss, mlp(HALF_WEIGHT), x, wrt="model.layers[0]")
    assert names(first) == ["model.layers[0].weight", "model.layers[0].bias"]
    assert_fail_at(first, "model.layers[0].weight")
    second = gradguard.check(loss, mlp(HALF_WEIGHT), x, wrt=["model.layers[1]", "x"])
    assert names(second) == ["model.layers[1].weight", "model.layers[1].bias", "x"]
    assert second.verdict == "pass"
