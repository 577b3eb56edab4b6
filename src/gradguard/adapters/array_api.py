"""Any other library whose arrays expose ``__array_namespace__``
(array_api_strict, CuPy, ndonnx, ...): conversion only, no autodiff."""

from __future__ import annotations

from typing import Any

from .base import Adapter


class ArrayAPIAdapter(Adapter):
    name = "array_api"
    module = ""

    def owns(self, obj: Any) -> bool:
        import array_api_compat

        return array_api_compat.is_array_api_obj(obj) and not isinstance(obj, (int, float, complex))
