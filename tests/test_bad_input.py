"""Bad input to every public function ends in a clear gradguard error.

Each row below is one bad argument given to one public function
(``check_gradient``, ``numerical_gradient``, ``relative_error``, ``check``,
``assert_gradients``, ``compare``). It must end in a
:class:`gradguard.GradguardError` that is also a ``ValueError`` or a
``TypeError``, raised by gradguard itself (never a NumPy / torch / Python
error from deep inside), whose message starts with the argument's name
(``"x:"``, ``"epsilon:"``, ``"f:"``, ``"mode:"``, ...) and says what to pass
instead.

Decisions these tests pin down:

- 0-d arrays are points like any other (seed functions, ``check``,
  ``compare``); empty arrays are refused by the seed functions, while
  ``check`` and ``compare`` report that there is nothing to compare
  (tests/test_trust_plumbing.py). NaN and inf entries of a point are
  refused by the seed functions; ``check`` and ``compare`` hold them fixed
  and compare the finite entries (tests/test_nonfinite_inputs.py).
- Integer (and bool, string, object) *arrays* are refused with a message
  that says to pass floats; a Python *list* of ints is read as float64 by
  the seed functions (``check`` reads lists as containers, not arrays).
- Arrays of different frameworks in one call are refused, naming them.
  ``relative_error`` is the exception: it compares two arrays of any kinds
  (its docstring and tests/test_seed.py say so).
- ``relative_error`` returns 1.0 (the largest error) when an entry is NaN
  or inf: a NaN gradient is a wrong gradient, not bad input.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import gradguard
from gradguard import ArgumentError, ArgumentTypeError, PrecisionError

# -- helpers -------------------------------------------------------------------

#: Words that tell the user what to do instead.
FIX = re.compile(
    r"\b(pass|use|convert|try|check at|give|return|must|expected|needs?|mirror|"
    r"work on|rerun|seed)\b",
    re.IGNORECASE,
)


def assert_clear(
    exc: BaseException,
    kind: type[BaseException],
    prefixes: tuple[str, ...],
    hint: str | None = None,
    fix: bool = True,
) -> None:
    """``exc`` is gradguard's own ``kind``, names the argument and says how to fix it."""
    assert isinstance(exc, gradguard.GradguardError), (
        f"{type(exc).__module__}.{type(exc).__name__} is not a GradguardError: {exc}"
    )
    assert type(exc).__module__ == "gradguard", type(exc)  # the public name, as shown
    assert isinstance(exc, kind), f"{type(exc).__name__} is not a {kind.__name__}: {exc}"
    assert isinstance(exc, (ValueError, TypeError)), type(exc).__mro__
    message = str(exc)
    assert message.startswith(prefixes), f"{message!r} does not start with {prefixes}"
    if fix:
        assert FIX.search(message), f"{message!r} does not say how to fix it"
    if hint is not None:
        assert re.search(hint, message, re.IGNORECASE), f"{hint!r} not in {message!r}"


def raises_clear(
    call: Callable[[], Any],
    kind: type[BaseException],
    prefixes: str | tuple[str, ...],
    hint: str | None = None,
    fix: bool = True,
) -> BaseException:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    with pytest.raises(BaseException) as info:
        call()
    if isinstance(info.value, pytest.skip.Exception):
        raise info.value  # a framework the call needs is not installed
    assert_clear(info.value, kind, prefixes, hint, fix)
    return info.value


def square_sum(x):
    """sum(x**2) for NumPy arrays and torch tensors alike."""
    return (x**2).sum()


def square_grad(x):
    return 2 * x


def zeros_like_shape(x: Any) -> Any:
    """An analytical gradient that cannot be the reason a call fails."""
    try:
        return np.zeros(np.shape(x))
    except Exception:
        return 0.0


def _torch():
    return pytest.importorskip("torch")


def _compare(f: Callable[..., Any], *args: Any, **options: Any) -> Any:
    _torch()
    return gradguard.compare({"numpy": (f, square_grad), "torch": f}, *args, **options)


