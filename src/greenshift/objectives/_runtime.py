"""Small helpers shared by the objectives: inference context, devices, synchronisation, batches."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from greenshift.errors import DataError


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Eval mode without autograd; every module's own train/eval flag is restored afterwards."""
    modes = {name: module.training for name, module in model.named_modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        # Pre-order: a parent's train() resets its children, which are then fixed in turn.
        for name, module in model.named_modules():
            if name in modes and module.training != modes[name]:
                module.train(modes[name])


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a model without either)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work so wall-clock time and energy cover it (no-op elsewhere)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_inputs(batch: Any) -> Tensor:
    """The input tensor of a batch (``(inputs, labels)`` pairs or a bare tensor)."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise DataError(f"cannot find the inputs in a batch of type {type(batch).__name__}")


def validation_inputs(dataset: Any, batch_size: int, num_batches: int, device: torch.device) -> list[Tensor]:
    """The first ``num_batches`` validation input batches (unshuffled) on ``device``."""
    batches = []
    for batch in dataset.batches("val", batch_size, shuffle=False):
        batches.append(batch_inputs(batch).to(device))
        if len(batches) == num_batches:
            break
    if not batches:
        raise DataError("the validation split is empty")
    return batches


def fixed_size_batch(dataset: Any, batch_size: int, device: torch.device) -> Tensor:
    """One validation batch of exactly ``batch_size`` inputs (samples repeat if the split is smaller)."""
    parts: list[Tensor] = []
    count = 0
    while count < batch_size:
        before = count
        for batch in dataset.batches("val", batch_size, shuffle=False):
            x = batch_inputs(batch)
            parts.append(x)
            count += x.shape[0]
            if count >= batch_size:
                break
        if count == before:
            raise DataError("the validation split is empty")
    return torch.cat(parts)[:batch_size].to(device)


def sample_shape(dataset: Any) -> tuple[int, ...]:
    """Shape of one validation input without the batch dimension."""
    for batch in dataset.batches("val", 1, shuffle=False):
        return tuple(batch_inputs(batch).shape[1:])
    raise DataError("the validation split is empty")
