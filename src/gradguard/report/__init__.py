"""What a check hands back: the :class:`~.report.Report` (and :class:`~.comparison.Comparison`
for ``compare``), its plain-text and rich rendering, JSON, and plots.

Below the engine: it knows nothing of how the numbers were measured and imports
nothing of :mod:`gradguard.engine`.
"""
