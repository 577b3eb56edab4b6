"""NumPy's floating-point warnings: off for gradguard's own arithmetic, the
caller's own settings for the caller's code.

A check meets NaN, inf and values near the top of the dtype on purpose (a
rule that returns inf must fail, not warn), and its arithmetic on them would
otherwise warn from deep inside gradguard. ``f`` and the derivative rules
run under whatever the caller had set.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import numpy as np

#: The caller's settings while a check runs (None outside one, and in
#: executor threads and processes, which keep their own).
_CALLERS: ContextVar[dict[str, Any] | None] = ContextVar("gradguard_numpy_errors", default=None)


# Classes rather than generator context managers: entered several times per
# check, and a probe check takes about 2 ms.
class quiet_arithmetic:
    """Around a check: NumPy does not warn about its arithmetic."""

    def __enter__(self) -> None:
        self._token = _CALLERS.set(dict(np.geterr()))
        self._state = np.errstate(all="ignore")
        self._state.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._state.__exit__(*exc)
        _CALLERS.reset(self._token)


class callers_settings:
    """Around a call of the caller's code: the settings it was called with."""

    def __enter__(self) -> None:
        saved = _CALLERS.get()
        self._state = None if saved is None else np.errstate(**saved)
        if self._state is not None:
            self._state.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._state is not None:
            self._state.__exit__(*exc)
