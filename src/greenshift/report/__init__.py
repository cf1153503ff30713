"""greenshift.report: the Pareto front of a run, its hypervolume, improvement, importance and files.

``load_report(run_dir)`` builds a :class:`ReportData`; ``write_report`` turns it into PNG/CSV/JSON/HTML;
``pick`` chooses one configuration; ``compare_runs``/``write_comparison`` put several runs side by side;
``energy_crosscheck`` (or ``load_report(run_dir, crosscheck=True)``) sets measured next to modelled energy.
"""

from __future__ import annotations

from greenshift.report.data import (
    BudgetStep,
    Comparison,
    Entry,
    ReferencePoint,
    ReportData,
    RunSummary,
    build_report,
    compare_runs,
    load_report,
)
from greenshift.report.energy import (
    CrosscheckRow,
    EnergyCrosscheck,
    TrustStats,
    energy_crosscheck,
    trust_statistics,
)
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
    "Entry",
    "Headline",
    "Importance",
    "Improvement",
    "Pick",
    "ReferencePoint",
    "ReportData",
    "RunSummary",
    "TrustStats",
    "build_report",
    "compare_runs",
    "compute_importance",
    "compute_improvement",
    "energy_crosscheck",
    "load_report",
    "pick",
    "report_json",
    "trust_statistics",
    "write_comparison",
    "write_report",
]
