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

import inspect
import math
import numbers
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from . import _tree
from ._errors import (
    ArgumentError,
    ArgumentTypeError,
    GradientError,
    MutationError,
    PrecisionError,
    UnsupportedError,
)
from ._evaluation import Evaluator
from ._report import ArgumentSummary, Mismatch, Report
from .adapters import Adapter, adapter_for, adapter_of
from .core import diagnosis as core_diagnosis
from .core.differences import (
    COMPLEX_STEP,
    DirectionalDerivatives,
    complex_step_derivatives,
    directional_derivatives,
    partial_derivatives,
)
from .core.layout import FlatLayout
from .core.steps import default_steps
from .core.verdict import ARRAY_FIELDS, BAND, Entries, Tally, compare

__all__ = ["assert_gradients", "check"]

MODES = ("auto", "full", "probe")
DIRECTIONS = ("rev", "fwd", "both")
PRECISIONS = ("auto", "float64", "native")
METHODS = ("central", "complex-step")
#: ``mode="auto"`` checks every Jacobian entry up to this many inputs...
AUTO_FULL_INPUTS = 2048
#: ...and this many Jacobian entries; beyond, random probes.
AUTO_FULL_ENTRIES = 4_000_000
#: Random dense cotangents (tangents) compared besides the one-hot rows.
DENSE_PROBES = 2
#: Differences between two evaluations at the same point beyond this many
#: units of rounding make f "noisy": flagged, not judged.
NOISE_ULPS = 64
#: Worst entries kept for the report.
WORST = 8
#: Bytes of perturbed points and outputs held at once.
MEMORY_BUDGET = 1 << 25
#: Jacobian entries beyond which the analytical Jacobian is stored in float32
#: (800 MB in float64 at n = m = 10^4; half that in float32).
STORE_ENTRIES = 1 << 25
#: Jacobian entries up to which the report carries error / tolerance per entry.
ERROR_MAP_ENTRIES = 1 << 16
#: Sizes up to which the whole numerical Jacobian is kept for diagnosis.
KEEP_JACOBIAN_ENTRIES = 1 << 20
#: Exact scale factors for one-hot cotangents: powers of two, so scaling and
#: unscaling is exact in every dtype, and never +-1, so a rule that ignores
#: its incoming gradient can neither pass nor pass for a sign flip.
ONE_HOT_SCALES = (-2.0, -0.5, 0.5, 2.0)


