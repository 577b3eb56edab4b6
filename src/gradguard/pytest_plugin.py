"""pytest plugin (registered through the ``pytest11`` entry point).

- fixture ``gradguard_framework``: each installed framework in turn
  (numpy, torch, jax, tensorflow), with ``.name``, ``.asarray(numpy_array)``
  (float64 where the framework allows; JAX with x64 enabled for the test)
  and ``.to_numpy(x)``, ``.module`` (``numpy``, ``torch``, ``jax.numpy``,
  ``tensorflow``);
- marker ``@pytest.mark.gradguard_frameworks("torch", "jax")``: only these;
- a failed :func:`gradguard.assert_gradients` shows the test's line and
  the report (``assert_gradients`` hides its own frame from pytest).

A framework is imported only by a test that uses it, when it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

MARKER = "gradguard_frameworks"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*names): run a test using the gradguard_framework fixture only for these "
        "frameworks (numpy, torch, jax, tensorflow)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gradguard_framework" not in metafunc.fixturenames:
        return
    from gradguard._frameworks import NAMES, installed

    names = list(installed())
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is not None:
        wanted = list(marker.args)
        unknown = [n for n in wanted if n not in NAMES]
        if unknown or not wanted:
            pytest.fail(
                f"{metafunc.definition.nodeid}: @pytest.mark.{MARKER} takes framework names "
                f"among {', '.join(NAMES)}; got {', '.join(map(repr, wanted)) or 'none'}",
                pytrace=False,
            )
        names = [n for n in names if n in wanted]
    metafunc.parametrize("gradguard_framework", names, indirect=True, ids=names)


@pytest.fixture
def gradguard_framework(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The framework this test runs on: ``.name``, ``.asarray``, ``.to_numpy``, ``.module``."""
    from gradguard._frameworks import framework

    name = getattr(request, "param", None)
    if name is None:
        raise pytest.UsageError(
            "gradguard_framework is parametrized by the gradguard plugin; request it as a "
            "test argument, not from another fixture's getfixturevalue"
        )
    fw = framework(name)
    with fw.float64():
        yield fw
