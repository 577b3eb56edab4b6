"""Hostile functions: gradguard stays clear-headed and leaves the caller's data alone.

- An exception raised by the user's own f (or derivative rule) propagates as
  itself, with a note (``exc.__notes__``) saying which evaluation raised it.
- A function that writes into its input is caught by ``check`` (a
  :class:`gradguard.MutationError`); whatever f does, the caller's arrays are
  unchanged after every public call, in every framework (snapshots).
- A noisy f is flagged ("inconclusive", the reason says it is not
  deterministic), f non-finite near (not at) x gives "inconclusive".
- The same seed gives identical verdicts and numbers; checks running in
  threads at once give the same results as run alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import gradguard


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_if_installed() -> Any:
    """torch, or None: tests that mostly need NumPy still run without it."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


class UserBug(Exception):
    """An exception only the user's code raises."""


def square_sum(x):
    return (x**2).sum()


def square_grad(x):
    return 2 * x


def notes(exc: BaseException) -> str:
    return " | ".join(getattr(exc, "__notes__", []))


# -- the user's own exceptions ---------------------------------------------------------------


def _raises_always(x):
    raise UserBug("mine")


def _raises_away_from_x(x):
    """Fine at x = [1, 2] itself, raises at any perturbed point."""
    if float(x[0]) != 1.0 or float(x[1]) != 2.0:
        raise UserBug("mine, off x")
    return (x**2).sum()


def _call(name: str, f: Callable[..., Any], x: Any) -> Any:
    if name == "check_gradient":
        return gradguard.check_gradient(f, x, np.zeros(2))
    if name == "numerical_gradient":
        return gradguard.numerical_gradient(f, x)
    if name == "compare":
        pytest.importorskip("torch")
        return gradguard.compare({"numpy": (f, square_grad), "torch": f}, x)
    return getattr(gradguard, name)(f, x, grad=square_grad)


@pytest.mark.parametrize(
    "name",
    ["check_gradient", "numerical_gradient", "check", "assert_gradients", "compare"],
)
@pytest.mark.parametrize(
    ("f", "where"),
    [(_raises_always, "point|x"), (_raises_away_from_x, "perturbed|near|step")],
    ids=["at-x", "near-x"],
)
def test_user_exception_propagates_as_itself_with_a_note(name, f, where):
    with pytest.raises(UserBug) as info:
        _call(name, f, np.array([1.0, 2.0]))
    assert type(info.value) is UserBug
    assert "mine" in str(info.value)
    text = notes(info.value)
    assert "gradguard" in text, "no note says which evaluation raised it"
    assert pytest.importorskip("re").search(where, text), text


def test_user_exception_from_a_list_point_is_still_itself():
    for call in (
        lambda: gradguard.check_gradient(_raises_always, np.ones(2), np.zeros(2)),
        lambda: gradguard.numerical_gradient(_raises_always, [1.0, 2.0]),
    ):
        with pytest.raises(UserBug, match="mine"):
            call()


@pytest.mark.parametrize("name", ["check", "assert_gradients"])
def test_exception_of_the_derivative_rule_propagates_with_a_note(name):
    def broken_rule(x):
        raise UserBug("rule")

    with pytest.raises(UserBug, match="rule") as info:
        getattr(gradguard, name)(square_sum, np.ones(2), grad=broken_rule)
    assert "derivative rule" in notes(info.value)


def test_exception_of_a_torch_backward_propagates_with_a_note(torch):
    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise UserBug("backward")

    with pytest.raises(UserBug, match="backward") as info:
        gradguard.check(lambda x: Broken.apply(x).sum(), torch.ones(2, dtype=torch.float64))
    assert "derivative rule" in notes(info.value)


