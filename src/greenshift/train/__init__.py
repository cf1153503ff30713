"""Training of one DSNN configuration: ``train(config, dataset, epochs, device, seed) -> TrainResult``.

Also the optimisers of the search space (with our own Lookahead for ranger), device resolution,
validation of the deployed model, and atomic checkpoint/model files.
"""

from greenshift.train.checkpoint import load_checkpoint, save_checkpoint, save_model
from greenshift.train.loop import (
    TrainResult,
    build_model,
    check_shift_depth,
    cosine_factor,
    load_model,
    resolve_device,
    resolve_shift_depth,
    train,
    validate,
)
from greenshift.train.optimizers import Lookahead, make_optimizer, parameter_groups

__all__ = [
    "Lookahead",
    "TrainResult",
    "build_model",
    "check_shift_depth",
    "cosine_factor",
    "load_checkpoint",
    "load_model",
    "make_optimizer",
    "parameter_groups",
    "resolve_device",
    "resolve_shift_depth",
    "save_checkpoint",
    "save_model",
    "train",
    "validate",
]
