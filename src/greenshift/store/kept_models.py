"""Trained models a search kept in the run directory (``--keep-models``): the file format, both ways.

A kept model is a ``torch.save`` of a dict with ``state_dict`` (CPU tensors), ``config``, ``backbone``,
``dataset``, ``budget_epochs``, ``seed`` and ``objectives``, written atomically at
:meth:`greenshift.store.layout.RunLayout.model_checkpoint` by :func:`save_trial_model` and read back
(weights only, never a pickle) by :func:`load_trial_model`. Report and export read them here, without
the search.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from greenshift.config import DSNNConfig
from greenshift.errors import StoreError
from greenshift.fileio import atomic_torch_save


def save_trial_model(
    path: str | Path,
    model: Any,
    *,
    config: Mapping[str, Any],
    backbone: str,
    dataset: str,
    budget_epochs: int,
    seed: int,
    objectives: Mapping[str, float],
) -> Path:
    """Keep the trained ``model`` of a trial at ``path`` (atomically), in the format :func:`load_trial_model` reads."""
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": dict(config),
        "backbone": backbone,
        "dataset": dataset,
        "budget_epochs": budget_epochs,
        "seed": seed,
        "objectives": dict(objectives),
    }
    return atomic_torch_save(payload, path)


def load_trial_model(
    path: str | Path,
    *,
    num_classes: int,
    in_channels: int,
    config: Any | None = None,
    backbone: str | None = None,
) -> Any:
    """The trained model a search kept at ``path``, in eval mode.

    With ``config``/``backbone`` given, the file must belong to them. A missing, damaged or foreign
    file is a :class:`StoreError` that says which.
    """
    import torch

    from greenshift.train import build_model

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, missing: all mean "cannot be used"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"kept model {path} is unreadable ({first})") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise StoreError(f"{path} is not a model kept by a greenshift search")
    stored = DSNNConfig.from_dict(payload["config"])
    stored_backbone = str(payload.get("backbone") or backbone)
    if (config is not None and stored != config) or (backbone is not None and stored_backbone != backbone):
        raise StoreError(f"kept model {path} belongs to another configuration")
    model = build_model(stored, stored_backbone, num_classes, in_channels)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise StoreError(
            f"kept model {path} does not fit its configuration: {str(exc).splitlines()[0]}"
        ) from None
    return model.eval()