# The public functions that take (f, x), each called as plainly as it can be.
CALLS: dict[str, Callable[..., Any]] = {
    "check_gradient": lambda f, x, **o: gradguard.check_gradient(f, x, zeros_like_shape(x), **o),
    "numerical_gradient": lambda f, x, **o: gradguard.numerical_gradient(f, x, **o),
    "check": lambda f, x, **o: gradguard.check(f, x, grad=square_grad, **o),
    "assert_gradients": lambda f, x, **o: gradguard.assert_gradients(f, x, grad=square_grad, **o),
    "compare": _compare,
}
SEED = ("check_gradient", "numerical_gradient")
CHECKERS = ("check", "assert_gradients", "compare")
#: check and compare name the point "args" (their parameter) or by f's own name.
POINT = ("args:", "x:")

# -- x: the point ------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One bad value for one family of functions and what it must raise."""

    id: str
    value: Any
    functions: tuple[str, ...]
    kind: type[BaseException]
    prefixes: tuple[str, ...]
    hint: str | None = None


def _ragged() -> list[Any]:
    return [[1.0], [1.0, 2.0]]


BAD_POINTS = [
    Bad("None", None, SEED, ArgumentTypeError, ("x:",), "array"),
    Bad("None", None, CHECKERS, ArgumentTypeError, POINT, "array"),
    Bad("string", "abc", SEED, ArgumentTypeError, ("x:",), "array"),
    Bad("string", "abc", CHECKERS, ArgumentTypeError, POINT, "array"),
    Bad("list-of-strings", ["a", "b"], SEED, ArgumentTypeError, ("x:",), "float"),
    Bad("list-of-strings", ["a", "b"], CHECKERS, ArgumentTypeError, POINT, "array"),
    Bad("dict", {"a": 1.0}, SEED, ArgumentTypeError, ("x:",), "array"),
    # check and compare hold such entries fixed instead (tests/test_nonfinite_inputs.py).
    Bad("nan", np.array([1.0, np.nan]), SEED, ArgumentError, ("x:",), "nan"),
    Bad("inf", np.array([-np.inf, 1.0]), SEED, ArgumentError, ("x:",), "inf"),
    Bad("nan-0d", np.array(np.nan), SEED, ArgumentError, ("x:",), "nan"),
    Bad("list-with-nan", [1.0, math.nan], SEED, ArgumentError, ("x:",), "nan"),
    Bad("empty", np.zeros(0), SEED, ArgumentError, ("x:",), "empty"),
    Bad("empty-2d", np.zeros((3, 0)), SEED, ArgumentError, ("x:",), "empty"),
    Bad("empty-list", [], SEED, ArgumentError, ("x:",), "empty"),
    Bad("int-array", np.array([1, 2]), SEED, ArgumentTypeError, ("x:",), "float"),
    Bad("int-array", np.array([1, 2]), CHECKERS, ArgumentTypeError, POINT, "float"),
    Bad("bool-array", np.array([True, False]), SEED, ArgumentTypeError, ("x:",), "float"),
    Bad("bool-array", np.array([True, False]), CHECKERS, ArgumentTypeError, POINT, "float"),
    Bad("string-array", np.array(["a", "b"]), SEED, ArgumentTypeError, ("x:",), "float"),
    Bad("string-array", np.array(["a", "b"]), CHECKERS, ArgumentTypeError, POINT, "float"),
    Bad("object-array", np.array([1.0, 2.0], dtype=object), SEED, ArgumentTypeError, ("x:",)),
    Bad("complex-array", np.array([1.0 + 1j]), SEED, ArgumentTypeError, ("x:",), "real"),
    Bad("list-of-ints", [1, 2], CHECKERS, ArgumentTypeError, POINT, "array"),
    Bad("python-float", 1.5, CHECKERS, ArgumentTypeError, POINT, "array"),
]

BAD_POINTS += [
    Bad("huge-int-list", [10**400], SEED, ArgumentTypeError, ("x:",), "float"),
    Bad("ragged-list", _ragged(), SEED, ArgumentTypeError, ("x:",), "float"),
]


def _bad_params(rows: list[Bad], marked: tuple[tuple[Bad, Any], ...] = ()) -> list[Any]:
    params = [
        pytest.param(name, row, id=f"{name}-{row.id}") for row in rows for name in row.functions
    ]
    params += [
        pytest.param(name, row, id=f"{name}-{row.id}", marks=mark)
        for row, mark in marked
        for name in row.functions
    ]
    return params


