"""gradguard: is this gradient right?

One finite-difference gradient check for NumPy, PyTorch, JAX, TensorFlow and
any Array-API library. Importing gradguard imports none of those
frameworks; an adapter loads only for a framework the caller has imported.
"""

from ._check import assert_gradients as assert_gradients
from ._check import check as check
from ._compare import Comparison as Comparison
from ._compare import compare as compare
from ._errors import ArgumentError as ArgumentError
from ._errors import ArgumentTypeError as ArgumentTypeError
from ._errors import GradguardError as GradguardError
from ._errors import GradientError as GradientError
from ._errors import MutationError as MutationError
from ._errors import PrecisionError as PrecisionError
from ._errors import PrecisionWarning as PrecisionWarning
from ._errors import UnsupportedError as UnsupportedError
from ._seed import check_gradient as check_gradient
from ._seed import numerical_gradient as numerical_gradient
from ._seed import relative_error as relative_error
from .report.report import ArgumentSummary as ArgumentSummary
from .report.report import Mismatch as Mismatch
from .report.report import Report as Report

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "ArgumentSummary",
    "ArgumentTypeError",
    "Comparison",
    "GradguardError",
    "GradientError",
    "Mismatch",
    "MutationError",
    "PrecisionError",
    "PrecisionWarning",
    "Report",
    "UnsupportedError",
    "assert_gradients",
    "check",
    "check_gradient",
    "compare",
    "numerical_gradient",
    "relative_error",
]
