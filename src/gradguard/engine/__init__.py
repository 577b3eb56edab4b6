"""The check as a pipeline, between the front doors and the adapters.

- :mod:`.problem`: the arguments -> flat inputs, outputs, precision, the rule to check.
- :mod:`.run`: one check: builds its parts, picks the strategy, writes the Report.
- :mod:`.strategies`: the ways of measuring, one module each (probes, columns,
  the two-point screen, grouped columns).
- :mod:`.numerical`: f near x, steps, finite differences with their error estimates.
- :mod:`.analytical`: the rule under check: VJP rows, JVP columns, the wider-dtype rerun.
- :mod:`.confirm`: entries the check's step cannot decide, measured at other steps.
- :mod:`.ledger`: comparisons and the books (tallies, worst entries, flags);
  :mod:`.entry_map`: the undecided cells of the per-entry map.
- :mod:`.report_writer`: the books -> the :class:`~gradguard.Report`.
- :mod:`.parts`: what every strategy measures with; :mod:`.draws`: random
  directions and cotangents; :mod:`.spans`: ranges of columns.
- :mod:`.evaluation`: ``f`` at many points, batched, chunked, on an executor;
  :mod:`.tasks`: what runs in a task; :mod:`.progress`: the progress bar.
- :mod:`.host_vjp`: one framework's VJP on the host (for ``compare`` and plots).
- :mod:`.step_curve`: the error-versus-step curve a plot draws.

It uses :mod:`gradguard.adapters`, :mod:`gradguard.core` and :mod:`gradguard.report`;
none of them imports it back (the import contract in ``pyproject.toml``).
"""

# Registers the curve measurement with report.plot (see step_curve's last line).
from . import step_curve as step_curve