def check(
    f: Callable[..., Any],
    *args: Any,
    wrt: int | Sequence[int] | None = None,
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
    arguments.

    - ``wrt``: positional argument index (or indices) to differentiate;
      default every floating-point array in every argument. Other leaves
      (integers, strings, non-float arrays) are passed through untouched.
    - ``mode``: ``"full"`` compares every Jacobian entry; ``"probe"`` a few
      random projections ``u . J . v`` (cheap for large inputs);
      ``"auto"`` picks by size.
    - ``direction``: ``"rev"`` compares vector-Jacobian products (the
      framework's backward / VJP rule), ``"fwd"`` Jacobian-vector products,
      ``"both"`` both.
    - ``order``: 1, or 2 for the derivative of the derivative.
    - ``seed``: seeds the random cotangents and directions; the same seed
      gives the same verdict and numbers.
    - ``probes``: number of random probes in probe mode.
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
      possible (falls back to a loop by itself when f cannot be batched).
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
    if accuracy is not None and (isinstance(accuracy, bool) or accuracy not in (4, 6)):
        raise ArgumentError(f"accuracy: must be 4 or 6 (or None for the default), got {accuracy!r}")
    _choice("method", method, METHODS)
    problem = _Problem.build(f, args, wrt, grad, vjp, precision, order, seed)
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
    n, m = problem.in_layout.size, problem.out_layout.size
    if mode == "auto":
        mode = "full" if n <= AUTO_FULL_INPUTS and n * m <= AUTO_FULL_ENTRIES else "probe"
    if direction in ("fwd", "both") and problem.user_rule:
        raise ArgumentError("direction: grad= and vjp= rules are reverse mode; use direction='rev'")
    if mode == "full":
        run.full(direction)
    else:
        run.probe(direction, probes if probes is not None else run.default_probes())
    return run.report(mode, direction, order, time.perf_counter() - started)


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


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ArgumentError(
            f"{name}: must be one of {', '.join(repr(a) for a in allowed)}, got {value!r}"
        )


# -- the problem: what is differentiated, how f is called -------------------


@dataclass
class _Problem:
    adapter: Adapter
    xp: Any
    fn: Callable[..., list[Any]]
    primals: list[Any]  # framework arrays, the caller's dtypes
    eval_like: list[Any]  # framework arrays in the dtypes the numerical side uses
    in_layout: FlatLayout
    out_layout: FlatLayout
    in_names: list[str]
    out_names: list[str]
    in_dtypes: list[Any]  # core dtypes of the primals
    eval_dtypes: list[Any]
    out_dtypes: list[Any]  # core dtypes of the outputs at the primals
    out_like: list[Any]  # framework outputs at the primals (device, dtype)
    work_dtype: Any
    precision: str
    x0: Any
    analytical_vjp: Callable[[list[Any]], list[Any]]
    user_rule: bool
    eps_analytical: float
    notes: list[str]
    #: f at the point from the setup's first call, flattened, when that call
    #: ran in the numerical side's dtypes (else None).
    first_output: Any
    #: The point in the numerical side's wider dtypes, when they differ from
    #: the caller's and the framework differentiates: the same rule run there
    #: shows how much of the analytical side is rounding (else None).
    wide_primals: list[Any] | None = None

    @classmethod
    def build(
        cls,
        f: Callable[..., Any],
        args: tuple[Any, ...],
        wrt: Any,
        grad: Any,
        vjp: Any,
        precision: str,
        order: int,
        seed: int,
    ) -> _Problem:
        if not args:
            raise ArgumentError("args: pass the point to check at, e.g. check(f, x)")
        names = _argument_names(f, len(args))
        leaves: list[Any] = []
        paths: list[str] = []
        positions: list[int] = []
        for p, arg in enumerate(args):
            arg_leaves, arg_paths, _ = _tree.flatten(arg, names[p])
            leaves += arg_leaves
            paths += arg_paths
            positions += [p] * len(arg_leaves)
        _, _, treedef = _tree.flatten(tuple(args))
        arrays = [i for i, leaf in enumerate(leaves) if adapter_for(leaf) is not None]
        adapter = adapter_of([leaves[i] for i in arrays], "args")
        selected = _wrt_positions(wrt, len(args))
        core_leaves = {i: adapter.to_core(leaves[i]) for i in arrays}
        xp = adapter.namespace(next(iter(core_leaves.values())))
        diff = [
            i
            for i in arrays
            if positions[i] in selected
            and xp.isdtype(core_leaves[i].dtype, ("real floating", "complex floating"))
        ]
        if not diff:
            raise ArgumentTypeError(
                "args: no floating-point array to differentiate"
                + (f" among the arguments wrt={wrt!r} selects" if wrt is not None else "")
                + "; pass float arrays (integers are not differentiable)"
            )
        diff_core = [core_leaves[i] for i in diff]
        _check_points(diff_core, [paths[i] for i in diff], xp, adapter)
        # f only ever sees copies: the caller's arrays cannot change, whatever f does.
        leaves = list(leaves)
        for i in arrays:
            leaves[i] = adapter.from_core(_copy(core_leaves[i], xp), like=leaves[i])
        primals = [leaves[i] for i in diff]
        snapshot = {i: _copy(adapter.to_core(leaves[i]), xp) for i in arrays}

        def call(diff_leaves: Sequence[Any]) -> tuple[list[Any], list[str]]:
            result = f(*_tree.unflatten(treedef, _replace(leaves, diff, list(diff_leaves))))
            outs, out_paths, _ = _tree.flatten(result)
            return outs, out_paths

        def fn(*diff_leaves: Any) -> list[Any]:
            outs, _ = call(diff_leaves)
            return [o if adapter.owns(o) else adapter.asarray_like(o, diff_leaves[0]) for o in outs]

        with adapter.no_grad():
            try:
                raw_outputs, out_paths = call(primals)
            except Exception as exc:
                _note(exc, "gradguard: f raised this when called at the point being checked")
                raise
        _check_unchanged(snapshot, leaves, paths, adapter, xp)
        outputs0 = _output_arrays(raw_outputs, out_paths, adapter, primals[0])
        out_core = [adapter.to_core(o) for o in outputs0]
        for j, o in enumerate(out_core):
            if not xp.isdtype(o.dtype, ("real floating", "complex floating")):
                raise ArgumentTypeError(
                    f"f: output {_name('out', out_paths[j])} has dtype {o.dtype}; "
                    "every output must be a floating-point array or scalar"
                )
        out_names = [_name("out", p) for p in out_paths]
        _check_outputs(out_core, out_names, xp)

        base_fn = fn
        user_rule = grad is not None or vjp is not None
        if order == 2:
            if user_rule:
                raise ArgumentError("order: order=2 needs the framework's autodiff, not grad=/vjp=")
            if not adapter.has_autodiff:
                raise UnsupportedError(f"order=2 needs autodiff, which {adapter.name} lacks")
            rng = _rng(seed + 7919)
            cots = [
                adapter.from_core(_random_like(o, xp, rng), like=out_fw)
                for o, out_fw in zip(out_core, outputs0)
            ]
            fn = adapter.differentiable_vjp(base_fn, cots)
            outputs0 = fn(*primals)
            out_core = [adapter.to_core(o) for o in outputs0]
            out_names = [f"d/d{paths[i]}" for i in diff]

        in_layout = FlatLayout.of(diff_core, xp)
        out_layout = FlatLayout.of(out_core, xp)
        in_dtypes = [c.dtype for c in diff_core]
        notes: list[str] = []

        eval_dtypes, eval_like, precision_text = _choose_precision(
            fn, adapter, xp, diff_core, primals, precision, notes
        )
        work_dtype = _real_dtype(xp, _widest(xp, eval_dtypes))
        x0 = in_layout.flatten_one(
            [xp.astype(c, d) for c, d in zip(diff_core, eval_dtypes)], xp, work_dtype
        )
        out_dtypes = [o.dtype for o in out_core]
        eps_analytical = max(
            float(xp.finfo(_real_dtype(xp, d)).eps) for d in in_dtypes + out_dtypes
        )

        if user_rule:
            analytical_vjp = _user_vjp(
                grad,
                vjp,
                f,
                args,
                treedef,
                leaves,
                diff,
                positions,
                selected,
                adapter,
                xp,
                out_layout,
                outputs0,
            )
        elif adapter.has_autodiff:

            def analytical_vjp(cotangents: list[Any]) -> list[Any]:
                return adapter.vjp(fn, primals, cotangents)

        else:
            analytical_vjp = _no_autodiff(adapter)

        return cls(
            adapter=adapter,
            xp=xp,
            fn=fn,
            primals=primals,
            eval_like=eval_like,
            in_layout=in_layout,
            out_layout=out_layout,
            in_names=[paths[i] for i in diff],
            out_names=out_names,
            in_dtypes=in_dtypes,
            eval_dtypes=eval_dtypes,
            out_dtypes=out_dtypes,
            out_like=outputs0,
            work_dtype=work_dtype,
            precision=precision_text,
            x0=x0,
            analytical_vjp=analytical_vjp,
            user_rule=user_rule,
            eps_analytical=eps_analytical,
            notes=notes,
            first_output=(
                out_layout.flatten_one(out_core, xp, work_dtype)
                if eval_dtypes == in_dtypes
                else None
            ),
            wide_primals=(
                eval_like
                if eval_dtypes != in_dtypes and adapter.has_autodiff and not user_rule
                else None
            ),
        )


def _note(exc: BaseException, text: str) -> None:
    """Say where a user's exception came from, keeping it their exception."""
    if hasattr(exc, "add_note"):  # Python >= 3.11
        exc.add_note(text)


def _check_points(arrays: list[Any], names: list[str], xp: Any, adapter: Adapter) -> None:
    """The point must be finite and not empty."""
    if sum(math.prod(a.shape) for a in arrays) == 0:
        raise ArgumentError(
            f"args: every array to differentiate is empty ({', '.join(names)}); "
            "pass arrays with at least one entry"
        )
    for a, name in zip(arrays, names):
        finite = xp.isfinite(a)
        if not bool(xp.all(finite)):
            flat = adapter.to_numpy(xp.reshape(~finite, (-1,)))
            first = int(flat.nonzero()[0][0])
            index = tuple(int(i) for i in _unravel(first, tuple(a.shape)))
            raise ArgumentError(
                f"{name}: contains NaN or inf (first at index {index}); finite differences "
                "need a finite point: check at another x"
            )


def _unravel(flat_index: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    import numpy as np

    return tuple(int(i) for i in np.unravel_index(flat_index, shape)) if shape else ()


def _check_unchanged(
    snapshot: dict[int, Any], leaves: list[Any], paths: list[str], adapter: Adapter, xp: Any
) -> None:
    """f must not write into its arguments: the check's points would move under it."""
    for i, before in snapshot.items():
        after = adapter.to_core(leaves[i])
        same = tuple(after.shape) == tuple(before.shape) and bool(
            xp.all((after == before) | (xp.isnan(xp.abs(after)) & xp.isnan(xp.abs(before))))
            if xp.isdtype(before.dtype, ("real floating", "complex floating"))
            else xp.all(after == before)
        )
        if not same:
            raise MutationError(
                f"f: modifies its argument {paths[i]} in place; gradguard evaluates f at "
                "many points and cannot check a function that changes them (your own arrays "
                "are untouched: f was given copies). Work on a copy inside f (x = x.clone(), "
                "x.copy()) or use out-of-place operations"
            )


def _check_outputs(outputs: list[Any], names: list[str], xp: Any) -> None:
    if sum(math.prod(o.shape) for o in outputs) == 0:
        raise ArgumentError(
            "f: returned only empty arrays; there is nothing to compare: f must return at "
            "least one value"
        )
    for o, name in zip(outputs, names):
        if not bool(xp.all(xp.isfinite(o))):
            raise ArgumentError(
                f"f: returned NaN or inf in {name} at the point itself; finite differences "
                "need f finite at x: check at another x"
            )


def _argument_names(f: Any, count: int) -> list[str]:
    names = [f"args[{p}]" for p in range(count)]
    try:
        params = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return names
    for p, param in enumerate(params[:count]):
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            names[p] = param.name
        else:
            break
    return names


def _wrt_positions(wrt: Any, count: int) -> set[int]:
    if wrt is None:
        return set(range(count))
    items = [wrt] if isinstance(wrt, numbers.Integral) and not isinstance(wrt, bool) else wrt
    try:
        positions = list(items)
    except TypeError:
        raise ArgumentTypeError(
            f"wrt: expected an argument index or a tuple of them, got {wrt!r}"
        ) from None
    indices = []
    for p in positions:
        if isinstance(p, bool) or not isinstance(p, numbers.Integral):
            raise ArgumentTypeError(f"wrt: argument indices must be integers, got {p!r}")
        if not -count <= int(p) < count:
            raise ArgumentError(
                f"wrt: index {p} is out of range for {count} argument(s); use 0 .. {count - 1} "
                "(or negative from the end)"
            )
        indices.append(int(p) % count)
    return set(indices)


def _name(prefix: str, path: str) -> str:
    return path if path.startswith(prefix) else f"{prefix}{path}" if path else prefix


def _replace(leaves: list[Any], positions: list[int], values: list[Any]) -> list[Any]:
    full = list(leaves)
    for i, v in zip(positions, values):
        full[i] = v
    return full


def _copy(core: Any, xp: Any) -> Any:
    return xp.asarray(core, copy=True)


def _output_arrays(outs: list[Any], paths: list[str], adapter: Adapter, like: Any) -> list[Any]:
    """f's output leaves as framework arrays; refuses what cannot be one."""
    if not outs:
        raise ArgumentTypeError("f: returned an empty container; it must return a float array")
    arrays = []
    for out, path in zip(outs, paths):
        if adapter.owns(out):
            arrays.append(out)
        elif isinstance(out, numbers.Number) and not isinstance(out, bool):
            arrays.append(adapter.asarray_like(out, like))
        else:
            raise ArgumentTypeError(
                f"f: output {_name('out', path)} is {type(out).__name__}; f must return "
                f"{adapter.name} arrays or floats (or containers of them)"
            )
    return arrays


def _widest(xp: Any, dtypes: list[Any]) -> Any:
    return xp.result_type(*dtypes) if len(dtypes) > 1 else dtypes[0]


def _real_dtype(xp: Any, dtype: Any) -> Any:
    if xp.isdtype(dtype, "complex floating"):
        return xp.float64 if dtype == xp.complex128 else xp.float32
    return dtype


def _wide_dtype(xp: Any, dtype: Any) -> Any:
    return xp.complex128 if xp.isdtype(dtype, "complex floating") else xp.float64


def _choose_precision(
    fn: Callable[..., list[Any]],
    adapter: Adapter,
    xp: Any,
    diff_core: list[Any],
    primals: list[Any],
    precision: str,
    notes: list[str],
) -> tuple[list[Any], list[Any], str]:
    """Dtypes for the numerical side: float64 if f accepts it, else float32
    for inputs narrower than that, else the inputs' own."""
    native = [c.dtype for c in diff_core]
    ladder = [(xp.float64, xp.complex128)]
    if precision == "native":
        ladder = []
    elif precision == "auto":
        ladder.append((xp.float32, xp.complex64))
    reasons = []
    for real, complex_ in ladder:
        wanted = [complex_ if xp.isdtype(d, "complex floating") else real for d in native]
        if wanted == native:
            return native, primals, _describe(native)
        if any(_bits(xp, w) < _bits(xp, d) for w, d in zip(wanted, native)):
            continue  # never evaluate below the caller's own precision
        if real == xp.float64 and not adapter.float64_available(primals[0]):
            reason = f"{adapter.name} has float64 disabled here"
            if adapter.name == "jax":
                reason += " (jax.config.update('jax_enable_x64', True) enables it)"
            reasons.append(reason)
            continue
        like = [
            adapter.from_core(xp.astype(c, d), like=p)
            for c, d, p in zip(diff_core, wanted, primals)
        ]
        try:
            with adapter.no_grad():
                outs = [adapter.to_core(o) for o in fn(*like)]
        except Exception as exc:  # f refuses this dtype: a float32-only kernel, say
            reasons.append(f"f raised {type(exc).__name__} on {_describe([real])} input")
            continue
        if all(_bits(xp, o.dtype) >= _bits(xp, real) for o in outs):
            if reasons:
                notes.append(
                    "numerical side in " + _describe(wanted) + " because " + "; ".join(reasons)
                )
            return wanted, like, _describe(wanted)
        reasons.append(f"f returns lower precision for {_describe([real])} input")
    if precision == "float64":
        raise ArgumentError(f"precision: 'float64' is not possible: {'; '.join(reasons)}")
    if reasons:
        notes.append("numerical side in the input dtype because " + "; ".join(reasons))
    return native, primals, _describe(native)


def _bits(xp: Any, dtype: Any) -> int:
    """Precision rank of a floating dtype (complex counts by its parts)."""
    real = _real_dtype(xp, dtype)
    return int(-math.log2(float(xp.finfo(real).eps)))


def _describe(dtypes: list[Any]) -> str:
    names = sorted({str(d).replace("torch.", "").replace("dtype(", "").strip("')") for d in dtypes})
    return "/".join(names)


def _no_autodiff(adapter: Adapter) -> Callable[[list[Any]], list[Any]]:
    def missing(cotangents: list[Any]) -> list[Any]:
        raise UnsupportedError(
            f"{adapter.name} has no autodiff: pass the analytical derivative as "
            "grad=fn (fn(*args) returns the gradient of a scalar f) or "
            "vjp=fn (fn(cotangent, *args) returns the vector-Jacobian product)"
        )

    return missing


def _user_vjp(
    grad: Any,
    vjp: Any,
    f: Any,
    args: tuple[Any, ...],
    treedef: Any,
    leaves: list[Any],
    diff: list[int],
    positions: list[int],
    selected: set[int],
    adapter: Adapter,
    xp: Any,
    out_layout: FlatLayout,
    outputs0: list[Any],
) -> Callable[[list[Any]], list[Any]]:
    """The caller's grad/vjp rule as a batched VJP on framework arrays."""
    wanted = sorted(selected)
    call_args = _tree.unflatten(treedef, leaves)
    if grad is not None and out_layout.size != 1:
        raise ArgumentError(
            f"grad: f has {out_layout.size} real outputs; grad= needs a real scalar f, "
            "use vjp=fn (fn(cotangent, *args)) instead"
        )

    def gather(result: Any, rule: str) -> list[Any]:
        per_arg = (
            [result]
            if len(wanted) == 1
            else list(result)
            if isinstance(result, (tuple, list))
            else None
        )
        if per_arg is None or len(per_arg) != len(wanted):
            raise ArgumentError(
                f"{rule}: returned {type(result).__name__}; expected one entry per "
                f"differentiated argument ({len(wanted)}), a tuple when there are several"
            )
        values: list[Any] = []
        for p, item in zip(wanted, per_arg):
            item_leaves, _, _ = _tree.flatten(item)
            mine = [i for i in range(len(leaves)) if positions[i] == p]
            if len(item_leaves) != len(mine):
                raise ArgumentError(
                    f"{rule}: the entry for argument {p} has {len(item_leaves)} leaves, "
                    f"the argument has {len(mine)}; mirror its structure"
                )
            for i, value in zip(mine, item_leaves):
                if i in diff:
                    values.append(value)
        out = []
        for value, i in zip(values, diff):
            target = leaves[i]
            if value is None or isinstance(value, (str, bytes)):
                raise ArgumentTypeError(
                    f"{rule}: returned {type(value).__name__} for argument {positions[i]}; "
                    "return an array shaped like that argument"
                )
            if not adapter.owns(value):
                value = adapter.from_core(
                    adapter.namespace(adapter.to_core(target)).asarray(value), like=target
                )
            if tuple(value.shape) != tuple(target.shape):
                raise ArgumentError(
                    f"{rule}: gradient of shape {tuple(value.shape)} for an argument of "
                    f"shape {tuple(target.shape)}; return one derivative per entry"
                )
            out.append(adapter.to_core(value))
        return out

    def rule_vjp(cotangents: list[Any]) -> list[Any]:
        k = cotangents[0].shape[0]
        rows = []
        for r in range(k):
            cot = [c[r, ...] for c in cotangents]
            if grad is not None:
                g = gather(grad(*call_args), "grad")
                scale = cot[0]
                rows.append([gi * xp.reshape(adapter.to_core(scale), ()) for gi in g])
            else:
                out_tree = _tree.unflatten(_output_treedef(f, call_args), cot)
                rows.append(gather(vjp(out_tree, *call_args), "vjp"))
        return [
            adapter.from_core(xp.stack([row[i] for row in rows], axis=0), like=leaves[diff[i]])
            for i in range(len(diff))
        ]

    return rule_vjp


def _output_treedef(f: Any, call_args: Any) -> Any:
    _, _, treedef = _tree.flatten(f(*call_args))
    return treedef


# -- running the comparison -------------------------------------------------


def _rng(seed: int) -> Any:
    import numpy as np

    return np.random.default_rng(seed)


def _random_like(core: Any, xp: Any, rng: Any) -> Any:
    """Standard normal entries shaped like ``core`` (complex: both parts)."""
    shape = tuple(core.shape)
    values = rng.standard_normal(shape)
    if xp.isdtype(core.dtype, "complex floating"):
        values = values + 1j * rng.standard_normal(shape)
    return _to_xp(values, xp, core)


def _to_xp(host: Any, xp: Any, like: Any) -> Any:
    """NumPy -> the namespace of ``like`` (same device and dtype)."""
    import numpy as np

    array = xp.asarray(np.asarray(host), device=_device(like))
    return xp.astype(array, like.dtype)


def _device(array: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(array)


class _Run:
    """The numerical and analytical sides of one check, and their comparison."""

    def __init__(
        self,
        problem: _Problem,
        *,
        seed: int,
        eps: float | None,
        accuracy: int | None,
        method: str,
        rtol: Any,
        atol: Any,
        vectorize: bool,
        executor: Executor | None,
        progress: bool | None,
    ):
        self.p = problem
        self.xp = problem.xp
        self.seed = seed
        self.rng = _rng(seed)
        self.rtol = rtol
        self.atol = atol
        xp = self.xp
        p = problem
        n, m = p.in_layout.size, p.out_layout.size
        low_precision = float(xp.finfo(p.work_dtype).eps) > 1e-10
        self.accuracy = accuracy if accuracy is not None else 6 if low_precision else 4
        # Chunks sized to MEMORY_BUDGET: a column of a full check holds its
        # perturbed points and outputs plus some twenty (columns, m) arrays of
        # bookkeeping; small chunks also stay in cache.
        per_column = 8 * (self.accuracy * (n + m) + 20 * m + 1)
        self.columns_per_chunk = max(1, MEMORY_BUDGET // per_column)
        self.rows_per_vjp = max(1, MEMORY_BUDGET // (8 * 4 * (n + m + 1)))
        k_rows = self.accuracy * self.columns_per_chunk
        self.evaluator = Evaluator(
            p.adapter,
            p.fn,
            p.eval_like,
            vectorize=vectorize,
            chunk_rows=k_rows,
            executor=executor,
            progress=progress,
        )
        # f at x, and once more (or the setup's call, when it ran in the same
        # dtypes): any difference between two plain evaluations is
        # nondeterminism. The centre enters only the roughness measure, where
        # a rounding difference from the batched path is harmless.
        self.f0 = self.evaluate_single(p.x0)
        again = p.first_output if p.first_output is not None else self.evaluate_single(p.x0)
        self.noise = xp.abs(again - self.f0)
        unit = float(xp.finfo(p.work_dtype).eps)
        # The batched points a full check evaluates, for the progress bar.
        self.evaluator.expected = self.accuracy * p.in_layout.size
        self.nondeterministic = bool(xp.any(self.noise > 0))
        self.noisy = bool(xp.any(self.noise > NOISE_ULPS * unit * xp.abs(self.f0)))
        self.complex_step = method == "complex-step"
        if self.complex_step:
            self._check_complex_step()
        if eps is not None:
            self.steps = xp.full(p.x0.shape, float(eps), dtype=p.work_dtype)
            moved = (p.x0 + self.steps) - (p.x0 - self.steps)
            if not bool(xp.all(xp.abs(moved - 2 * self.steps) <= 1e-3 * 2 * self.steps)):
                largest = float(xp.max(xp.abs(p.x0)))
                working = float(xp.finfo(p.work_dtype).eps) ** (1 / 3) * max(1.0, largest)
                raise PrecisionError(
                    f"eps: {eps:g} is lost to rounding at this x in {_describe([p.work_dtype])}; "
                    f"use eps={working:.3g} or leave eps=None for steps chosen per entry"
                )
        else:
            self.steps = self._default_steps()
        self.tally = Tally()
        self.eps_store = 0.0  # rounding of the stored analytical Jacobian, if any
        # error / tolerance of every entry (inputs, outputs), kept for small checks.
        self.error_map_t: Any = None
        self.by_argument = [Tally() for _ in p.in_layout.slots]
        self.directions: dict[str, Tally] = {}
        self.worst: list[Mismatch] = []
        self.reasons: list[str] = []
        self.uncertain_kinds: dict[str, int] = {}
        self.keep = p.in_layout.size * p.out_layout.size <= KEEP_JACOBIAN_ENTRIES
        self.jacobians: dict[str, Any] = {}
        self.row_scales: Any = None
        self.row_cross: Any = None
        self.row_num_sq: Any = None
        self.dense_wrong = 0
        self.one_hot_wrong = 0

    # -- evaluation ------------------------------------------------------
    def evaluate(self, points: Any) -> Any:
        p = self.p
        leaves = p.in_layout.unflatten(points, self.xp, p.eval_dtypes)
        try:
            outputs = self.evaluator(leaves)
        except Exception as exc:
            _note(exc, "gradguard: f raised this at a perturbed point near x (numerical side)")
            raise
        return p.out_layout.flatten(outputs, self.xp, p.work_dtype)

    def evaluate_single(self, x: Any) -> Any:
        p = self.p
        leaves = [a[0, ...] for a in p.in_layout.unflatten(x[None, :], self.xp, p.eval_dtypes)]
        outputs = self.evaluator.single(leaves)
        return p.out_layout.flatten_one(outputs, self.xp, p.work_dtype)

    def derivatives(self, directions: Any) -> DirectionalDerivatives:
        """Numerical ``J @ d`` along the rows of ``directions`` (scaled per entry)."""
        xp, p = self.xp, self.p
        if self.complex_step:
            small = directions * (self._scale() * COMPLEX_STEP)[None, :]
            return complex_step_derivatives(self.evaluate_complex, p.x0, small, xp)
        return directional_derivatives(
            self.evaluate, p.x0, directions * self.steps[None, :], self.f0, xp, self.accuracy
        )

    def partials(self, start: int, stop: int) -> DirectionalDerivatives:
        """Numerical ``J[:, start:stop]``, transposed: ``(stop - start, m)``,
        every field per unit of the coordinate."""
        xp, p = self.xp, self.p
        if not self.complex_step:
            return partial_derivatives(
                self.evaluate, p.x0, self.steps[start:stop], start, self.f0, xp, self.accuracy
            )
        c = stop - start
        mask = xp.eye(c, p.in_layout.size, k=start, dtype=p.work_dtype)
        dd = self.derivatives(mask)
        step = xp.sum(dd.direction * mask, axis=1)[:, None]
        return DirectionalDerivatives(
            value=dd.value / step,
            truncation=dd.truncation,
            rounding=dd.rounding / xp.abs(step),
            roughness=dd.roughness,
            nonfinite=dd.nonfinite,
            direction=step[:, 0],
        )

    def evaluate_complex(self, points: Any) -> Any:
        """``(k, n)`` complex points -> ``(k, m)`` complex outputs (complex step)."""
        p, xp = self.p, self.xp
        k = points.shape[0]
        leaves = [
            xp.reshape(points[:, s.offset : s.offset + s.size], (k, *s.shape))
            for s in p.in_layout.slots
        ]
        try:
            outputs = self.evaluator(leaves)
        except Exception as exc:
            raise ArgumentError(
                f"method: 'complex-step' needs f to accept complex input; it raised "
                f"{type(exc).__name__}: {exc}. Use method='central'"
            ) from exc
        return xp.concat([xp.reshape(o, (k, -1)) for o in outputs], axis=1)

    def _scale(self) -> Any:
        xp = self.xp
        return xp.maximum(xp.abs(self.p.x0), xp.ones_like(self.p.x0))

    def _check_complex_step(self) -> None:
        """Complex step is exact only for analytic f: compare one random
        direction with central differences before trusting it."""
        xp, p = self.xp, self.p
        if any(s.is_complex for s in p.in_layout.slots + p.out_layout.slots):
            raise ArgumentError(
                "method: 'complex-step' needs real inputs and outputs; use method='central'"
            )
        v = self._random(1, p.in_layout.size)
        self.complex_step = False
        h = default_steps(p.x0, xp, order=2)
        central = directional_derivatives(self.evaluate, p.x0, v * h[None, :], self.f0, xp, 4)
        self.complex_step = True
        small = v * (self._scale() * COMPLEX_STEP)[None, :]
        exact = complex_step_derivatives(self.evaluate_complex, p.x0, small, xp)
        # Same direction, different lengths: compare per unit of length.
        ratio = xp.sum(small * v) / xp.sum((v * h[None, :]) * v)
        agree = compare(
            exact.value / ratio,
            central.value,
            central.truncation,
            central.rounding,
            central.roughness,
            central.nonfinite,
            xp.abs(central.value),
            p.eps_analytical,
            xp,
        )
        if bool(xp.any(agree.wrong | agree.uncertain)):
            raise ArgumentError(
                "method: 'complex-step' disagrees with central differences for this f, so f "
                "is not analytic in x (abs, max, comparisons, casts to real or .real); use "
                "method='central'"
            )

    def _default_steps(self) -> Any:
        xp, p = self.xp, self.p
        parts = []
        for slot, dtype in zip(p.in_layout.slots, p.eval_dtypes):
            x = p.x0[slot.offset : slot.offset + slot.width]
            real = _real_dtype(xp, dtype)
            # The error estimate is the order (accuracy - 2) stencil's: step for it.
            h = default_steps(xp.astype(x, real), xp, order=self.accuracy - 2)
            parts.append(xp.astype(h, p.work_dtype))
        return xp.concat(parts) if parts else xp.zeros((0,), dtype=p.work_dtype)

    def default_probes(self) -> int:
        # Low precision on either side hides a small error in any one probe:
        # more probes keep the chance of missing it negligible.
        eps = max(float(self.xp.finfo(self.p.work_dtype).eps), self.p.eps_analytical)
        return 16 if eps > 1e-10 else 4

    # -- analytical side ---------------------------------------------------
    def vjp(self, cotangents: Any) -> tuple[Any, Any]:
        """``(k, m)`` real cotangents -> ``(k, n)`` real VJPs via the framework,
        and the same rule's VJPs at the wider dtypes (None without them)."""
        p, xp = self.p, self.xp
        value = self._vjp(cotangents, p.primals, p.out_dtypes, p.analytical_vjp)
        if p.wide_primals is None:
            return value, None
        wide = p.wide_primals
        dtypes = [_wide_dtype(xp, d) for d in p.out_dtypes]

        def wide_vjp(cots: list[Any]) -> list[Any]:
            return p.adapter.vjp(p.fn, wide, cots)

        return value, self._vjp(cotangents, wide, dtypes, wide_vjp)

    def _vjp(self, cotangents: Any, primals: list[Any], out_dtypes: list[Any], rule: Any) -> Any:
        p, xp = self.p, self.xp
        cots = p.out_layout.unflatten(cotangents, xp, out_dtypes)
        framework = [p.adapter.from_core(c, like=o) for c, o in zip(cots, p.out_like)]
        try:
            grads = [p.adapter.to_core(g) for g in rule(framework)]
        except Exception as exc:
            if not isinstance(exc, UnsupportedError):
                _note(exc, "gradguard: raised by the derivative rule (reverse mode, VJP)")
            raise
        for g, like, name in zip(grads, primals, p.in_names):
            if tuple(g.shape[1:]) != tuple(like.shape):
                raise ArgumentError(
                    f"f: its derivative for {name} has shape {tuple(g.shape[1:])}, the "
                    f"argument has {tuple(like.shape)}; a backward rule must return one "
                    "gradient per input entry"
                )
        return p.in_layout.flatten(grads, xp, p.work_dtype)

    def jvp(self, tangents: Any) -> tuple[Any, Any]:
        """``(k, n)`` real tangents -> ``(k, m)`` real JVPs, and the same at the
        wider dtypes (None without them)."""
        p, xp = self.p, self.xp
        value = self._jvp(tangents, p.primals, p.in_dtypes)
        if p.wide_primals is None:
            return value, None
        wide_dtypes = [_wide_dtype(xp, d) for d in p.in_dtypes]
        return value, self._jvp(tangents, p.wide_primals, wide_dtypes)

    def _jvp(self, tangents: Any, primals: list[Any], dtypes: list[Any]) -> Any:
        p, xp = self.p, self.xp
        tans = p.in_layout.unflatten(tangents, xp, dtypes)
        framework = [p.adapter.from_core(t, like=x) for t, x in zip(tans, primals)]
        try:
            outs = [p.adapter.to_core(o) for o in p.adapter.jvp(p.fn, primals, framework)]
        except Exception as exc:
            if not isinstance(exc, UnsupportedError):
                _note(exc, "gradguard: raised by the derivative rule (forward mode, JVP)")
            raise
        return p.out_layout.flatten(outs, xp, p.work_dtype)

    def _round_to(self, values: Any, layout: FlatLayout, dtypes: list[Any]) -> Any:
        """Round real coordinates to what the analytical side actually receives."""
        xp = self.xp
        return layout.flatten(layout.unflatten(values, xp, dtypes), xp, self.p.work_dtype)

    def _random(self, rows: int, cols: int) -> Any:
        host = self.rng.standard_normal((rows, cols))
        return _to_xp(host, self.xp, self.p.x0)

    # -- full Jacobian -------------------------------------------------------
    def full(self, direction: str) -> None:
        """Every Jacobian entry. Arrays here are ``(columns, outputs)``: one
        row per input coordinate, the orientation the differences come in."""
        xp, p = self.xp, self.p
        n, m = p.in_layout.size, p.out_layout.size
        if n * m <= ERROR_MAP_ENTRIES:
            self.error_map_t = xp.zeros((n, m), dtype=p.work_dtype)
        rev = direction in ("rev", "both")
        fwd = direction in ("fwd", "both")
        if rev:
            scales = self.rng.choice(ONE_HOT_SCALES, size=m)
            self.row_scales = _to_xp(scales, xp, p.x0)
            # The analytical Jacobian, transposed: (n, m), filled block by block.
            # Past STORE_ENTRIES it is kept in float32, and its rounding joins
            # the analytical side's in the tolerances.
            storage = p.work_dtype
            if n * m > STORE_ENTRIES and float(xp.finfo(storage).eps) < 1e-10:
                storage = xp.float32
                self.eps_store = float(xp.finfo(storage).eps)
                p.notes.append(
                    f"the analytical Jacobian ({m} x {n}) was held in float32 to bound memory"
                )
            jac_t = xp.empty((n, m), dtype=storage)
            # |analytical - the same rule in the wider dtypes|: its rounding.
            jac_err_t = xp.empty((n, m), dtype=storage) if p.wide_primals is not None else None
            for start in range(0, m, self.rows_per_vjp):
                stop = min(m, start + self.rows_per_vjp)
                scale = self.row_scales[start:stop][:, None]
                onehot = xp.eye(stop - start, m, k=start, dtype=p.work_dtype) * scale
                rows, wide = self.vjp(onehot)
                jac_t[:, start:stop] = xp.astype(
                    xp.matrix_transpose(rows / scale), storage, copy=False
                )
                if jac_err_t is not None:
                    err = xp.abs(rows - wide) / xp.abs(scale)
                    jac_err_t[:, start:stop] = xp.astype(
                        xp.matrix_transpose(err), storage, copy=False
                    )
            dense_cots = self._round_to(self._random(DENSE_PROBES, m), p.out_layout, p.out_dtypes)
            dense_cots_t = xp.matrix_transpose(dense_cots)
            dense_ana, dense_wide = self.vjp(dense_cots)
            dense_err = None if dense_wide is None else xp.abs(dense_ana - dense_wide)
            self.row_cross = xp.zeros((m,), dtype=p.work_dtype)
            self.row_num_sq = xp.zeros((m,), dtype=p.work_dtype)
        if fwd:
            dense_tans = self._round_to(self._random(DENSE_PROBES, n), p.in_layout, p.in_dtypes)
            zeros = xp.zeros((DENSE_PROBES, m), dtype=p.work_dtype)
            fwd_num, fwd_trunc, fwd_round, fwd_rough = zeros, zeros, zeros, zeros
        kept = []
        for start in range(0, n, self.columns_per_chunk):
            stop = min(n, start + self.columns_per_chunk)
            dd = self.partials(start, stop)
            num, trunc, rough, bad = dd.value, dd.truncation, dd.roughness, dd.nonfinite
            rnd = dd.rounding + self.noise[None, :] / xp.abs(dd.direction)[:, None]
            if self.keep:
                kept.append(num)
            scale = self._entry_scale(num)
            if rev:
                ana = xp.astype(jac_t[start:stop, :], p.work_dtype, copy=False)
                ana_err = None
                if jac_err_t is not None:
                    ana_err = xp.astype(jac_err_t[start:stop, :], p.work_dtype, copy=False)
                self._compare(
                    "entry",
                    ana,
                    num,
                    trunc,
                    rnd,
                    rough,
                    bad,
                    scale,
                    start,
                    rows=True,
                    analytical_error=ana_err,
                )
                # Random dense cotangents: u^T J for the columns of this chunk.
                weights = xp.abs(dense_cots_t)
                self._compare(
                    "cotangent",
                    dense_ana[:, start:stop],
                    xp.matrix_transpose(num @ dense_cots_t),
                    xp.matrix_transpose(trunc @ weights),
                    xp.matrix_transpose(rnd @ weights),
                    xp.matrix_transpose(rough @ weights),
                    xp.broadcast_to(xp.any(bad, axis=1)[None, :], (DENSE_PROBES, stop - start)),
                    xp.matrix_transpose(xp.abs(num) @ weights),
                    start,
                    analytical_error=None if dense_err is None else dense_err[:, start:stop],
                )
            if fwd:
                c = stop - start
                tscales = _to_xp(self.rng.choice(ONE_HOT_SCALES, size=c), xp, p.x0)
                tangents = xp.eye(c, n, k=start, dtype=p.work_dtype) * tscales[:, None]
                columns, wide = self.jvp(tangents)
                columns_err = None
                if wide is not None:
                    columns_err = xp.abs(columns - wide) / xp.abs(tscales[:, None])
                self._compare(
                    "entry",
                    columns / tscales[:, None],
                    num,
                    trunc,
                    rnd,
                    rough,
                    bad,
                    scale,
                    start,
                    forward=True,
                    analytical_error=columns_err,
                )
                v = dense_tans[:, start:stop]
                fwd_num = fwd_num + v @ num
                fwd_trunc = fwd_trunc + xp.abs(v) @ trunc
                fwd_round = fwd_round + xp.abs(v) @ rnd
                fwd_rough = fwd_rough + xp.abs(v) @ rough
        if fwd:
            fwd_ana, fwd_wide = self.jvp(dense_tans)
            self._compare(
                "tangent",
                fwd_ana,
                fwd_num,
                fwd_trunc,
                fwd_round,
                fwd_rough,
                xp.zeros(fwd_num.shape, dtype=xp.bool),
                xp.abs(fwd_num) + xp.abs(fwd_ana),
                0,
                forward=True,
                analytical_error=None if fwd_wide is None else xp.abs(fwd_ana - fwd_wide),
            )
        if self.keep and kept:
            self.jacobians["numerical"] = xp.matrix_transpose(xp.concat(kept, axis=0))
            if rev:
                self.jacobians["analytical"] = xp.matrix_transpose(jac_t)

    def _entry_scale(self, num: Any) -> Any:
        """Size of the terms behind an entry, which its rounding scales with:
        the largest numerical entry of its row, column and chunk. An entry that
        comes out small by cancellation carries the rounding of its terms."""
        xp = self.xp
        magnitude = xp.abs(num)
        if not bool(xp.all(xp.isfinite(magnitude))):
            magnitude = xp.where(xp.isfinite(magnitude), magnitude, xp.zeros_like(magnitude))
        row = xp.max(magnitude, axis=1, keepdims=True)
        col = xp.max(magnitude, axis=0, keepdims=True)
        return xp.maximum(xp.maximum(row, col), xp.max(magnitude))

    # -- random probes -------------------------------------------------------
    def probe(self, direction: str, count: int) -> None:
        xp, p = self.xp, self.p
        n, m = p.in_layout.size, p.out_layout.size
        v = self._random(count, n)
        dd = self.derivatives(v)
        rnd = dd.rounding + self.noise[None, :]
        if direction in ("rev", "both"):
            u = self._round_to(self._random(count, m), p.out_layout, p.out_dtypes)
            grads, wide = self.vjp(u)  # (k, n)
            ana = xp.sum(grads * dd.direction, axis=1)
            ana_err = None
            if wide is not None:
                ana_err = xp.abs(ana - xp.sum(wide * dd.direction, axis=1))
            num = xp.sum(u * dd.value, axis=1)
            trunc = xp.sqrt(xp.sum((u * dd.truncation) ** 2, axis=1))
            rounding = xp.sum(xp.abs(u) * rnd, axis=1)
            rough = xp.sum(xp.abs(u) * dd.roughness, axis=1)
            bad = xp.any(dd.nonfinite, axis=1)
            # Rounding of the analytical side enters each term independently,
            # so it grows like the 2-norm of the terms, not their sum.
            scale = xp.sqrt(xp.sum((grads * dd.direction) ** 2, axis=1)) + xp.sqrt(
                xp.sum((u * dd.value) ** 2, axis=1)
            )
            self._compare(
                "probe", ana, num, trunc, rounding, rough, bad, scale, 0, analytical_error=ana_err
            )
        if direction in ("fwd", "both"):
            tangents = self._round_to(dd.direction, p.in_layout, p.in_dtypes)
            ana, wide = self.jvp(tangents)  # (k, m)
            scale = xp.max(xp.abs(dd.value), axis=1, keepdims=True)
            self._compare(
                "probe",
                ana,
                dd.value,
                dd.truncation,
                rnd,
                dd.roughness,
                dd.nonfinite,
                xp.broadcast_to(scale, ana.shape),
                0,
                forward=True,
                analytical_error=None if wide is None else xp.abs(ana - wide),
            )

    # -- comparison and bookkeeping -----------------------------------------
    def _compare(
        self,
        kind: str,
        ana: Any,
        num: Any,
        trunc: Any,
        rnd: Any,
        rough: Any,
        bad: Any,
        scale: Any,
        start: int,
        rows: bool = False,
        forward: bool = False,
        analytical_error: Any = None,
    ) -> None:
        xp, p = self.xp, self.p
        eps_ana = max(p.eps_analytical, self.eps_store if kind == "entry" else 0.0)
        entries = compare(
            ana,
            num,
            trunc,
            rnd,
            rough,
            bad,
            scale,
            eps_ana,
            xp,
            self.rtol,
            self.atol,
            analytical_error=analytical_error,
        )
        tally = Tally.of(entries, xp)
        self.tally.merge(tally)
        self.directions.setdefault("fwd" if forward else "rev", Tally()).merge(tally)
        wrong = int(xp.sum(xp.astype(entries.wrong, xp.int64)))
        if kind == "cotangent":
            self.dense_wrong += wrong
        elif kind == "entry":
            self.one_hot_wrong += wrong
        for key, flags in (
            ("nonfinite", entries.nonfinite),
            ("rough", entries.rough),
            ("marginal", entries.marginal),
            ("rough_agreeing", entries.rough_agreeing),
        ):
            count = int(xp.sum(xp.astype(flags, xp.int64)))
            if count:
                self.uncertain_kinds[key] = self.uncertain_kinds.get(key, 0) + count
        if kind in ("entry", "cotangent") and ana.ndim == 2:
            if len(self.by_argument) == 1:
                self.by_argument[0].merge(tally)
            else:
                self._tally_arguments(entries, start, by_rows=kind == "entry")
        if rows and self.row_cross is not None and entries.exceeding:
            # Per output: <ana, num> and <num, num> over the inputs (rows here).
            a0 = xp.where(xp.isfinite(ana) & xp.isfinite(num), ana, xp.zeros_like(ana))
            n0 = xp.where(xp.isfinite(num), num, xp.zeros_like(num))
            self.row_cross = self.row_cross + xp.sum(a0 * n0, axis=0)
            self.row_num_sq = self.row_num_sq + xp.sum(n0 * n0, axis=0)
        self._keep_worst(kind, entries, start)
        if kind == "entry" and self.error_map_t is not None:
            ratio = entries.error / entries.tolerance
            ratio = xp.where(ratio == ratio, ratio, xp.full_like(ratio, math.inf))
            stop = start + ratio.shape[0]
            self.error_map_t[start:stop, :] = xp.maximum(self.error_map_t[start:stop, :], ratio)

    def _tally_arguments(self, entries: Entries, start: int, by_rows: bool) -> None:
        """Split a batch by differentiated argument: input coordinates run
        along the rows (entries) or the columns (cotangent products)."""
        xp, p = self.xp, self.p
        width = entries.error.shape[0 if by_rows else 1]
        for slot, tally in zip(p.in_layout.slots, self.by_argument):
            lo = max(start, slot.offset) - start
            hi = min(start + width, slot.offset + slot.width) - start
            if lo >= hi:
                continue
            part = entries.map(lambda a, lo=lo, hi=hi: a[lo:hi, :] if by_rows else a[:, lo:hi])
            tally.merge(Tally.of(part, xp))

    def _keep_worst(self, kind: str, entries: Entries, start: int) -> None:
        xp = self.xp
        ratio = entries.error / xp.where(
            entries.tolerance > 0, entries.tolerance, xp.full_like(entries.tolerance, 1e-300)
        )
        ratio = xp.where(xp.isnan(ratio), xp.full_like(ratio, math.inf), ratio)
        if math.prod(ratio.shape) == 0:
            return
        host = self.p.adapter.to_numpy
        if ratio.ndim == 2:
            # Best rows first, then the best entries among them: no full sort.
            rows = xp.argsort(-xp.max(ratio, axis=1))[:WORST]
            sub = xp.take(ratio, rows, axis=0)
            cols = sub.shape[1]
            order = xp.argsort(-xp.reshape(sub, (-1,)))[:WORST]
            row_ids = host(rows)
            places = [(int(row_ids[int(i) // cols]), int(i) % cols) for i in host(order)]
        else:
            order = xp.argsort(-ratio)[:WORST]
            places = [(int(i), 0) for i in host(order)]
        for row, col in places:
            values = {
                name: getattr(entries, name)[row, col]
                if ratio.ndim == 2
                else getattr(entries, name)[row]
                for name in ARRAY_FIELDS
            }
            ana, num, err, tol = (
                float(values[name]) for name in ("analytical", "numerical", "error", "tolerance")
            )
            status = (
                "wrong"
                if bool(values["wrong"])
                else "uncertain"
                if bool(values["uncertain"])
                else "ok"
            )
            self.worst.append(self._mismatch(kind, row, col, start, ana, num, err, tol, status))
        rank = {"wrong": 0, "uncertain": 1, "ok": 2}
        self.worst.sort(key=lambda m: (rank[m.status], -m.ratio))
        del self.worst[WORST:]

    def _mismatch(
        self,
        kind: str,
        row: int,
        col: int,
        start: int,
        ana: float,
        num: float,
        err: float,
        tol: float,
        status: str,
    ) -> Mismatch:
        """Name a compared value. Entries are (input start + row, output col);
        cotangent products (probe row, input start + col); tangent products
        (probe row, output col); probes (probe row)."""
        p = self.p
        if kind == "probe":
            return Mismatch(kind, f"probe {row}", (), "", (), ana, num, err, tol, status)
        if kind == "tangent":
            o_slot, o_index, o_part = p.out_layout.owner(col)
            return Mismatch(
                kind,
                f"random tangent {row}",
                (),
                p.out_names[o_slot],
                o_index,
                ana,
                num,
                err,
                tol,
                status,
                o_part,
            )
        slot, index, part = p.in_layout.owner(start + (col if kind == "cotangent" else row))
        if kind == "cotangent":
            return Mismatch(
                kind, p.in_names[slot], index, str(row), (), ana, num, err, tol, status, part
            )
        o_slot, o_index, _ = p.out_layout.owner(col)
        return Mismatch(
            kind,
            p.in_names[slot],
            index,
            p.out_names[o_slot],
            o_index,
            ana,
            num,
            err,
            tol,
            status,
            part,
        )

    # -- the report ------------------------------------------------------------
    def report(self, mode: str, direction: str, order: int, seconds: float) -> Report:
        p, t = self.p, self.tally
        reasons = []
        if self.uncertain_kinds.get("rough"):
            reasons.append(
                f"{self.uncertain_kinds['rough']} compared value(s) sit where f is not smooth "
                "or not deterministic (one-sided differences disagree: a kink such as relu "
                "at 0, a max with ties, or noise); move x off the kink or check there by hand"
            )
        if self.uncertain_kinds.get("nonfinite"):
            reasons.append(
                f"{self.uncertain_kinds['nonfinite']} compared value(s) have NaN or inf in "
                "f near x; check at a point where f is finite"
            )
        if self.uncertain_kinds.get("marginal"):
            reasons.append(
                f"{self.uncertain_kinds['marginal']} compared value(s) differ by 1 to "
                f"{BAND:g} times the estimated precision, too close to call; check with "
                "float64 inputs (or a float64-capable f) to decide"
            )
        if self.uncertain_kinds.get("rough_agreeing"):
            p.notes.append(
                f"{self.uncertain_kinds['rough_agreeing']} compared value(s) sit on a kink "
                "(f is not differentiable there) and agree with the mean of the one-sided "
                "slopes"
            )
        noise_text = (
            "f is not deterministic: two evaluations at the same x differ by up to "
            f"{float(self.xp.max(self.noise)):.3g} (random dropout, unseeded noise, or "
            "nondeterministic reductions); seed or disable the randomness"
        )
        if self.noisy:
            reasons.insert(0, noise_text)
        elif self.nondeterministic:
            p.notes.append(noise_text)
        if self.noisy:
            verdict = "inconclusive"
        else:
            verdict = "fail" if t.wrong else "inconclusive" if t.uncertain else "pass"
        arguments = tuple(
            ArgumentSummary(
                name=p.in_names[i],
                shape=tuple(int(s) for s in p.primals[i].shape),
                dtype=_describe([p.in_dtypes[i]]),
                relative_error=tally.relative_error,
                checked=tally.checked,
                wrong=tally.wrong,
                uncertain=tally.uncertain,
            )
            for i, tally in enumerate(self.by_argument)
        )
        diagnosis: tuple[str, ...] = ()
        if verdict == "fail":
            diagnosis = core_diagnosis.diagnose(
                core_diagnosis.Evidence(
                    tally=t,
                    arguments=list(zip(p.in_names, self.by_argument)),
                    mode=mode,
                    directions=self.directions,
                    one_hot_wrong=self.one_hot_wrong,
                    dense_wrong=self.dense_wrong,
                    row_scales=self.row_scales,
                    row_cross=self.row_cross,
                    row_num_sq=self.row_num_sq,
                    jacobians=self.jacobians,
                    in_widths=[s.width for s in p.in_layout.slots],
                    out_widths=[s.width for s in p.out_layout.slots],
                    in_names=list(p.in_names),
                ),
                self.xp,
            )
        notes = list(p.notes)
        if mode == "probe" and verdict == "fail":
            notes.append("probe mode cannot locate entries; rerun with mode='full' to see which")
        return Report(
            verdict=verdict,
            relative_error=t.relative_error,
            framework=p.adapter.name,
            mode=mode,
            direction=direction,
            order=order,
            precision=p.precision,
            path=self.evaluator.path or "vectorized",
            evaluations=self.evaluator.evaluations,
            seconds=seconds,
            seed=self.seed,
            num_inputs=p.in_layout.size,
            num_outputs=p.out_layout.size,
            checked=t.checked,
            wrong=t.wrong,
            uncertain=t.uncertain,
            worst=tuple(self.worst),
            arguments=arguments,
            diagnosis=diagnosis,
            reasons=tuple(reasons),
            notes=tuple(notes),
            error_map=self._error_map(),
        )

    def _error_map(self) -> tuple[tuple[float, ...], ...]:
        """error / tolerance per Jacobian entry, (outputs, inputs), for pictures."""
        if self.error_map_t is None:
            return ()
        host = self.p.adapter.to_numpy(self.xp.matrix_transpose(self.error_map_t))
        return tuple(tuple(float(v) for v in row) for row in host)