@pytest.mark.parametrize(("name", "bad"), _bad_params(BAD_POINTS))
def test_bad_point(name, bad):
    raises_clear(lambda: CALLS[name](square_sum, bad.value), bad.kind, bad.prefixes, bad.hint)


def test_seed_functions_refuse_integer_tensors_of_every_framework():
    torch = _torch()
    for x in (np.array([1, 2]), torch.tensor([1, 2]), np.array([1, 2], dtype=np.int8)):
        raises_clear(
            lambda x=x: gradguard.numerical_gradient(square_sum, x),
            ArgumentTypeError,
            "x:",
            "float",
        )
        raises_clear(lambda x=x: gradguard.check(square_sum, x), ArgumentTypeError, POINT, "float")


@pytest.mark.parametrize(
    ("call", "prefix"),
    [
        pytest.param("check", POINT, id="check"),
        pytest.param("numerical_gradient", "x:", id="numerical_gradient"),
        pytest.param("check_gradient", "x:", id="check_gradient-x"),
        pytest.param(
            "check_gradient-analytical",
            "analytical_grad:",
            id="check_gradient-analytical",
        ),
        pytest.param("relative_error-a", "a:", id="relative_error-a"),
        pytest.param("relative_error-b", "b:", id="relative_error-b"),
    ],
)
def test_sparse_torch_tensor_is_refused_clearly(call, prefix):
    torch = _torch()
    sparse = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64).to_sparse()
    dense = torch.zeros(2, 2, dtype=torch.float64)
    calls = {
        "check": lambda: gradguard.check(square_sum, sparse),
        "numerical_gradient": lambda: gradguard.numerical_gradient(square_sum, sparse),
        "check_gradient": lambda: gradguard.check_gradient(square_sum, sparse, dense),
        "check_gradient-analytical": lambda: gradguard.check_gradient(square_sum, dense, sparse),
        "relative_error-a": lambda: gradguard.relative_error(sparse, dense),
        "relative_error-b": lambda: gradguard.relative_error(dense, sparse),
    }
    raises_clear(calls[call], (ArgumentTypeError, ArgumentError), prefix, "dense")


@pytest.mark.parametrize("name", SEED)
def test_list_of_ints_is_read_as_float64(name):
    numerical = CALLS[name](lambda x: x[0] ** 2 + 3 * x[1], [1, 2])
    if name == "check_gradient":
        numerical, error = numerical
        assert 0.0 <= error <= 1.0
    assert isinstance(numerical, np.ndarray)
    assert numerical.dtype == np.float64
    np.testing.assert_allclose(numerical, [2.0, 3.0], rtol=1e-6)


@pytest.mark.parametrize("name", SEED)
def test_zero_dimensional_point_works_in_seed_functions(name):
    for x in (np.array(1.5), 1.5, np.float64(1.5)):
        numerical = CALLS[name](lambda v: v**3, x)
        if name == "check_gradient":
            numerical, error = numerical
            assert error == pytest.approx(1.0)  # analytical_grad was zeros
        assert np.shape(numerical) == ()
        assert float(numerical) == pytest.approx(3 * 1.5**2, rel=1e-6)
    numerical, error = gradguard.check_gradient(lambda v: v**3, np.array(1.5), np.array(6.75))
    assert error < 1e-8


@pytest.mark.parametrize("name", CHECKERS)
def test_zero_dimensional_point_works_in_check(name):
    result = CALLS[name](square_sum, np.array(1.5))
    assert result.verdict == "pass"


def test_zero_dimensional_torch_point_works_in_check():
    torch = _torch()
    report = gradguard.check(lambda x: torch.sin(x) * x, torch.tensor(0.7, dtype=torch.float64))
    assert report.verdict == "pass"
    assert report.num_inputs == 1


@pytest.mark.parametrize("name", [*SEED, "check", "assert_gradients"])
def test_missing_point(name):
    function = getattr(gradguard, name)
    raises_clear(lambda: function(square_sum), (ArgumentError, ArgumentTypeError), POINT)


def test_missing_point_in_compare():
    raises_clear(lambda: _compare(square_sum), ArgumentError, "args:", "pass")


def test_missing_second_array_of_relative_error():
    raises_clear(
        lambda: gradguard.relative_error(np.ones(2)), (ArgumentError, ArgumentTypeError), "b:"
    )


