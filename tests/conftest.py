from __future__ import annotations

import pytest

from backends import NAMES, Backend, build

# The module each backend needs; a test on a backend whose module is not
# installed is skipped, and only then.
_MODULES = {
    "numpy": "numpy",
    "array_api_strict": "array_api_strict",
    "torch": "torch",
    "jax": "jax",
    "tensorflow": "tensorflow",
}


@pytest.fixture(params=NAMES)
def xp_backend(request: pytest.FixtureRequest) -> Backend:
    """Each array library in turn: numpy, array_api_strict, torch, jax, tensorflow."""
    pytest.importorskip(_MODULES[request.param])
    return build(request.param)