def test_a_torch_backward_of_the_wrong_shape_is_reported_by_torch_with_a_note(torch):
    """torch itself refuses a backward of the wrong shape before gradguard sees the
    gradient; its RuntimeError (clear, naming the shapes) propagates with gradguard's note."""

    class WrongShape(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return torch.zeros(3, dtype=g.dtype)

    with pytest.raises(RuntimeError, match=r"shape") as info:
        gradguard.check(lambda x: WrongShape.apply(x).sum(), torch.ones(2, dtype=torch.float64))
    assert "derivative rule" in notes(info.value)


def test_exception_inside_compare_names_its_evaluation(torch):
    def torch_f(x):
        raise UserBug("torch side")

    with pytest.raises(UserBug, match="torch side") as info:
        gradguard.compare({"numpy": (square_sum, square_grad), "torch": torch_f}, np.ones(2))
    assert "gradguard" in notes(info.value)


# -- f writes into its input ---------------------------------------------------------------


def _numpy_mutator(x):
    x += 1.0
    return (x**2).sum()


def _numpy_item_mutator(x):
    x[0] = 5.0
    return (x**2).sum()


@pytest.mark.parametrize("f", [_numpy_mutator, _numpy_item_mutator])
@pytest.mark.parametrize("name", ["check", "assert_gradients"])
def test_check_detects_numpy_in_place_writes(name, f):
    x = np.array([1.0, 2.0])
    snapshot = x.copy()
    with pytest.raises(gradguard.MutationError) as info:
        getattr(gradguard, name)(f, x, grad=square_grad)
    message = str(info.value)
    assert message.startswith("f:")
    assert "in place" in message and "copy" in message
    assert isinstance(info.value, ValueError)
    np.testing.assert_array_equal(x, snapshot)


def test_check_detects_writes_into_any_argument_or_pytree_leaf():
    x, y = np.array([1.0, 2.0]), np.array([3.0])
    params = {"w": np.array([0.5, -0.5]), "b": np.array([0.1])}
    snapshots = [a.copy() for a in (x, y, params["w"], params["b"])]

    def writes_second(a, b):
        b *= 2
        return (a**2).sum() + (b**2).sum()

    with pytest.raises(gradguard.MutationError, match="b"):
        gradguard.check(writes_second, x, y, grad=lambda a, b: (2 * a, 2 * b))

    def writes_leaf(p):
        p["b"][0] = 7.0
        return (p["w"] ** 2).sum() + (p["b"] ** 2).sum()

    with pytest.raises(gradguard.MutationError, match=r"p\['b'\]"):
        gradguard.check(writes_leaf, params, grad=lambda p: {"w": 2 * p["w"], "b": 2 * p["b"]})

    def writes_pass_through(a, counts):
        counts[0] += 1
        return (a**2).sum()

    counts = np.array([0, 0])
    with pytest.raises(gradguard.MutationError, match="counts"):
        gradguard.check(writes_pass_through, x, counts, grad=lambda a, c: 2 * a, wrt=0)
    for before, after in zip(snapshots, (x, y, params["w"], params["b"])):
        np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(counts, [0, 0])


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize(
    "write",
    [
        lambda x: x.add_(1.0),
        lambda x: x.__setitem__(0, 5.0),
        lambda x: x.mul_(2.0),
    ],
    ids=["add_", "setitem", "mul_"],
)
def test_check_detects_torch_in_place_writes(torch, write, requires_grad):
    x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=requires_grad)
    snapshot = x.detach().clone()

    def f(v):
        write(v)
        return (v**2).sum()

    with pytest.raises(gradguard.MutationError, match=r"^f:"):
        gradguard.check(f, x)
    assert torch.equal(x.detach(), snapshot)
    assert x.requires_grad is requires_grad
    assert x.grad is None


def test_compare_detects_in_place_writes(torch):
    x = np.array([1.0, 2.0])

    def torch_f(v):
        v.add_(1.0)
        return (v**2).sum()

    with pytest.raises(gradguard.MutationError, match=r"^f:"):
        gradguard.compare({"numpy": (square_sum, square_grad), "torch": torch_f}, x)
    np.testing.assert_array_equal(x, [1.0, 2.0])


# -- the caller's arrays never change -----------------------------------------------------


def _every_public_call(f: Callable[..., Any], x: Any, grad: Any) -> list[Callable[[], Any]]:
    """Every public function on x; each call may raise (a mutating f)."""
    rule = {"grad": grad} if grad is not None else {}
    return [
        lambda: gradguard.check_gradient(f, x, grad(x) if grad else x),
        lambda: gradguard.check_gradient(f, x, grad(x) if grad else x, epsilon=1e-5),
        lambda: gradguard.numerical_gradient(f, x),
        lambda: gradguard.numerical_gradient(f, x, order=6),
        lambda: gradguard.relative_error(x, x),
        lambda: gradguard.check(f, x, **rule),
        lambda: gradguard.check(f, x, mode="probe", **rule),
        lambda: gradguard.assert_gradients(f, x, **rule),
    ]