# -- f -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", (*SEED, "check", "assert_gradients"))
@pytest.mark.parametrize("f", [3, None, "f", np.ones(2)], ids=["int", "None", "str", "array"])
def test_f_not_callable(name, f):
    raises_clear(lambda: CALLS[name](f, np.ones(2)), ArgumentTypeError, "f:", "callable")


def test_f_not_callable_in_compare():
    _torch()
    for entry in (3, (3, square_grad), (square_sum, 3), {"f": 3, "grad": square_grad}):
        raises_clear(
            lambda entry=entry: gradguard.compare(
                {"numpy": entry, "torch": square_sum}, np.ones(2)
            ),
            ArgumentTypeError,
            "functions['numpy']:",
            "callable",
        )
    raises_clear(
        lambda: gradguard.compare(square_sum, np.ones(2)), ArgumentTypeError, "functions:", "dict"
    )


def _nan(x):
    return (x**2).sum() * math.nan


def _inf(x):
    return (x**2).sum() + math.inf


def _neg_inf(x):
    return (x**2).sum() - math.inf


BAD_OUTPUTS = [
    Bad("None", lambda x: None, SEED + CHECKERS, ArgumentTypeError, ("f:",), "NoneType"),
    Bad("string", lambda x: "1.0", SEED + CHECKERS, ArgumentTypeError, ("f:",), "str"),
    Bad("bytes", lambda x: b"1", SEED, ArgumentTypeError, ("f:",), "bytes"),
    Bad("dict", lambda x: {"loss": "high"}, CHECKERS, ArgumentTypeError, ("f:",), "str"),
    Bad("non-scalar", lambda x: 2 * x, SEED, ArgumentError, ("f:",), "scalar"),
    # grad= needs a scalar f: the rule names itself.
    Bad("non-scalar", lambda x: 2 * x, CHECKERS, ArgumentError, ("grad:",), "scalar|vjp"),
    Bad("nan", _nan, SEED + CHECKERS, ArgumentError, ("f:",), "nan"),
    Bad("inf", _inf, SEED + CHECKERS, ArgumentError, ("f:",), "inf"),
    Bad("-inf", _neg_inf, SEED + CHECKERS, ArgumentError, ("f:",), "inf"),
    Bad("empty-dict", lambda x: {}, CHECKERS, ArgumentTypeError, ("f:",), "empty"),
]


@pytest.mark.parametrize(("name", "bad"), _bad_params(BAD_OUTPUTS))
def test_bad_output_of_f(name, bad):
    raises_clear(
        lambda: CALLS[name](bad.value, np.array([1.0, 2.0])), bad.kind, bad.prefixes, bad.hint
    )


def test_integer_output_of_f_is_left_out_by_check():
    # Integer outputs have no derivative: left out with a note (they used to
    # be refused); with nothing else to compare, the report says so.
    torch = _torch()
    report = gradguard.check(lambda x: torch.tensor(1), torch.ones(2, dtype=torch.float64))
    assert report.verdict == "pass" and report.checked == 0
    assert any("int64" in note for note in report.notes)
    assert any(note.startswith("nothing to compare") for note in report.notes)


def test_string_array_output_of_f_is_refused_by_check():
    raises_clear(
        lambda: gradguard.check(lambda x: np.array(["a"]), np.ones(2), grad=square_grad),
        ArgumentTypeError,
        "f:",
        "numeric",
    )


# -- the analytical gradient ------------------------------------------------------------


@pytest.mark.parametrize(
    ("analytical", "kind", "hint"),
    [
        (np.zeros(3), ArgumentError, "shape"),
        (np.zeros((2, 1)), ArgumentError, "shape"),
        (np.zeros(()), ArgumentError, "shape"),
        ([1.0, 2.0, 3.0], ArgumentError, "shape"),
        (None, ArgumentTypeError, "array"),
        ("ab", ArgumentTypeError, "array"),
        (["a", "b"], ArgumentTypeError, "float"),
        ({"x": 1.0}, ArgumentTypeError, "array"),
        (square_grad, ArgumentTypeError, "array"),
    ],
    ids=["shape-3", "shape-2x1", "0d", "list-3", "None", "str", "list-str", "dict", "function"],
)
def test_check_gradient_refuses_a_bad_analytical_gradient(analytical, kind, hint):
    raises_clear(
        lambda: gradguard.check_gradient(square_sum, np.array([1.0, 2.0]), analytical),
        kind,
        "analytical_grad:",
        hint,
    )


