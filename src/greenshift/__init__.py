"""greenshift: find Deep Shift Neural Networks that are both accurate and cheap in energy.

``greenshift.search(...)`` runs a search and returns its :class:`Run`; ``greenshift.open_run(path)``
opens one (:mod:`greenshift.api`). The subpackages (``greenshift.train``, ``greenshift.report``, ...)
are imported on first use, so ``import greenshift`` stays fast and free of side effects.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

import greenshift.search as _search_package  # light: its names load on first use
from greenshift.config import DSNNConfig
from greenshift.errors import GreenshiftError

__version__ = "0.1.0"

_LAZY_MODULES = ("shift", "data", "models", "train", "objectives", "store", "report", "export")
_API = ("Run", "open_run")


class _CallableSearchPackage(types.ModuleType):
    """``greenshift.search`` is the search engine's package and, called, the one way to run a search.

    A plain function of that name would be replaced by the package whenever the package is imported,
    so the package itself is made callable: ``greenshift.search(...)`` is :func:`greenshift.api.search`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from greenshift.api import search

        return search(*args, **kwargs)


_search_package.__class__ = _CallableSearchPackage


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("greenshift.api"), name)
    if name in _LAZY_MODULES:
        return importlib.import_module(f"greenshift.{name}")
    raise AttributeError(f"module 'greenshift' has no attribute {name!r}")


__all__ = ["DSNNConfig", "GreenshiftError", "Run", "__version__", "open_run", "search"]
