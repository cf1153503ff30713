"""The run directory: an SQLite database of settings, trials and state, plus checkpoints.

This package knows nothing of the search (or SMAC): the search writes trials into it.
"""

from __future__ import annotations

from greenshift.store.lock import WriterLock, lock_holder
from greenshift.store.records import TrialRecord, TrialStatus, all_finite, config_key
from greenshift.store.sqlite import MIGRATIONS, RunStore

__all__ = [
    "MIGRATIONS",
    "RunStore",
    "TrialRecord",
    "TrialStatus",
    "WriterLock",
    "all_finite",
    "config_key",
    "lock_holder",
]
