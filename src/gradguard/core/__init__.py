"""Backend-neutral numerics: only the Array API namespace ``xp``.

Nothing in this package imports torch, jax or tensorflow; every function
takes the namespace of its arrays (``array_api_compat.array_namespace``).
"""

from .differences import DirectionalDerivatives, directional_derivatives
from .layout import FlatLayout
from .norms import relative_error
from .stencils import CENTRAL, Stencil
from .steps import default_steps

__all__ = [
    "CENTRAL",
    "DirectionalDerivatives",
    "FlatLayout",
    "Stencil",
    "default_steps",
    "directional_derivatives",
    "relative_error",
]