def test_check_gradient_refuses_analytical_gradient_of_another_framework():
    torch = _torch()
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    raises_clear(
        lambda: gradguard.check_gradient(square_sum, x, np.array([2.0, 4.0])),
        ArgumentTypeError,
        "analytical_grad:",
        "numpy.*torch|torch.*numpy",
    )


@pytest.mark.parametrize("name", CHECKERS)
@pytest.mark.parametrize(
    ("rule", "hint"),
    [
        pytest.param({"grad": lambda x: np.zeros(3)}, "shape", id="grad-shape"),
        pytest.param({"grad": lambda x: np.zeros((2, 1))}, "shape", id="grad-2d"),
        pytest.param({"vjp": lambda c, x: np.zeros(3)}, "shape", id="vjp-shape"),
        pytest.param({"grad": lambda x: (2 * x, 2 * x)}, "structure|entry", id="grad-tuple"),
        pytest.param({"grad": lambda x: None}, "NoneType", id="grad-None"),
        pytest.param({"grad": lambda x: "2x"}, "str", id="grad-str"),
    ],
)
def test_bad_analytical_rule(name, rule, hint):
    (key,) = rule
    x = np.array([1.0, 2.0])
    if name == "compare":
        _torch()
        entry = {"f": square_sum, **rule}
        call = lambda: gradguard.compare({"numpy": entry, "torch": square_sum}, x)  # noqa: E731
    else:
        call = lambda: getattr(gradguard, name)(square_sum, x, **rule)  # noqa: E731
    raises_clear(call, (ArgumentError, ArgumentTypeError), f"{key}:", hint)


@pytest.mark.parametrize("name", ("check", "assert_gradients"))
def test_bad_rule_options(name):
    function = getattr(gradguard, name)
    x = np.array([1.0, 2.0])
    raises_clear(lambda: function(square_sum, x, grad=3), ArgumentTypeError, "grad:", "callable")
    raises_clear(lambda: function(square_sum, x, vjp="v"), ArgumentTypeError, "vjp:", "callable")
    raises_clear(
        lambda: function(square_sum, x, grad=square_grad, vjp=lambda c, x: c * 2 * x),
        ArgumentError,
        "grad, vjp:",
        "one",
    )
    raises_clear(
        lambda: function(square_sum, x, grad=square_grad, direction="fwd"),
        ArgumentError,
        "direction:",
        "rev",
    )
    raises_clear(
        lambda: function(square_sum, x, grad=square_grad, order=2), ArgumentError, "order:"
    )


def test_compare_refuses_rules_given_as_options():
    raises_clear(
        lambda: _compare(square_sum, np.ones(2), grad=square_grad), ArgumentError, "grad:", "numpy"
    )


def test_check_without_autodiff_or_rule_is_unsupported():
    with pytest.raises(gradguard.UnsupportedError, match="grad="):
        gradguard.check(square_sum, np.ones(2))


# -- epsilon -------------------------------------------------------------------------------

BAD_EPSILONS = [
    pytest.param(0.0, ArgumentError, id="zero"),
    pytest.param(0, ArgumentError, id="int-zero"),
    pytest.param(-1e-3, ArgumentError, id="negative"),
    pytest.param(math.nan, ArgumentError, id="nan"),
    pytest.param(math.inf, ArgumentError, id="inf"),
    pytest.param(-math.inf, ArgumentError, id="-inf"),
    pytest.param("1e-3", ArgumentTypeError, id="string"),
    pytest.param(True, ArgumentTypeError, id="bool"),
    pytest.param([1e-3], ArgumentTypeError, id="list"),
    pytest.param(1e-3 + 0j, ArgumentTypeError, id="complex"),
]


@pytest.mark.parametrize(("epsilon", "kind"), BAD_EPSILONS)
@pytest.mark.parametrize("name", SEED)
def test_bad_epsilon_in_seed_functions(name, epsilon, kind):
    raises_clear(
        lambda: CALLS[name](square_sum, np.array([1.0, 2.0]), epsilon=epsilon),
        kind,
        "epsilon:",
        "positive|float",
    )


