"""Multi-fidelity multi-objective search of DSNN configurations with SMAC3.

Users run a search with ``greenshift.search(...)`` (:mod:`greenshift.api`), which returns the run as
an object. This package is the engine behind it: :class:`DSNNSearch` runs one search from
:class:`SearchSettings`; SMAC's side of it is built by the facade classes of
:mod:`greenshift.search.facades`, one per name in :data:`SEARCH_OPTIMIZERS`, whose ``get_*`` methods a
subclass overrides to swap a part. Names load on first use, so reading settings does not import SMAC.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "DSNNSearch": "facade",
    "SearchResult": "facade",
    "SEARCH_OPTIMIZERS": "settings",
    "SearchSettings": "settings",
    "resolve_search_settings": "settings",
    "SearchFacade": "facades",
    "facade_for": "facades",
    "NullProgress": "progress",
    "RichProgress": "progress",
    "SearchProgress": "progress",
    "SearchStats": "progress",
    "build_space": "space",
    "default_space": "space",
    "TrialSettings": "trial",
    "run_trial": "trial",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"greenshift.search.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'greenshift.search' has no attribute {name!r}")


__all__ = sorted(_HOMES)
