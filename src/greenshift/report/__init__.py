"""greenshift.report: the Pareto front of a run, its hypervolume, improvement, importance and files.

``load_report(run_dir)`` reads a run into a :class:`ReportData`; ``write_report`` turns it into
PNG/CSV/JSON/HTML; ``pick`` chooses one configuration; ``compare_runs``/``write_comparison`` put several
runs side by side. ``energy_crosscheck`` sets measured next to modelled energy without measuring;
``remeasure`` is the explicit step that measures on this machine (``add_crosscheck`` attaches either to a
report). The front and the hypervolume curve are the store's (:func:`greenshift.store.run_front`).
"""

from __future__ import annotations

from greenshift.report.crosscheck import CrosscheckRow, EnergyCrosscheck, TrustStats, trust_statistics
from greenshift.report.data import (
    BudgetStep,
    Comparison,
    FrontEntry,
    ReferencePoint,
    ReportData,
    RunSummary,
    build_report,
    compare_runs,
    load_report,
)
from greenshift.report.energy import add_crosscheck, energy_crosscheck, remeasure
from greenshift.report.importance import Importance, compute_importance
from greenshift.report.improvement import ConfigImprovement, Headline, Improvement, compute_improvement
from greenshift.report.pick import Pick, pick
from greenshift.report.render import report_json, write_comparison, write_report

__all__ = [
    "BudgetStep",
    "Comparison",
    "ConfigImprovement",
    "CrosscheckRow",
    "EnergyCrosscheck",
    "FrontEntry",
    "Headline",
    "Importance",
    "Improvement",
    "Pick",
    "ReferencePoint",
    "ReportData",
    "RunSummary",
    "TrustStats",
    "add_crosscheck",
    "build_report",
    "compare_runs",
    "compute_importance",
    "compute_improvement",
    "energy_crosscheck",
    "load_report",
    "pick",
    "remeasure",
    "report_json",
    "trust_statistics",
    "write_comparison",
    "write_report",
]
