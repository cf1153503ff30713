"""Score an exported model on a data set, with the float simulation or the integer reference."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from greenshift.data import load_dataset
from greenshift.errors import ExportError
from greenshift.export.format import load_exported
from greenshift.shift.integer import IntegerReferenceModel
from greenshift.train import resolve_device, validate

_SPLITS = ("train", "val", "test")


@torch.no_grad()
def evaluate_exported(
    path: str | os.PathLike[str],
    dataset_name: str | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    integer: bool = False,
    split: str = "val",
    device: str = "cpu",
    batch_size: int = 500,
) -> dict[str, Any]:
    """Accuracy and mean cross-entropy of the exported model at ``path`` on ``split`` of ``dataset_name``.

    ``dataset_name`` and ``data_dir`` default to the data set the model was trained on and the folder the
    export recorded for it (exports of a search run record the run's ``--data-dir``). The data set is loaded at the export's image size and split seed and normalised with the export's
    mean/std (the inputs the model was trained on). ``integer=True`` runs the shift layers through the
    integer reference (:class:`greenshift.shift.integer.IntegerReferenceModel`; slow, a correctness
    check). Returns ``{"accuracy", "cross_entropy", "n", "split", "integer"}``
    (``cross_entropy`` is the mean cross-entropy, not the search objective ``loss`` = 1 - accuracy).
    """
    if split not in _SPLITS:
        raise ExportError(f"split {split!r} is not one of {', '.join(_SPLITS)}")
    target = resolve_device(device)
    model, meta = load_exported(path, device=target)
    dataset_name = dataset_name or meta.dataset
    if data_dir is None and dataset_name == meta.dataset:
        data_dir = meta.provenance.get("data_dir")
    data = load_dataset(
        dataset_name, data_dir=data_dir, image_size=meta.image_size, split_seed=meta.split_seed
    )
    if (data.num_classes, data.in_channels) != (meta.num_classes, meta.in_channels):
        raise ExportError(
            f"data set {dataset_name!r} has {data.num_classes} classes and {data.in_channels} channel(s); "
            f"the exported model expects {meta.num_classes} and {meta.in_channels}"
        )
    data = dataclasses.replace(data, mean=meta.mean, std=meta.std)
    data = data.to(target)
    scored: nn.Module = IntegerReferenceModel(model) if integer else model
    cross_entropy, accuracy = validate(scored, data, split=split, batch_size=batch_size)
    count = len(data.split(split))
    return {
        "accuracy": accuracy,
        "cross_entropy": cross_entropy,
        "n": count,
        "split": split,
        "integer": bool(integer),
    }