def _run_all(calls: list[Callable[[], Any]]) -> None:
    for call in calls:
        try:
            call()
        except gradguard.MutationError:
            pass


@pytest.mark.parametrize("mutate", [False, True], ids=["plain-f", "mutating-f"])
def test_numpy_arrays_are_unchanged_by_every_call(mutate):
    x = np.array([[0.5, -1.0], [2.0, 0.25]])
    snapshot = x.copy()

    def f(v):
        if mutate:
            v *= 3.0
        return (v**2).sum()

    _run_all(_every_public_call(f, x, square_grad))
    assert x.dtype == np.float64 and x.shape == (2, 2) and x.flags.writeable
    np.testing.assert_array_equal(x, snapshot)


def test_list_input_is_unchanged_by_a_mutating_f():
    x = [0.5, -1.0, 2.0]

    def f(v):
        v[0] = 100.0
        return (v**2).sum()

    gradguard.check_gradient(f, x, [1.0, -2.0, 4.0])
    gradguard.numerical_gradient(f, x)
    assert x == [0.5, -1.0, 2.0]


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("mutate", [False, True], ids=["plain-f", "mutating-f"])
def test_torch_tensors_are_unchanged_by_every_call(torch, mutate, requires_grad):
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64, requires_grad=requires_grad)
    snapshot = x.detach().clone()
    version = x._version

    def f(v):
        if mutate:
            with torch.no_grad():
                v.mul_(3.0)
        return (v**2).sum()

    calls = _every_public_call(f, x, None)
    calls.append(lambda: gradguard.check(f, x, direction="both"))
    _run_all(calls)
    assert torch.equal(x.detach(), snapshot)
    assert x._version == version
    assert x.requires_grad is requires_grad
    assert x.grad is None
    assert x.dtype == torch.float64


def test_jax_arrays_are_unchanged_by_every_call(jax):
    jnp = jax.numpy
    x = jnp.array([[0.5, -1.0], [2.0, 0.25]])
    snapshot = np.array(x)

    def f(v):
        # JAX cannot write in place: .at[].set() makes a new array.
        v = v.at[0, 0].set(100.0)
        return jnp.sum(v**2)

    _run_all(_every_public_call(f, x, None))
    np.testing.assert_array_equal(np.array(x), snapshot)
    assert x.dtype == jnp.float64


def test_tensorflow_variables_and_tensors_are_unchanged_by_every_call(tf):
    variable = tf.Variable([[0.5, -1.0], [2.0, 0.25]], dtype=tf.float64)
    constant = tf.constant([[0.5, -1.0], [2.0, 0.25]], dtype=tf.float64)
    snapshot = variable.numpy().copy()
    seen = []

    def f(v):
        seen.append(type(v).__name__)
        if isinstance(v, tf.Variable):  # write into it, if gradguard ever passes one
            v.assign_add(tf.ones_like(v))
        return tf.reduce_sum(v**2)

    for x in (variable, constant):
        _run_all(_every_public_call(f, x, None))
    assert isinstance(variable, tf.Variable)
    np.testing.assert_array_equal(variable.numpy(), snapshot)
    np.testing.assert_array_equal(constant.numpy(), snapshot)
    # gradguard hands f tensors (copies), never the caller's Variable.
    assert seen and not any(name.endswith("Variable") for name in seen)


def test_compare_leaves_its_numpy_arguments_alone(torch):
    x = np.array([0.5, -1.0, 2.0])
    snapshot = x.copy()
    comparison = gradguard.compare({"numpy": (square_sum, square_grad), "torch": square_sum}, x)
    assert comparison.verdict == "pass"
    np.testing.assert_array_equal(x, snapshot)
    assert x.flags.writeable


# -- noisy and non-finite functions ---------------------------------------------------------


def test_noisy_numpy_function_is_flagged_not_judged():
    rng = np.random.default_rng(0)

    def noisy(x):
        return (x**2).sum() + 1e-6 * rng.standard_normal()

    report = gradguard.check(noisy, np.array([1.0, 2.0]), grad=square_grad)
    assert report.verdict == "inconclusive"
    assert any("deterministic" in reason for reason in report.reasons), report.reasons


