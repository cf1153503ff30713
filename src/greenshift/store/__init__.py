"""The run directory: an SQLite database of settings, trials and state, plus checkpoints.

This package knows nothing of the search (or SMAC): the search writes trials into it.
"""

from __future__ import annotations

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
    "FAILED_STATUSES",
    "MIGRATIONS",
    "FailureGroup",
    "RunStore",
    "TrialRecord",
    "TrialStatus",
    "WriterLock",
    "all_finite",
    "config_key",
    "error_headline",
    "failure_groups",
    "lock_holder",
]
