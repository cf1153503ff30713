"""greenshift.report: the Pareto front of a run, its hypervolume, improvement, importance and files.

``load_report(run_dir)`` reads a run into a :class:`~greenshift.report.data.ReportData`; ``write_report`` turns it into
PNG/CSV/JSON/HTML; ``pick`` chooses one configuration; ``compare_runs``/``write_comparison`` put several
runs side by side. ``energy_crosscheck`` sets measured next to modelled energy without measuring;
``remeasure`` is the explicit step that measures on this machine (``add_crosscheck`` attaches either to a
report). The front and the hypervolume curve are the store's (:func:`greenshift.store.run_front`).
"""

from __future__ import annotations

from greenshift.report.data import compare_runs, load_report
from greenshift.report.energy import add_crosscheck, energy_crosscheck, remeasure
from greenshift.report.pick import pick
from greenshift.report.render import report_json, write_comparison, write_report

# What users need (docs/api.md); everything else is imported from its module.
__all__ = [
    "add_crosscheck",
    "compare_runs",
    "energy_crosscheck",
    "load_report",
    "pick",
    "remeasure",
    "report_json",
    "write_comparison",
    "write_report",
]
