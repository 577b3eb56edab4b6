"""Every exception gradguard raises derives from :class:`GradguardError`.

Errors about the caller's arguments are also ``ValueError`` or ``TypeError``
so that generic handlers keep working; a wrong gradient is an
``AssertionError`` so that test runners report it as a failed assertion.
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "GradguardError",
    "GradientError",
    "MutationError",
    "PrecisionError",
    "PrecisionWarning",
    "UnsupportedError",
]


class GradguardError(Exception):
    """Base class of every gradguard exception."""


class ArgumentError(GradguardError, ValueError):
    """An argument has the right type but an unusable value."""


class ArgumentTypeError(GradguardError, TypeError):
    """An argument has a type gradguard cannot work with."""


class PrecisionError(ArgumentError):
    """The finite-difference step cannot be represented at the input's precision."""


class MutationError(ArgumentError):
    """The checked function writes into its own arguments."""


class UnsupportedError(GradguardError, NotImplementedError):
    """The function or framework lacks what the requested check needs
    (no autodiff for plain NumPy, no forward mode for a ``custom_vjp``, ...)."""


class GradientError(GradguardError, AssertionError):
    """Raised by :func:`gradguard.assert_gradients` when a check does not pass.

    ``report`` holds the full :class:`gradguard.Report`.
    """

    def __init__(self, report: object) -> None:
        super().__init__(str(report))
        self.report = report


class PrecisionWarning(UserWarning):
    """The requested step was too small for the input's dtype and gradguard
    evaluated in a wider dtype instead."""


# Tracebacks and pytest print the class's module: show the public name
# (gradguard.GradientError), not this private module. Each is exported there.
for _cls in (
    GradguardError,
    ArgumentError,
    ArgumentTypeError,
    PrecisionError,
    MutationError,
    UnsupportedError,
    GradientError,
    PrecisionWarning,
):
    _cls.__module__ = "gradguard"
del _cls
