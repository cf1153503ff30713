"""The run directory: an SQLite database of settings, trials and state, plus checkpoints.

This package knows nothing of the search (or SMAC): the search writes trials into it. It owns the
run directory's layout (:class:`RunLayout`), the kept models' file format (:func:`load_trial_model`)
and the definition of a run's Pareto front and hypervolume curve (:func:`run_front`,
:func:`~greenshift.store.front.budget_steps`, :func:`hypervolume_curve`), so every reader of a run answers them alike.
"""

from __future__ import annotations

from greenshift.store.front import hypervolume_curve, run_default, run_front
from greenshift.store.kept_models import load_trial_model
from greenshift.store.layout import RunLayout
from greenshift.store.records import TrialRecord, TrialStatus, failure_groups
from greenshift.store.sqlite import RunStore

# What users need (docs/api.md); everything else is imported from its module.
__all__ = [
    "RunLayout",
    "RunStore",
    "TrialRecord",
    "TrialStatus",
    "failure_groups",
    "hypervolume_curve",
    "load_trial_model",
    "run_default",
    "run_front",
]