@pytest.mark.parametrize(("eps", "kind"), BAD_EPSILONS)
@pytest.mark.parametrize("name", CHECKERS)
def test_bad_eps_in_check(name, eps, kind):
    raises_clear(
        lambda: CALLS[name](square_sum, np.array([1.0, 2.0]), eps=eps),
        kind,
        "eps:",
        "positive|float",
    )


def _epsilon_named(message: str, name: str) -> float:
    numbers = re.findall(rf"\b{name}\s*=\s*([0-9][0-9.eE+-]*)", message)
    assert numbers, f"no working {name}=... in {message!r}"
    return float(numbers[0])


def weighted_sum(x):
    """3 x[0] + x[1]: its gradient [3, 1] survives any step (no truncation)."""
    return 3 * x[0] + x[1]


@pytest.mark.parametrize("name", SEED)
def test_vanishing_epsilon_names_one_that_works(name):
    x = np.array([1e12, 1.0])
    exc = raises_clear(
        lambda: CALLS[name](weighted_sum, x, epsilon=1e-9), PrecisionError, "epsilon:", "epsilon="
    )
    working = _epsilon_named(str(exc), "epsilon")
    numerical = gradguard.numerical_gradient(weighted_sum, x, epsilon=working)
    np.testing.assert_allclose(numerical, [3.0, 1.0], rtol=1e-6)


def test_vanishing_epsilon_in_float32_when_f_refuses_float64():
    x = np.array([3e3, 1.0], dtype=np.float32)

    def float32_only(v):
        if v.dtype != np.float32:
            raise TypeError("float32 only")
        return weighted_sum(v)

    exc = raises_clear(
        lambda: gradguard.numerical_gradient(float32_only, x, epsilon=1e-7),
        PrecisionError,
        "epsilon:",
        "epsilon=",
    )
    working = _epsilon_named(str(exc), "epsilon")
    numerical = gradguard.numerical_gradient(float32_only, x, epsilon=working)
    assert numerical.dtype == np.float32
    np.testing.assert_allclose(numerical, [3.0, 1.0], rtol=1e-3)


def test_default_epsilon_in_float32_near_zero_is_not_swamped_by_f():
    """README: "If the step is lost to rounding (float32 with the default 1e-7),
    gradguard evaluates in float64 with a PrecisionWarning, or raises a PrecisionError"."""
    x = np.array([0.001], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gradguard.PrecisionWarning)
        try:
            _, error = gradguard.check_gradient(lambda v: (v + 1.0).sum(), x, np.ones(1))
        except PrecisionError:
            return
    assert error < 1e-6


def weighted_grad(x):
    return np.array([3.0, 1.0])


WEIGHTED_CALLS = {
    "check": lambda x, **o: gradguard.check(weighted_sum, x, grad=weighted_grad, **o),
    "assert_gradients": lambda x, **o: gradguard.assert_gradients(
        weighted_sum, x, grad=weighted_grad, **o
    ),
    "compare": lambda x, **o: gradguard.compare(
        {"numpy": (weighted_sum, weighted_grad), "torch": weighted_sum}, x, **o
    ),
}


@pytest.mark.parametrize("name", CHECKERS)
def test_vanishing_eps_in_check_names_one_that_works(name):
    _torch()
    x = np.array([1e12, 1.0])
    call = WEIGHTED_CALLS[name]
    # By default x[1] gets a step of 6e-6, where f (3e12 + x[1]) resolves
    # 6.7e-4: its derivative is below f's resolution, undecided, not passed
    # (assert_gradients raises on that).
    if name != "assert_gradients":
        assert call(x).verdict == "inconclusive"
    exc = raises_clear(lambda: call(x, eps=1e-9), PrecisionError, "eps:", "eps=")
    working = _epsilon_named(str(exc), "eps")
    assert call(x, eps=working).verdict == "pass"


# -- options ---------------------------------------------------------------------------------

