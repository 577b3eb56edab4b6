"""``gradguard.check``: the framework's own derivative against finite differences.

The pipeline, written once for every framework:

1. flatten the arguments (pytrees) and pick the arrays to differentiate;
2. choose the precision of the numerical side (float64 when f accepts it);
3. numerical side: centred differences along unit vectors (``full``) or
   random directions (``probe``), batched, with per-entry error estimates
   (:mod:`gradguard.core.differences`);
4. analytical side: the framework's VJP (random and scaled one-hot
   cotangents) and/or JVP, through its adapter, or the caller's rule;
5. per-entry tolerances, verdict and diagnosis (:mod:`gradguard.core`).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from typing import Any

from ._errors import (
    ArgumentError,
    ArgumentTypeError,
    GradientError,
)
from ._numpy_errors import quiet_arithmetic
from .engine.problem import WrongGradientShape, _describe, _Problem
from .engine.run import _Run
from .report.report import ArgumentSummary, Report, Verdict

__all__ = ["assert_gradients", "check"]

MODES = ("auto", "full", "probe")
DIRECTIONS = ("rev", "fwd", "both")
PRECISIONS = ("auto", "float64", "native")
METHODS = ("central", "complex-step")
#: ``mode="auto"`` checks every Jacobian entry up to this many inputs...
AUTO_FULL_INPUTS = 2048
#: ...and this many Jacobian entries; beyond, random probes.
AUTO_FULL_ENTRIES = 4_000_000


def check(
    f: Callable[..., Any],
    *args: Any,
    wrt: int | str | Sequence[int | str] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    has_aux: bool = False,
    mode: str = "auto",
    direction: str = "rev",
    order: int = 1,
    seed: int = 0,
    probes: int | None = None,
    eps: float | None = None,
    accuracy: int | None = None,
    method: str = "central",
    rtol: float | None = None,
    atol: float | None = None,
    grad: Callable[..., Any] | None = None,
    vjp: Callable[..., Any] | None = None,
    precision: str = "auto",
    vectorize: bool = True,
    executor: Executor | None = None,
    progress: bool | None = None,
) -> Report:
    """Check the derivatives of ``f`` at ``args`` against finite differences.

    Never raises because a gradient is wrong: the returned :class:`Report`
    says so. Raises a :class:`~gradguard.GradguardError` for unusable
    arguments. Where nothing can be compared (empty arrays, or no output
    with a derivative) the report passes with ``checked == 0`` and a note
    that says so. Entries of the point that are not finite (NaN, inf, -inf:
    an attention mask) are held fixed, named in a note, and their
    derivatives not compared; the finite entries are checked as usual (f
    itself must be finite at the point). Outputs without a derivative (integers, bools, torch
    outputs that do not require grad while others do) are left out, and
    arrays f uses that require gradients but are not arguments (a model's
    parameters that ``wrt`` leaves out) are named, both in ``report.notes``.

    ``f`` may be a model: a ``torch.nn.Module``, a Keras layer or model, or a
    callable JAX pytree (an equinox module). ``check(model, x)`` then checks
    the derivatives with respect to the model's parameters (those requiring
    grad; Keras: its trainable variables) and its float inputs, each named
    as the framework names it (``encoder.0.weight``, ``dense/kernel``,
    ``layers[0].weight``). The same holds for a model f takes as an
    argument (``check(loss, model, x)``: ``model.encoder.0.weight``). The
    parameters are never written to: f is called with copies in their
    place (torch's reparametrisation, as ``torch.func.functional_call``;
    Keras's ``StatelessScope``; a rebuilt pytree).

    - ``wrt``: what to differentiate, one of these or a list of them: an
      argument's position (``0``) or name (``"x"``); a parameter's name
      (``"encoder.0.weight"``) or the name of a module holding parameters
      (``"encoder"``: every parameter under it); ``"inputs"`` (every
      argument), ``"parameters"`` (every parameter f reaches: its own, and
      those the default leaves out: of the modules or layers its closure,
      globals and ``kwargs`` hold, and the tensors requiring grad or
      trainable variables it reads from its closure or globals, named by
      their variable names) or ``"all"``; a path inside an argument
      (``"params['dense']"``) selects the leaves under it. Default: every argument, and
      the parameters of a model that f is, is a method of, or takes as an
      argument. Only floating-point arrays are differentiated; other leaves
      (integers, strings, non-float arrays) are passed through untouched.
      Arguments may be nested tuples, lists, dicts, namedtuples, and (once
      JAX is imported) any ``jax.tree_util`` pytree: registered classes,
      dataclasses, equinox modules, flax structs, named by key path
      (``params['dense'].w``).
    - ``kwargs``: keyword arguments for f, passed to it as they are at
      every call (not differentiated): ``check(f, x, kwargs={"training":
      False})``. ``grad=`` and ``vjp=`` rules receive them too.
    - ``has_aux``: f returns a pair ``(output, aux)``; only ``output`` is
      checked, ``aux`` is dropped untouched (as ``jax.grad(has_aux=True)``).
    - ``mode``: ``"full"`` compares every Jacobian entry; ``"probe"`` a few
      random projections ``u . J . v`` (cheap for large inputs);
      ``"auto"`` picks by size.
    - ``direction``: ``"rev"`` compares vector-Jacobian products (the
      framework's backward / VJP rule), ``"fwd"`` Jacobian-vector products,
      ``"both"`` both.
    - ``order``: 1, or 2 for the derivative of the derivative.
    - ``seed``: seeds the random cotangents and directions; the same seed
      gives the same verdict and numbers.
    - ``probes``: number of random probes in probe mode (default 1; 2 from
      100,000 inputs, a model's size, the second measured only where the
      first leaves the verdict open: uncertain, or an error above 1/18 of its
      tolerance, as with ``probes=2`` there; 8 when either side runs in low
      precision). A probe is one random direction
      v, compared through two random cotangents u (``u . J v``: finite
      differences against the VJP) in reverse mode and through its JVP in
      forward mode. Random entries have either sign and a magnitude in
      [1, 3), so a wrong Jacobian entry shows in every probe.
    - ``eps``: a fixed absolute step instead of per-entry steps.
    - ``accuracy``: order of the central stencil, 4 (points ±h, ±2h) or 6
      (also ±3h); default 4 when the numerical side runs in float64 and 6
      in lower precision, where the step grows and truncation matters.
    - ``method``: ``"central"`` differences, or ``"complex-step"``
      (``Im f(x + ih) / h``: exact to rounding, one evaluation per entry, for
      f analytic in real inputs: no abs, max, comparisons or casts).
    - ``rtol`` / ``atol``: added to the estimated tolerance of each entry.
    - ``grad`` / ``vjp``: the analytical derivative as a function, for code
      without autodiff (NumPy): ``grad(*args)`` returns the gradient of a
      scalar ``f``; ``vjp(cotangent, *args)`` the vector-Jacobian product.
      Both return one entry per differentiated argument (a tuple when
      there are several), each shaped like that argument.
    - ``precision``: ``"auto"`` evaluates the numerical side in float64 when
      ``f`` accepts it, ``"float64"`` insists, ``"native"`` keeps the dtypes.
    Complex inputs and outputs are compared in real coordinates (real and
    imaginary parts as separate entries), so each framework is checked
    against its own convention: PyTorch and TensorFlow return
    dL/d(re) + i dL/d(im) (the conjugate Wirtinger derivative, times 2) for a
    real loss L, JAX its complex conjugate; a rule that follows the other
    framework's convention fails.

    - ``vectorize``: batch evaluations with the framework's vmap where
      possible (falls back to a loop by itself when f cannot be batched), and
      the framework's VJPs and JVPs (torch's batched gradients, JAX's vmap;
      TensorFlow's run in a traced loop, never pfor); ``False``: one
      evaluation and one derivative after the other, nothing vectorised.
    - ``executor``: a :class:`concurrent.futures.Executor` (threads, processes,
      or ``dask.distributed.Client.get_executor()``) to run chunks of
      evaluations on; default: in this process.
    - ``progress``: show a progress bar for long checks; default: only when
      attached to a terminal.
    """
    started = time.perf_counter()
    _validate_options(
        f, mode, direction, order, seed, probes, eps, rtol, atol, grad, vjp, precision
    )
    _validate_call(kwargs, has_aux)
    if accuracy is not None and (isinstance(accuracy, bool) or accuracy not in (4, 6)):
        raise ArgumentError(f"accuracy: must be 4 or 6 (or None for the default), got {accuracy!r}")
    _choice("method", method, METHODS)
    problem = _Problem.build(
        f, args, wrt, grad, vjp, precision, order, seed, vectorize, kwargs, has_aux
    )
    n, m = problem.in_layout.size, problem.out_layout.size
    if direction in ("fwd", "both") and problem.user_rule:
        raise ArgumentError("direction: grad= and vjp= rules are reverse mode; use direction='rev'")
    if n == 0 or m == 0:
        mode = "full" if mode == "auto" else mode
        note = _nothing_to_compare(problem)
        return _early_report(problem, "pass", mode, direction, order, seed, started, notes=(note,))
    run = _Run(
        problem,
        seed=seed,
        eps=eps,
        accuracy=accuracy,
        method=method,
        rtol=rtol,
        atol=atol,
        vectorize=vectorize,
        executor=executor,
        progress=progress,
    )
    if mode == "auto":
        mode = "full" if n <= AUTO_FULL_INPUTS and n * m <= AUTO_FULL_ENTRIES else "probe"
    with quiet_arithmetic():
        try:
            run.measure(mode, direction, probes)
        except WrongGradientShape as wrong:
            return _early_report(
                problem,
                "fail",
                mode,
                direction,
                order,
                seed,
                started,
                diagnosis=(wrong.diagnosis(),),
                wrong_argument=wrong.argument,
                evaluations=run.evaluator.evaluations,
                path=run.evaluator.path or "vectorized",
            )
        return run.report(mode, direction, order, time.perf_counter() - started)


def _nothing_to_compare(problem: _Problem) -> str:
    """The note of a check with no Jacobian entry: which side is empty."""
    if problem.in_layout.size == 0:
        names = ", ".join(problem.in_names)
        if any(math.prod(shape) > 0 for shape in problem.in_shapes):
            return (
                "nothing to compare: no entry of the arrays to differentiate is finite "
                f"({names}); entries that are not finite are held fixed"
            )
        return f"nothing to compare: every array to differentiate is empty ({names})"
    if problem.out_names:
        names = ", ".join(problem.out_names)
        return f"nothing to compare: every compared output of f is empty ({names})"
    return "nothing to compare: f has no output with a derivative (see the notes above)"


def _early_report(
    problem: _Problem,
    verdict: Verdict,
    mode: str,
    direction: str,
    order: int,
    seed: int,
    started: float,
    notes: tuple[str, ...] = (),
    diagnosis: tuple[str, ...] = (),
    evaluations: int = 0,
    path: str = "none",
    wrong_argument: str | None = None,
) -> Report:
    """A report decided before any entry is compared: nothing to compare
    (``pass``), or a gradient of the wrong shape (``fail``)."""
    p = problem
    arguments = tuple(
        ArgumentSummary(
            name=name,
            shape=shape,
            dtype=_describe([dtype]),
            relative_error=1.0 if name == wrong_argument else 0.0,
            checked=0,
            wrong=0,
            uncertain=0,
        )
        for name, shape, dtype in zip(p.in_names, p.in_shapes, p.in_dtypes)
    )
    return Report(
        verdict=verdict,
        relative_error=1.0 if verdict == "fail" else 0.0,
        framework=p.adapter.name,
        mode=mode,
        direction=direction,
        order=order,
        precision=p.precision,
        path=path,
        evaluations=evaluations,
        seconds=time.perf_counter() - started,
        seed=seed,
        num_inputs=p.in_layout.size,
        num_outputs=p.out_layout.size,
        checked=0,
        wrong=0,
        uncertain=0,
        arguments=arguments,
        diagnosis=diagnosis,
        notes=(*p.notes, *notes),
    )


def assert_gradients(f: Callable[..., Any], *args: Any, **options: Any) -> Report:
    """Like :func:`check`, but raise :class:`~gradguard.GradientError` (an
    ``AssertionError`` whose message is the report) unless the verdict is
    ``"pass"``; returns the report on a pass."""
    __tracebackhide__ = True  # pytest: show the caller's line, not this one
    report = check(f, *args, **options)
    if not report.passed:
        raise GradientError(report)
    return report


# -- validation -------------------------------------------------------------


def _validate_options(
    f: Any,
    mode: Any,
    direction: Any,
    order: Any,
    seed: Any,
    probes: Any,
    eps: Any,
    rtol: Any,
    atol: Any,
    grad: Any,
    vjp: Any,
    precision: Any,
) -> None:
    if not callable(f):
        raise ArgumentTypeError(f"f: expected a callable, got {type(f).__name__}")
    _choice("mode", mode, MODES)
    _choice("direction", direction, DIRECTIONS)
    _choice("precision", precision, PRECISIONS)
    if isinstance(order, bool) or order not in (1, 2):
        raise ArgumentError(f"order: must be 1 or 2, got {order!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ArgumentError(f"seed: must be a non-negative integer, got {seed!r}")
    if probes is not None and (
        isinstance(probes, bool) or not isinstance(probes, numbers.Integral) or probes < 1
    ):
        raise ArgumentError(f"probes: must be a positive integer, got {probes!r}")
    for name, value in (("eps", eps), ("rtol", rtol), ("atol", atol)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ArgumentTypeError(f"{name}: expected a float, got {type(value).__name__}")
        if not math.isfinite(value) or value < 0 or (name == "eps" and value == 0):
            raise ArgumentError(
                f"{name}: must be {'positive' if name == 'eps' else 'non-negative'} and "
                f"finite, got {value!r}"
            )
    for name, value in (("grad", grad), ("vjp", vjp)):
        if value is not None and not callable(value):
            raise ArgumentTypeError(f"{name}: expected a callable, got {type(value).__name__}")
    if grad is not None and vjp is not None:
        raise ArgumentError("grad, vjp: pass one analytical rule, not both")


def _validate_call(kwargs: Any, has_aux: Any) -> None:
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise ArgumentTypeError(
            f"kwargs: expected a dict of keyword arguments for f, got {type(kwargs).__name__}"
        )
    if kwargs is not None and not all(isinstance(k, str) for k in kwargs):
        raise ArgumentTypeError("kwargs: the keys must be strings (f's keyword names)")
    if not isinstance(has_aux, bool):
        raise ArgumentTypeError(f"has_aux: expected True or False, got {has_aux!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ArgumentError(
            f"{name}: must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"
        )
