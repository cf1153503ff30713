"""greenshift: find Deep Shift Neural Networks that are both accurate and cheap in energy.

``greenshift.search(...)``, ``greenshift.train(...)`` and the subpackages are imported on first use,
so ``import greenshift`` stays fast and free of side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

from greenshift.config import DSNNConfig
from greenshift.errors import GreenshiftError

__version__ = "0.1.0"

_LAZY_MODULES = ("search", "shift", "data", "models", "train", "objectives", "store", "report", "export")


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"greenshift.{name}")
    raise AttributeError(f"module 'greenshift' has no attribute {name!r}")


__all__ = ["DSNNConfig", "GreenshiftError", "__version__", *_LAZY_MODULES]