BAD_OPTIONS = [
    ("mode", "bogus"),
    ("mode", None),
    ("mode", 1),
    ("mode", "FULL"),
    ("direction", "up"),
    ("direction", None),
    ("precision", "half"),
    ("precision", "float32"),
    ("order", 0),
    ("order", 3),
    ("order", True),
    ("order", "1"),
    ("probes", 0),
    ("probes", -1),
    ("probes", 1.5),
    ("probes", "3"),
    ("probes", True),
    ("seed", -1),
    ("seed", 1.5),
    ("seed", "0"),
    ("seed", None),
    ("seed", True),
    ("wrt", 1),
    ("wrt", -2),
    ("wrt", "0"),
    ("wrt", (0, 3)),
    ("wrt", [True]),
    ("wrt", None.__class__),
    ("rtol", -1.0),
    ("rtol", "x"),
    ("rtol", math.nan),
    ("atol", -1.0),
    ("atol", math.inf),
]
BAD_OPTIONS += [
    ("accuracy", 3),
    ("accuracy", 5),
    ("accuracy", 0),
    ("accuracy", "4"),
    ("accuracy", True),
    ("method", "bogus"),
    ("method", None),
    ("wrt", 1.5),
    ("rtol", math.inf),
]


def _option_params() -> list[Any]:
    return [
        pytest.param(name, option, value, id=f"{name}-{option}={value!r}")
        for name in CHECKERS
        for option, value in BAD_OPTIONS
    ]


@pytest.mark.parametrize(("name", "option", "value"), _option_params())
def test_bad_option(name, option, value):
    raises_clear(
        lambda: CALLS[name](square_sum, np.array([1.0, 2.0]), **{option: value}),
        (ArgumentError, ArgumentTypeError),
        f"{option}:",
    )


@pytest.mark.parametrize("order", [0, 1, 3, 8, "2", True, None, 2.5])
def test_bad_order_of_numerical_gradient(order):
    raises_clear(
        lambda: gradguard.numerical_gradient(square_sum, np.ones(2), order=order),
        ArgumentError,
        "order:",
        "one of",
    )


@pytest.mark.parametrize("rtol", [-1.0, math.nan, "x", None])
def test_bad_tolerance_of_compare(rtol):
    raises_clear(
        lambda: _compare(square_sum, np.ones(2), rtol=rtol),
        (ArgumentError, ArgumentTypeError),
        "rtol:",
    )
    raises_clear(
        lambda: _compare(square_sum, np.ones(2), atol=rtol),
        (ArgumentError, ArgumentTypeError),
        "atol:",
    )


def test_unknown_option_of_compare():
    raises_clear(lambda: _compare(square_sum, np.ones(2), bogus=1), ArgumentTypeError, "bogus:")


def test_compare_refuses_bad_function_tables():
    torch = _torch()
    x = np.ones(2)
    raises_clear(
        lambda: gradguard.compare({"torch": square_sum}, x), ArgumentError, "functions:", "two"
    )
    raises_clear(
        lambda: gradguard.compare({"torch": square_sum, "mxnet": square_sum}, x),
        ArgumentError,
        "functions:",
        "'numpy'",
    )
    raises_clear(
        lambda: gradguard.compare({"torch": square_sum, "numpy": square_sum}, x),
        ArgumentError,
        'functions["numpy"]:',
        "grad",
    )
    raises_clear(
        lambda: gradguard.compare(
            {"numpy": {"f": square_sum, "hess": square_grad}, "torch": square_sum}, x
        ),
        ArgumentError,
        "functions['numpy']:",
        r'\{"f": f, "grad": grad\}',
        fix=False,  # the message shows the right form
    )
    assert torch is not None


# -- no floating-point input, mixed frameworks ----------------------------------------


@pytest.mark.parametrize("name", ("check", "assert_gradients"))
def test_no_floating_point_input(name):
    function = getattr(gradguard, name)

    def f(x, n):
        return (x**2).sum() * n

    exc = raises_clear(
        lambda: function(f, np.ones(2), 3, wrt=1, grad=lambda x, n: 2 * n),
        ArgumentTypeError,
        "args:",
        "float",
    )
    assert "wrt" in str(exc)
    raises_clear(
        lambda: function(lambda a, b: a.sum() + b.sum(), np.ones(2, int), np.ones(2, bool)),
        ArgumentTypeError,
        "args:",
        "float",
    )
    raises_clear(lambda: function(lambda s, k: 1.0, "text", 3), ArgumentTypeError, "args:", "array")


def test_no_floating_point_input_in_compare():
    raises_clear(
        lambda: _compare(square_sum, np.array([1, 2])), ArgumentTypeError, "args:", "float"
    )


