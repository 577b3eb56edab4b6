"""The check as a pipeline, between the front doors and the adapters.

- :mod:`.problem`: the arguments -> flat inputs, outputs, precision, the rule to check.
- :mod:`.evaluation`: ``f`` at many points, batched, chunked, on an executor.
- :mod:`.run`: the numerical and analytical sides, the strategies that measure
  them, and the books that become the :class:`~gradguard.Report`.
- :mod:`.host_vjp`: one framework's VJP on the host (for ``compare`` and plots).
- :mod:`.step_curve`: the error-versus-step curve a plot draws.

It uses :mod:`gradguard.adapters`, :mod:`gradguard.core` and :mod:`gradguard.report`;
none of them imports it back (the import contract in ``pyproject.toml``).
"""

# Registers the curve measurement with report.plot (see step_curve's last line).
from . import step_curve as step_curve