def test_noisy_torch_function_is_flagged_even_with_a_wrong_gradient(torch):
    generator = torch.Generator().manual_seed(0)

    class WrongSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x**2).sum() + 1e-6 * torch.randn((), generator=generator, dtype=x.dtype)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x

    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    report = gradguard.check(WrongSquare.apply, x)
    assert report.verdict == "inconclusive"
    assert any("deterministic" in reason for reason in report.reasons), report.reasons
    assert not report.passed


def test_dropout_like_randomness_is_flagged(torch):
    def dropout(x):
        return torch.nn.functional.dropout(x, p=0.5, training=True).sum()

    report = gradguard.check(dropout, torch.linspace(1.0, 2.0, 6, dtype=torch.float64))
    assert report.verdict == "inconclusive"
    assert any("deterministic" in reason for reason in report.reasons)


def quiet_sqrt_sum(v):
    with np.errstate(invalid="ignore"):
        return np.sqrt(v).sum()


def quiet_log_sum(v):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.log(v).sum()


def test_nan_near_x_only_is_inconclusive_torch(torch):
    x = torch.tensor([1e-9, 1.0], dtype=torch.float64)  # log(x - h) is NaN
    report = gradguard.check(lambda v: torch.log(v).sum(), x)
    assert report.verdict == "inconclusive"
    assert any("NaN or inf" in reason for reason in report.reasons), report.reasons


def test_nan_near_x_only_is_inconclusive_numpy():
    report = gradguard.check(
        quiet_sqrt_sum, np.array([1e-12, 4.0]), grad=lambda v: 0.5 / np.sqrt(v)
    )
    assert report.verdict == "inconclusive"
    assert any("NaN or inf" in reason for reason in report.reasons), report.reasons


def test_nan_at_x_is_an_error_not_a_verdict(torch):
    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(gradguard.ArgumentError, match=r"^f:.*NaN or inf"):
        gradguard.check(lambda v: torch.log(v).sum(), x)


def test_seed_functions_refuse_f_non_finite_near_x():
    x = np.array([1e-9, 1.0])
    for call in (
        lambda: gradguard.numerical_gradient(quiet_log_sum, x),
        lambda: gradguard.check_gradient(quiet_log_sum, x, 1 / x),
    ):
        with pytest.raises(gradguard.ArgumentError, match=r"^f:.*NaN or inf"):
            call()


# -- determinism -----------------------------------------------------------------------------


def summary(report: gradguard.Report) -> str:
    """Everything a report says except how long it took (NaN-safe to compare)."""
    data = dataclasses.asdict(report)
    data.pop("seconds")
    return repr(data)


def _wrong_torch_function(torch):
    class Wrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(x, w)
            return torch.tanh(x @ w)

        @staticmethod
        def backward(ctx, g):
            x, w = ctx.saved_tensors
            s = 1 - torch.tanh(x @ w) ** 2
            return (g * s) @ w.T, 1.01 * x.T @ (g * s)

    return Wrong.apply


def _torch_cases(torch) -> list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((3, 4)))
    w = torch.tensor(rng.standard_normal((4, 2)))
    wrong = _wrong_torch_function(torch)
    right = lambda a, b: torch.tanh(a @ b)  # noqa: E731
    return [
        (right, (x, w), {"mode": "full"}),
        (wrong, (x, w), {"mode": "full"}),
        (wrong, (x, w), {"mode": "probe", "seed": 5}),
        (right, (x, w), {"mode": "probe", "seed": 11, "direction": "both"}),
    ]


def _numpy_cases() -> list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]:
    x = np.random.default_rng(4).standard_normal(5)

    def f(v):
        return np.sum(np.sin(v) * v)

    def right(v):
        return np.cos(v) * v + np.sin(v)

    def wrong(v):
        return np.cos(v) * v

    return [
        (f, (x,), {"grad": right, "mode": "full"}),
        (f, (x,), {"grad": wrong, "mode": "full"}),
        (f, (x,), {"grad": wrong, "mode": "probe", "seed": 2}),
        (f, (x,), {"grad": right, "mode": "probe", "seed": 9, "probes": 3}),
    ]


