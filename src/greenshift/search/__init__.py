"""Multi-fidelity multi-objective search of DSNN configurations with SMAC3.

``greenshift.search(...)`` runs a search from Python and returns a :class:`SearchResult`;
``greenshift.search.DSNNSearch`` is the facade behind it, whose parts can be replaced; SMAC's side of
it is built by the classes of :mod:`greenshift.search.facades`, one per name in :data:`SEARCH_OPTIMIZERS`.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from greenshift.search.facade import DSNNSearch, SearchResult
from greenshift.search.facades import SEARCH_OPTIMIZERS
from greenshift.search.progress import NullProgress, RichProgress, SearchProgress, SearchStats
from greenshift.search.settings import SearchSettings
from greenshift.search.space import build_space, config_from_values, default_space
from greenshift.search.trial import TrialSettings, run_trial


def run_search(
    dataset: str, backbone: str, out: str, *, progress: SearchProgress | None = None, **settings: Any
) -> SearchResult:
    """Run (or resume) a search; keyword arguments are the fields of :class:`SearchSettings`.

    Example: ``greenshift.search("digits", "resnet20", "runs/demo", trials=20, max_epochs=9)``.
    """
    return DSNNSearch(
        SearchSettings(dataset=dataset, backbone=backbone, out=out, **settings), progress=progress
    ).run()


class _CallableModule(types.ModuleType):
    """Lets ``greenshift.search(...)`` be called although ``greenshift.search`` is also this package."""

    def __call__(self, *args: Any, **kwargs: Any) -> SearchResult:
        return run_search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = [
    "SEARCH_OPTIMIZERS",
    "DSNNSearch",
    "NullProgress",
    "RichProgress",
    "SearchProgress",
    "SearchResult",
    "SearchSettings",
    "SearchStats",
    "TrialSettings",
    "build_space",
    "config_from_values",
    "default_space",
    "run_search",
    "run_trial",
]
