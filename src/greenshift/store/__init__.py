"""The run directory: an SQLite database of settings, trials and state, plus checkpoints.

This package knows nothing of the search (or SMAC): the search writes trials into it. It owns the
run directory's layout (:class:`RunLayout`), the kept models' file format (:func:`load_trial_model`)
and the definition of a run's Pareto front and hypervolume curve (:func:`run_front`,
:func:`budget_steps`, :func:`hypervolume_curve`), so every reader of a run answers them alike.
"""

from __future__ import annotations

from greenshift.store.front import (
    BUDGET_RTOL,
    BudgetStep,
    FrontEntry,
    at_full_budget,
    budget_steps,
    front_of,
    front_trial_ids,
    full_budget_entries,
    hypervolume_at,
    hypervolume_curve,
    run_default,
    run_front,
)
from greenshift.store.kept_models import load_trial_model, save_trial_model
from greenshift.store.layout import RunLayout, continuation_key
from greenshift.store.lock import WriterLock, lock_holder
from greenshift.store.records import (
    FAILED_STATUSES,
    FailureGroup,
    TrialRecord,
    TrialStatus,
    all_finite,
    config_key,
    error_headline,
    failure_groups,
)
from greenshift.store.sqlite import MIGRATIONS, RunStore

__all__ = [
    "BUDGET_RTOL",
    "FAILED_STATUSES",
    "MIGRATIONS",
    "BudgetStep",
    "FailureGroup",
    "FrontEntry",
    "RunLayout",
    "RunStore",
    "TrialRecord",
    "TrialStatus",
    "WriterLock",
    "all_finite",
    "at_full_budget",
    "budget_steps",
    "config_key",
    "continuation_key",
    "error_headline",
    "failure_groups",
    "front_of",
    "front_trial_ids",
    "full_budget_entries",
    "hypervolume_at",
    "hypervolume_curve",
    "load_trial_model",
    "lock_holder",
    "run_default",
    "run_front",
    "save_trial_model",
]
