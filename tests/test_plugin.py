"""The pytest plugin, run by pytest itself (``pytester``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util

pytest_plugins = ["pytester"]

INSTALLED = [
    name
    for name in ("numpy", "torch", "jax", "tensorflow")
    if importlib.util.find_spec(name) is not None
]


def test_registered_as_a_pytest11_entry_point():
    points = importlib.metadata.entry_points(group="pytest11")
    assert any(p.value == "gradguard.pytest_plugin" for p in points)


def run(pytester, *args: str):
    """pytest in a subprocess: an in-process run forgets, when it ends, the
    modules it imported, and a C extension (numpy's, jaxlib) imported twice in
    one process fails."""
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_fixture_over_installed_frameworks_and_the_marker_restricting_it(pytester):
    pytester.makepyfile(
        """
        import pytest

        def test_any(gradguard_framework):
            pass

        @pytest.mark.gradguard_frameworks("numpy")
        def test_only_numpy(gradguard_framework):
            pass
        """
    )
    result = run(pytester, "--collect-only", "-q", "--strict-markers")
    lines = result.stdout.lines
    assert sorted(line for line in lines if "test_any[" in line) == sorted(
        f"test_fixture_over_installed_frameworks_and_the_marker_restricting_it.py::test_any[{n}]"
        for n in INSTALLED
    )
    assert [line.split("::")[1] for line in lines if "test_only_numpy" in line] == [
        "test_only_numpy[numpy]"
    ]


def test_marker_with_an_unknown_framework_is_a_usage_error(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.gradguard_frameworks("mxnet")
        def test_x(gradguard_framework):
            pass
        """
    )
    result = run(pytester)
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*gradguard_frameworks takes framework names*mxnet*"])
    assert "_caller.py" not in result.stdout.str()  # a message, not a traceback


def test_failed_assert_gradients_reads_as_the_report(pytester):
    pytester.makepyfile(
        """
        import numpy as np
        import gradguard

        def f(x):
            return np.sum(x ** 3)

        def grad(x):
            return -3 * x ** 2   # sign flipped

        def test_cube():
            gradguard.assert_gradients(f, np.linspace(0.5, 1.5, 4), grad=grad)
        """
    )
    result = run(pytester)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*gradguard.assert_gradients(f, np.linspace*",
            "E*gradguard.GradientError: gradguard FAIL: the gradient disagrees with finite*",
            "E*diagnosis: sign flipped*",
            "E*worst entries:*",
        ]
    )
    # The traceback stops at the test's own line: nothing from inside gradguard.
    assert "_check.py" not in out and "raise GradientError" not in out
    # The public name, not the private module it is defined in.
    assert "gradguard._errors" not in out


FRAMEWORK_TESTS = """
import numpy as np
import pytest
import gradguard


@pytest.mark.gradguard_frameworks("numpy", "torch", "jax")
def test_round_trip(gradguard_framework):
    fw = gradguard_framework
    x = fw.asarray(np.arange(6.0).reshape(2, 3))
    assert fw.name == "numpy" or fw.name in type(x).__module__
    back = fw.to_numpy(x * 2.0)
    assert isinstance(back, np.ndarray) and back.dtype == np.float64
    np.testing.assert_array_equal(back, np.arange(6.0).reshape(2, 3) * 2)


@pytest.mark.gradguard_frameworks("jax")
def test_jax_is_float64_inside_the_test(gradguard_framework):
    x = gradguard_framework.asarray(np.ones(3))
    assert x.dtype == np.float64 and (x * 2.0).dtype == np.float64


def test_jax_x64_is_left_as_it_was():
    jax = pytest.importorskip("jax")
    assert not jax.config.jax_enable_x64


def softplus(fw, x):
    if fw.name == "torch":
        return fw.module.nn.functional.softplus(x)
    if fw.name == "tensorflow":
        return fw.module.math.softplus(x)
    return fw.module.logaddexp(x, 0.0)


@pytest.mark.gradguard_frameworks("torch", "jax")
def test_softplus(gradguard_framework):
    fw = gradguard_framework
    x = fw.asarray(np.linspace(-3, 3, 7))
    report = gradguard.assert_gradients(lambda x: softplus(fw, x), x)
    assert report.framework == fw.name and report.precision == "float64"
"""


def test_frameworks_through_the_fixture(pytester):
    pytester.makepyfile(FRAMEWORK_TESTS)
    result = run(pytester)
    present = [n for n in ("numpy", "torch", "jax") if n in INSTALLED]
    jax = int("jax" in INSTALLED)
    torch = int("torch" in INSTALLED)
    # A test whose frameworks are all missing has an empty parameter set: skipped.
    result.assert_outcomes(
        passed=len(present) + jax + jax + torch + jax,
        skipped=2 * (1 - jax) + int(torch + jax == 0),
    )