@pytest.mark.parametrize("name", ("check", "assert_gradients"))
def test_arrays_of_two_frameworks(name):
    torch = _torch()
    function = getattr(gradguard, name)
    x = np.array([1.0, 2.0])
    y = torch.tensor([3.0], dtype=torch.float64)
    exc = raises_clear(
        lambda: function(lambda a, b: (a**2).sum() + (b**2).sum(), x, y),
        ArgumentTypeError,
        "args:",
        "numpy",
    )
    assert "torch" in str(exc)
    # Inside one argument (a pytree) too.
    exc = raises_clear(
        lambda: function(lambda p: (p["a"] ** 2).sum() + (p["b"] ** 2).sum(), {"a": x, "b": y}),
        ArgumentTypeError,
        "args:",
        "numpy",
    )
    assert "torch" in str(exc)


def test_arrays_of_two_frameworks_in_compare():
    torch = _torch()
    exc = raises_clear(
        lambda: gradguard.compare(
            {
                "numpy": (lambda a, b: (a**2).sum(), lambda a, b: 2 * a),
                "torch": lambda a, b: (a**2).sum(),
            },
            np.ones(2),
            torch.ones(2),
        ),
        ArgumentTypeError,
        "args:",
        "numpy",
    )
    assert "torch" in str(exc)


def test_arrays_of_jax_and_torch():
    torch = _torch()
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = pytest.importorskip("jax.numpy")
    exc = raises_clear(
        lambda: gradguard.check(lambda a, b: (a**2).sum(), jnp.ones(2), torch.ones(2)),
        ArgumentTypeError,
        "args:",
        "jax",
    )
    assert "torch" in str(exc)


def test_relative_error_compares_arrays_of_any_kinds():
    """The documented exception to "one framework per call"."""
    torch = _torch()
    a = np.array([1.0, 2.0])
    assert gradguard.relative_error(a, torch.tensor(a)) == 0.0
    assert gradguard.relative_error(torch.tensor(a), [1.0, 2.0]) == 0.0


# -- relative_error's own arguments ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "kind", "hint"),
    [
        pytest.param(None, ArgumentTypeError, "array", id="None"),
        pytest.param("ab", ArgumentTypeError, "array", id="str"),
        pytest.param(["a", "b"], ArgumentTypeError, "float", id="list-str"),
        pytest.param({"a": 1.0}, ArgumentTypeError, "array", id="dict"),
        pytest.param(_ragged(), ArgumentTypeError, "float", id="ragged"),
        pytest.param(np.array(["a", "b"]), ArgumentTypeError, "float", id="str-array"),
        pytest.param([10**400, 1], ArgumentTypeError, "float", id="huge-int"),
    ],
)
@pytest.mark.parametrize("position", ["a", "b"])
def test_relative_error_refuses_what_is_no_array(bad, kind, hint, position):
    good = [1.0, 2.0]
    args = (bad, good) if position == "a" else (good, bad)
    raises_clear(lambda: gradguard.relative_error(*args), kind, f"{position}:", hint)


def test_relative_error_refuses_different_shapes():
    raises_clear(
        lambda: gradguard.relative_error(np.ones(2), np.ones(3)), ArgumentError, "b:", "shape"
    )
    raises_clear(
        lambda: gradguard.relative_error(np.ones((2, 1)), np.ones(2)), ArgumentError, "b:", "shape"
    )


def test_relative_error_of_nan_or_inf_is_the_largest_error():
    for bad in ([1.0, math.nan], [1.0, math.inf], [-math.inf, 2.0]):
        assert gradguard.relative_error([1.0, 2.0], bad) == 1.0
        assert gradguard.relative_error(bad, [1.0, 2.0]) == 1.0


def test_relative_error_of_empty_zero_dimensional_and_integer_arrays():
    assert gradguard.relative_error(np.zeros(0), np.zeros(0)) == 0.0
    assert gradguard.relative_error(np.array(1.0), np.array(3.0)) == 0.5
    assert gradguard.relative_error(np.array([1, 2]), [1.0, 2.0]) == 0.0
    assert gradguard.relative_error([1, 0], [0, 1]) == pytest.approx(math.sqrt(2) / 2)
