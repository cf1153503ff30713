"""Training of one DSNN configuration: ``train(config, dataset, epochs, device, seed) -> TrainResult``.

Also the optimisers of the search space (with our own Lookahead for ranger), device resolution,
validation of the deployed model, and atomic checkpoint/model files. Names load on first use, so the
light :mod:`greenshift.train.settings` (what the command line parses) does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "train": "loop",
    "TrainResult": "loop",
    "validate": "loop",
    "build_model": "loop",
    "load_model": "loop",
    "check_shift_depth": "loop",
    "resolve_device": "loop",
    "resolve_shift_depth": "loop",
    "cosine_factor": "loop",
    "save_model": "checkpoint",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "make_optimizer": "optimizers",
    "parameter_groups": "optimizers",
    "Lookahead": "optimizers",
    "TrainSettings": "settings",
    "resolve_train_settings": "settings",
    "run_training": "settings",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"greenshift.train.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'greenshift.train' has no attribute {name!r}")


# What users need; the checkpoint internals, schedule and Lookahead stay reachable by name.
__all__ = [
    "TrainResult",
    "TrainSettings",
    "build_model",
    "check_shift_depth",
    "load_model",
    "make_optimizer",
    "parameter_groups",
    "resolve_device",
    "resolve_train_settings",
    "run_training",
    "save_model",
    "train",
    "validate",
]
