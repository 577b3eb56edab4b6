"""The problem: what a check differentiates, and how it calls f.

- :mod:`.build`: :class:`_Problem`, built once per check from f and its arguments.
- :mod:`.arguments`: which arguments and model parameters are differentiated (``wrt=``),
  and their names (:mod:`.names`: a torch Function's, from its ``forward``).
- :mod:`.leaf_call`: f as a function of the differentiated arrays alone.
- :mod:`.held`: entries that are not finite, held fixed.
- :mod:`.precision`: the dtypes of the numerical side.
- :mod:`.outputs`: which outputs are compared, and outputs that cannot be.
- :mod:`.user_rule`: a caller's ``grad=`` / ``vjp=`` rule as the analytical side.
- :mod:`.arrays`: small array helpers (copies, devices, random arrays).
"""

from .arguments import _argument_names as _argument_names
from .arguments import _wrt_positions as _wrt_positions
from .arrays import _device as _device
from .arrays import _rng as _rng
from .arrays import _to_xp as _to_xp
from .build import WrongGradientShape as WrongGradientShape
from .build import _Problem as _Problem
from .leaf_call import _LeafCall as _LeafCall
from .leaf_call import _note as _note
from .precision import _describe as _describe
from .precision import _real_dtype as _real_dtype
from .precision import _wide_dtype as _wide_dtype