def _run_case(case: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> str:
    f, args, options = case
    return summary(gradguard.check(f, *args, progress=False, **options))


def test_same_seed_gives_identical_reports_numpy():
    for case in _numpy_cases():
        first, second = _run_case(case), _run_case(case)
        assert first == second


def test_same_seed_gives_identical_reports_torch(torch):
    for case in _torch_cases(torch):
        assert _run_case(case) == _run_case(case)
    reports = [gradguard.check(_wrong_torch_function(torch), *_torch_cases(torch)[1][1])]
    reports.append(gradguard.check(_wrong_torch_function(torch), *_torch_cases(torch)[1][1]))
    assert reports[0].verdict == reports[1].verdict == "fail"
    assert reports[0].relative_error == reports[1].relative_error
    assert reports[0].worst == reports[1].worst and reports[0].worst


def test_seed_functions_are_deterministic():
    x = np.random.default_rng(8).standard_normal((3, 2))

    def f(v):
        return (v**3).sum() + (v[0] * v[1]).sum()

    first = gradguard.check_gradient(f, x, 3 * x**2)
    second = gradguard.check_gradient(f, x, 3 * x**2)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]
    for order in (2, 4, 6):
        np.testing.assert_array_equal(
            gradguard.numerical_gradient(f, x, order=order),
            gradguard.numerical_gradient(f, x, order=order),
        )
    torch = torch_if_installed()
    if torch is not None:
        tx = torch.tensor(x)
        first, second = (gradguard.numerical_gradient(f, tx) for _ in range(2))
        assert torch.equal(first, second)


def test_checks_in_threads_match_checks_run_alone():
    cases = _numpy_cases()
    torch = torch_if_installed()
    if torch is not None:
        cases += [c for c in _torch_cases(torch) if c[2].get("direction", "rev") == "rev"]
    alone = [_run_case(case) for case in cases]
    with ThreadPoolExecutor(max_workers=8) as pool:
        # Each case several times, interleaved, all at once.
        futures = [pool.submit(_run_case, case) for _ in range(3) for case in cases]
        together = [future.result() for future in futures]
    assert together == alone * 3


def test_torch_forward_mode_checks_in_threads(torch):
    x = torch.tensor(np.random.default_rng(0).standard_normal(20))

    def run(_):
        report = gradguard.check(lambda v: torch.tanh(v) * v, x, direction="fwd", progress=False)
        return summary(report)

    alone = run(None)
    for _ in range(5):
        with ThreadPoolExecutor(max_workers=8) as pool:
            assert list(pool.map(run, range(16))) == [alone] * 16


def test_seed_functions_in_threads_match_runs_alone():
    torch = torch_if_installed()
    xs = [np.random.default_rng(s).standard_normal(4) for s in range(6)]

    def f(v):
        return (v**3).sum()

    def run(x):
        numerical, error = gradguard.check_gradient(f, x, 3 * x**2)
        tensor = [] if torch is None else gradguard.numerical_gradient(f, torch.tensor(x)).tolist()
        return numerical.tolist(), error, tensor

    alone = [run(x) for x in xs]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(run, xs * 3))
    assert together == alone * 3


def test_a_noisy_check_in_one_thread_leaves_a_clean_one_alone():
    """A noisy check in one thread does not make a clean one in another inconclusive."""
    rng = np.random.default_rng(1)

    def noisy(x):
        return (x**2).sum() + 1e-6 * rng.standard_normal()

    torch = torch_if_installed()
    if torch is None:
        x = np.array([1.0, 2.0, 3.0])
        rule = {"grad": square_grad}
    else:
        x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
        rule = {}
    clean = summary(gradguard.check(lambda v: (v**2).sum(), x, **rule))
    with ThreadPoolExecutor(max_workers=4) as pool:
        noisy_futures = [
            pool.submit(gradguard.check, noisy, np.array([1.0, 2.0]), grad=square_grad)
            for _ in range(4)
        ]
        clean_futures = [
            pool.submit(gradguard.check, lambda v: (v**2).sum(), x, **rule) for _ in range(4)
        ]
        assert all(summary(f.result()) == clean for f in clean_futures)
        assert all(f.result().verdict == "inconclusive" for f in noisy_futures)
