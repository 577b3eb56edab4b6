"""The demo gallery: correct and deliberately broken derivative rules.

For every installed framework (NumPy always) a few custom rules of the kind
people write, each checked by :func:`gradguard.check`: some correct, some
broken in the ways real rules break (sign flipped, a term missing, the
incoming gradient ignored, a transposed matrix, a constant factor, the
gradient cut off, a kink). ``gradguard demo`` runs them and succeeds when
every verdict is the expected one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._frameworks import framework, installed
from .report.report import Report

__all__ = ["CASES", "Case", "Outcome", "run"]

Built = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Case:
    framework: str
    name: str
    expected: str  # "pass", "fail" or "inconclusive"
    build: Callable[[], Built]  # -> (f, args, options for gradguard.check)


@dataclass
class Outcome:
    case: Case
    report: Report | None
    error: str = ""
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        return self.report.verdict if self.report is not None else "error"

    @property
    def as_expected(self) -> bool:
        return self.verdict == self.case.expected


def _point(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# -- NumPy: hand-written gradients (grad= / vjp=) ------------------------------


def _np_smooth(grad: Callable[[np.ndarray], np.ndarray]) -> Callable[[], Built]:
    def build() -> Built:
        def f(x: np.ndarray) -> Any:
            return np.sum(np.sin(x) * x)

        return f, (_point((3, 4)),), {"grad": grad}

    return build


def _np_softmax(broken: bool) -> Callable[[], Built]:
    def build() -> Built:
        def softmax(x: np.ndarray) -> np.ndarray:
            e = np.exp(x - np.max(x))
            return e / np.sum(e)

        def vjp(g: np.ndarray, x: np.ndarray) -> np.ndarray:
            s = softmax(x)
            if broken:  # the diagonal term only: forgets that entries compete
                return g * s * (1 - s)
            return s * (g - np.sum(g * s))

        return softmax, (_point((5,)),), {"vjp": vjp}

    return build


def _np_relu() -> Built:
    def f(x: np.ndarray) -> Any:
        return np.sum(np.maximum(x, 0.0))

    x = np.array([-1.5, 0.0, 0.7, 2.0])  # 0.0 sits on the kink
    return f, (x,), {"grad": lambda x: (x > 0).astype(x.dtype)}


# -- PyTorch: torch.autograd.Function ---------------------------------------------


def _torch_softplus(kind: str) -> Callable[[], Built]:
    def build() -> Built:
        import torch

        class Softplus(torch.autograd.Function):
            # forward without ctx plus setup_context: the style torch needs
            # for a Function that also has a forward-mode rule (jvp).
            @staticmethod
            def forward(x: Any) -> Any:
                return torch.nn.functional.softplus(x)

            @staticmethod
            def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
                ctx.save_for_backward(*inputs)
                ctx.save_for_forward(*inputs)

            @staticmethod
            def backward(ctx: Any, grad_output: Any) -> Any:
                (x,) = ctx.saved_tensors
                if kind == "ignores grad_output":
                    return torch.sigmoid(x)
                if kind == "off by 2":
                    return 2 * grad_output * torch.sigmoid(x)
                return grad_output * torch.sigmoid(x)

            @staticmethod
            def jvp(ctx: Any, x_t: Any) -> Any:
                (x,) = ctx.saved_tensors
                return x_t * torch.sigmoid(x)

        direction = "both" if kind == "correct" else "rev"
        return Softplus.apply, (torch.asarray(_point((6,))),), {"direction": direction}

    return build


def _torch_matmul(transposed: bool) -> Callable[[], Built]:
    def build() -> Built:
        import torch

        class MatMul(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, a: Any, b: Any) -> Any:
                ctx.save_for_backward(a, b)
                return a @ b

            @staticmethod
            def backward(ctx: Any, g: Any) -> Any:
                a, b = ctx.saved_tensors
                if transposed:  # b instead of b.T: right shape for square b, wrong values
                    return g @ b, a.T @ g
                return g @ b.T, a.T @ g

        a = torch.asarray(_point((3, 3), 1))
        b = torch.asarray(_point((3, 3), 2))
        return MatMul.apply, (a, b), {}

    return build


# -- JAX: custom_vjp / custom_jvp --------------------------------------------------


def _jax_logsumexp(kind: str) -> Callable[[], Built]:
    def build() -> Built:
        import jax
        import jax.numpy as jnp

        @jax.custom_vjp
        def logsumexp(x: Any) -> Any:
            top = jnp.max(x)
            return top + jnp.log(jnp.sum(jnp.exp(x - top)))

        def fwd(x: Any) -> Any:
            return logsumexp(x), x

        def bwd(x: Any, g: Any) -> Any:
            softmax = jnp.exp(x - logsumexp(x))
            if kind == "forgets the chain rule":
                return (softmax,)
            if kind == "sign flipped":
                return (-g * softmax,)
            return (g * softmax,)

        logsumexp.defvjp(fwd, bwd)
        with framework("jax").float64():
            x = framework("jax").asarray(_point((7,)))
        return logsumexp, (x,), {}

    return build


def _jax_custom_jvp() -> Built:
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def log1pexp(x: Any) -> Any:
        return jnp.logaddexp(x, 0.0)

    @log1pexp.defjvp
    def _jvp(primals: Any, tangents: Any) -> Any:
        (x,), (t,) = primals, tangents
        return log1pexp(x), t * jax.nn.sigmoid(x)

    x = framework("jax").asarray(_point((5,)) * 3)
    return log1pexp, (x,), {"direction": "both"}


# -- TensorFlow: tf.custom_gradient ---------------------------------------------------


def _tf_tanh(kind: str) -> Callable[[], Built]:
    def build() -> Built:
        import tensorflow as tf

        @tf.custom_gradient
        def tanh(x: Any) -> Any:
            y = tf.math.tanh(x)

            def grad(upstream: Any) -> Any:
                if kind == "gradient cut off":
                    return tf.zeros_like(upstream)
                if kind == "a term missing":
                    return upstream * (1 - y)  # 1 - y instead of 1 - y**2
                return upstream * (1 - y * y)

            return y, grad

        return tanh, (tf.constant(_point((2, 3))),), {}

    return build


CASES: tuple[Case, ...] = (
    Case("numpy", "hand-written gradient", "pass", _np_smooth(lambda x: np.cos(x) * x + np.sin(x))),
    Case("numpy", "sign flipped", "fail", _np_smooth(lambda x: -(np.cos(x) * x + np.sin(x)))),
    Case("numpy", "a term missing", "fail", _np_smooth(lambda x: np.cos(x) * x)),
    Case("numpy", "softmax VJP", "pass", _np_softmax(broken=False)),
    Case("numpy", "softmax VJP, diagonal only", "fail", _np_softmax(broken=True)),
    Case("numpy", "relu at its kink", "inconclusive", _np_relu),
    Case("torch", "Function with backward and jvp", "pass", _torch_softplus("correct")),
    Case("torch", "backward ignores grad_output", "fail", _torch_softplus("ignores grad_output")),
    Case("torch", "backward off by 2", "fail", _torch_softplus("off by 2")),
    Case("torch", "matmul backward", "pass", _torch_matmul(transposed=False)),
    Case("torch", "matmul backward, transposed", "fail", _torch_matmul(transposed=True)),
    Case("jax", "custom_vjp", "pass", _jax_logsumexp("correct")),
    Case(
        "jax", "custom_vjp forgets the chain rule", "fail", _jax_logsumexp("forgets the chain rule")
    ),
    Case("jax", "custom_vjp sign flipped", "fail", _jax_logsumexp("sign flipped")),
    Case("jax", "custom_jvp", "pass", _jax_custom_jvp),
    Case("tensorflow", "custom_gradient", "pass", _tf_tanh("correct")),
    Case("tensorflow", "custom_gradient, gradient cut off", "fail", _tf_tanh("gradient cut off")),
    Case("tensorflow", "custom_gradient, a term missing", "fail", _tf_tanh("a term missing")),
)


def cases(frameworks: Iterable[str] | None = None) -> list[Case]:
    """The gallery's cases for ``frameworks`` (default: every installed one)."""
    wanted = tuple(frameworks) if frameworks else installed()
    return [c for c in CASES if c.framework in wanted]


def run(
    frameworks: Iterable[str] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Check every case; ``on_outcome`` sees each as it finishes."""
    from ._check import check

    outcomes = []
    for case in cases(frameworks):
        fw = framework(case.framework)
        started = time.perf_counter()
        try:
            with fw.float64():
                f, args, options = case.build()
                report = check(f, *args, **options)
            outcome = Outcome(case, report, seconds=time.perf_counter() - started)
        except Exception as exc:  # a gallery entry that cannot run is a failed demo
            outcome = Outcome(case, None, f"{type(exc).__name__}: {exc}")
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes
