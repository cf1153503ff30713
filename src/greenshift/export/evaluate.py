"""Score an exported model on a data set, with the float simulation or the integer reference."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from greenshift.data import Dataset, load_dataset
from greenshift.errors import ExportError
from greenshift.export.format import load_exported
from greenshift.shift.integer import IntegerReferenceModel
from greenshift.train import resolve_device

_SPLITS = ("train", "val", "test")


@torch.no_grad()
def _score(model: nn.Module, dataset: Dataset, split: str, batch_size: int) -> tuple[float, float, int]:
    """Mean cross-entropy, top-1 accuracy and sample count of ``model`` on ``split`` (eval mode)."""
    model.eval()
    device = dataset.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    for images, labels in dataset.batches(split, batch_size, shuffle=False, augment=False):
        logits = model(images)
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").to(torch.float64)
        correct += (logits.argmax(dim=1) == labels).sum()
        count += int(labels.shape[0])
    if count == 0:
        return math.nan, math.nan, 0
    return float(loss_sum.item()) / count, int(correct.item()) / count, count


def evaluate_exported(
    path: str | os.PathLike[str],
    dataset_name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    integer: bool = False,
    split: str = "val",
    device: str = "cpu",
    batch_size: int = 500,
) -> dict[str, Any]:
    """Accuracy and loss of the exported model at ``path`` on ``split`` of ``dataset_name``.

    The data set is loaded at the export's image size and split seed and normalised with the export's
    mean/std (the inputs the model was trained on). ``integer=True`` runs the shift layers through the
    integer reference (:class:`greenshift.shift.integer.IntegerReferenceModel`; slow, a correctness
    check). Returns ``{"accuracy", "loss", "n", "split", "integer"}``.
    """
    if split not in _SPLITS:
        raise ExportError(f"split {split!r} is not one of {', '.join(_SPLITS)}")
    target = resolve_device(device)
    model, meta = load_exported(path, device=target)
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
    loss, accuracy, count = _score(scored, data, split, batch_size)
    return {"accuracy": accuracy, "loss": loss, "n": count, "split": split, "integer": bool(integer)}
