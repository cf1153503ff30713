"""Train one DSNN configuration for a number of epochs (the fidelity) and score it as deployed.

Design decisions:

- The learning rate follows cosine annealing over ``schedule_epochs`` and is stepped once per epoch
  (epoch ``e``, counted from 0, uses ``lr * (1 + cos(pi * e / schedule_epochs)) / 2``). Because the rate
  of an epoch depends only on its index, training ``b`` epochs with ``schedule_epochs=B`` is exactly the
  first ``b`` epochs of the ``B``-epoch run, which is what lets a multi-fidelity search continue a
  low-budget trial from its checkpoint.
- All randomness comes from two sources that are seeded from ``seed`` and saved in checkpoints: the
  global torch generator (weight initialisation, stochastic rounding) and a private CPU
  ``torch.Generator`` for the data order and augmentation. The global state of the caller is restored
  afterwards, so ``train`` has no side effect on torch's RNG (nor on its thread count).
- No mixed precision: fp16/bf16 have 10/7 mantissa bits and a narrow exponent range, so they can
  represent neither the 32-bit fixed-point activation grid nor the small powers of two (down to
  ``2**-127`` for 8-bit weights) of a shift layer exactly; autocast would train a different network
  from the one that is deployed and measured.
- Validation runs the model in eval mode under ``no_grad``: deterministic rounding, fixed-point
  activations, batch-norm running statistics, i.e. exactly the network that is exported.
- On the CPU the model trains in channels-last layout: PyTorch's CPU convolutions run it faster
  (``bench/train_loop.py``), and shift layers keep the layout of their input. The returned model is
  back in the usual contiguous layout, so nothing downstream sees the difference.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from greenshift.config import DSNNConfig
from greenshift.data import Dataset
from greenshift.errors import ConfigError
from greenshift.models import get_model
from greenshift.shift import convert_to_shift, count_shiftable_layers, round_shift_weights
from greenshift.train.checkpoint import load_checkpoint, load_state_dict_file, save_checkpoint
from greenshift.train.optimizers import make_optimizer, parameter_groups

ProgressCallback = Callable[[int, dict[str, float]], None]

# On an accelerator every finiteness check is a host sync; checking every few batches bounds both
# the sync cost and the compute wasted after a divergence.
_CHECK_EVERY_ACCELERATOR = 16

_CUDA_RE = re.compile(r"cuda(:\d+)?")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device that exists on this machine.

    ``auto`` picks the first CUDA device when there is one, else the CPU. Asking for CUDA where none is
    available (or for a device index that does not exist) is a :class:`ConfigError`.
    """
    text = str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    if _CUDA_RE.fullmatch(text):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {text!r} was requested but no CUDA device is available; use cpu or auto"
            )
        device = torch.device(text)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {text!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")


def resolve_shift_depth(config: DSNNConfig, model: nn.Module, backbone: str = "model") -> int:
    """The number of layers ``config`` shifts in ``model`` (``None`` = all); too large is a ConfigError."""
    available = count_shiftable_layers(model)
    if config.shift_depth is None:
        return available
    if config.shift_depth > available:
        raise ConfigError(
            f"shift_depth={config.shift_depth} exceeds the {available} shiftable layers of {backbone}"
        )
    return config.shift_depth


def check_shift_depth(config: DSNNConfig, backbone: str) -> int:
    """The layers ``config`` shifts in ``backbone``, checked before any data set is loaded.

    Builds the backbone once for 10 classes and 3 channels (its shiftable layers do not depend on
    them); an unknown backbone is a ModelError and a too large ``shift_depth`` a ConfigError.
    """
    return resolve_shift_depth(config, get_model(backbone, num_classes=10, in_channels=3), backbone)


def build_model(config: DSNNConfig, backbone: str, num_classes: int, in_channels: int) -> nn.Module:
    """A freshly initialised ``backbone`` with the configuration's shift conversion applied.

    The last ``shift_depth`` shiftable layers (all when ``None``) and every linear layer become shift
    layers of ``config.shift_type`` with its weight bits, rounding and fixed-point activation format;
    DeepShift-PS layers get DeepShift-PS's from-scratch initialisation (``init="scratch"``).
    Initialisation draws from the global torch generator, so seed it first for a reproducible model.
    """
    model = get_model(backbone, num_classes=num_classes, in_channels=in_channels)
    depth = resolve_shift_depth(config, model, backbone)
    return convert_to_shift(
        model,
        depth,
        shift_type=config.shift_type,
        weight_bits=config.weight_bits,
        rounding=config.rounding,
        act_integer_bits=config.activation_integer_bits,
        act_fraction_bits=config.activation_fraction_bits,
        convert_all_linear=True,
        init="scratch",
    )


def load_model(
    path: str | Path,
    config: DSNNConfig,
    backbone: str,
    num_classes: int,
    in_channels: int,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Rebuild ``backbone`` for ``config``, load the state dict saved at ``path`` and return it in eval mode."""
    state = load_state_dict_file(path)
    model = build_model(config, backbone, num_classes, in_channels)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"model file {path} does not match {backbone} with this configuration: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(resolve_device(device)).eval()


@torch.no_grad()
def validate(
    model: nn.Module, dataset: Dataset, *, split: str = "val", batch_size: int = 1000
) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``split``, scored exactly as deployed.

    The model runs in eval mode (deterministic rounding, batch-norm running statistics) under
    ``torch.no_grad``; its previous mode is restored afterwards. The data must be on the model's device.
    An empty split gives ``(nan, nan)``.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        count = 0
        for images, labels in dataset.batches(split, batch_size, shuffle=False, augment=False):
            logits = model(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").to(torch.float64)
            correct += (logits.argmax(dim=1) == labels).sum()
            count += int(labels.shape[0])
    finally:
        model.train(was_training)
    if count == 0:
        return math.nan, math.nan
    # One host sync for the whole split.
    return float(loss_sum.item()) / count, int(correct.item()) / count


@dataclass
class TrainResult:
    """What :func:`train` produced.

    ``model`` is in eval mode with its shift weights rounded (ready to save or deploy). Histories hold
    one entry per completed epoch (from the start of training, checkpointed epochs included).
    ``status`` is ``"ok"`` or ``"diverged"``; after a divergence ``model`` holds the weights of the last
    completed epoch (the initial weights if none completed) and ``message`` says what happened.
    ``train_time_s`` is the wall time of the training passes only (validation and checkpoint writes
    excluded), summed over resumed runs.
    """

    model: nn.Module
    status: str
    epochs_completed: int
    val_cross_entropy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    train_cross_entropy: list[float] = field(default_factory=list)
    train_time_s: float = 0.0
    shift_depth: int = 0
    message: str | None = None

    @property
    def final_accuracy(self) -> float:
        """Validation accuracy after the last completed epoch (nan if none)."""
        return self.val_accuracy[-1] if self.val_accuracy else math.nan

    @property
    def final_cross_entropy(self) -> float:
        """Validation cross-entropy after the last completed epoch (nan if none)."""
        return self.val_cross_entropy[-1] if self.val_cross_entropy else math.nan


def cosine_factor(epoch: int, schedule_epochs: int) -> float:
    """Multiplier of the base learning rate in epoch ``epoch`` (from 0) of a ``schedule_epochs`` schedule."""
    return 0.5 * (1.0 + math.cos(math.pi * epoch / schedule_epochs))


def train(
    config: DSNNConfig,
    dataset: Dataset,
    epochs: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    *,
    backbone: str = "resnet20",
    schedule_epochs: int | None = None,
    checkpoint_path: str | Path | None = None,
    resume_from: str | Path | None = None,
    progress: ProgressCallback | None = None,
    channels_last: bool | None = None,
) -> TrainResult:
    """Train ``backbone`` converted per ``config`` on ``dataset`` for ``epochs`` epochs.

    ``schedule_epochs`` (default ``epochs``) is the length of the cosine schedule. With
    ``checkpoint_path`` a checkpoint (model, optimiser, scheduler, RNG states, histories) is written
    atomically after every epoch; ``resume_from`` continues from one, bit-identically on the CPU, as long
    as config, backbone and ``schedule_epochs`` match (the checkpoint's RNG states replace ``seed``).
    ``progress(epoch, metrics)`` is called after each epoch (counted from 1) with ``train_cross_entropy``,
    ``val_cross_entropy``, ``val_accuracy`` and the ``lr`` used in that epoch. A non-finite training loss stops
    training with status ``"diverged"`` instead of raising. Deterministic on the CPU for a given seed.
    ``channels_last`` trains in channels-last memory layout; ``None`` (default) does so on the CPU only.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs={epochs!r} must be a positive integer")
    if schedule_epochs is None:
        schedule_epochs = epochs
    if isinstance(schedule_epochs, bool) or not isinstance(schedule_epochs, int) or schedule_epochs < epochs:
        raise ConfigError(
            f"schedule_epochs={schedule_epochs!r} must be an integer of at least epochs={epochs}"
        )
    checkpoint = load_checkpoint(resume_from) if resume_from is not None else None
    if checkpoint is not None:
        _check_resumable(checkpoint, config, backbone, schedule_epochs, epochs, resume_from)
    target = resolve_device(device)
    if channels_last is None:
        channels_last = target.type == "cpu"

    cuda_devices = list(range(torch.cuda.device_count())) if target.type == "cuda" else []
    # fork_rng restores the caller's RNG state afterwards: seeding here has no global side effect.
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        return _train(
            config,
            dataset.to(target),
            epochs,
            target,
            seed,
            backbone=backbone,
            schedule_epochs=schedule_epochs,
            checkpoint_path=checkpoint_path,
            checkpoint=checkpoint,
            progress=progress,
            channels_last=channels_last,
        )


def _check_resumable(
    state: dict[str, Any],
    config: DSNNConfig,
    backbone: str,
    schedule_epochs: int,
    epochs: int,
    path: str | Path,
) -> None:
    """Refuse to resume a checkpoint of another run; the LR schedule would otherwise silently change."""
    if state.get("config") != config.to_dict():
        raise ConfigError(f"resume file {path} was written for another configuration")
    if state.get("backbone") != backbone:
        raise ConfigError(
            f"resume file {path} was written for backbone {state.get('backbone')!r}, not {backbone!r}"
        )
    if state.get("schedule_epochs") != schedule_epochs:
        raise ConfigError(
            f"resume file {path} uses a {state.get('schedule_epochs')}-epoch schedule, "
            f"not {schedule_epochs}; pass schedule_epochs={state.get('schedule_epochs')}"
        )
    if int(state.get("epoch", 0)) > epochs:
        raise ConfigError(
            f"resume file {path} already holds {state.get('epoch')} epochs, more than epochs={epochs}"
        )


def _train(
    config: DSNNConfig,
    dataset: Dataset,
    epochs: int,
    device: torch.device,
    seed: int,
    *,
    backbone: str,
    schedule_epochs: int,
    checkpoint_path: str | Path | None,
    checkpoint: dict[str, Any] | None,
    progress: ProgressCallback | None,
    channels_last: bool,
) -> TrainResult:
    model = build_model(config, backbone, dataset.num_classes, dataset.in_channels).to(device)
    if channels_last:
        # Before the optimiser exists, so that its state follows the parameters' layout from the start.
        model.to(memory_format=torch.channels_last)
    depth = resolve_shift_depth(config, model, backbone)
    optimizer = make_optimizer(config, parameter_groups(model))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: cosine_factor(epoch, schedule_epochs)
    )
    generator = torch.Generator().manual_seed(seed)
    result = TrainResult(model=model, status="ok", epochs_completed=0, shift_depth=depth)
    if checkpoint is not None:
        _restore(checkpoint, model, optimizer, scheduler, generator, result, device)

    check_every = 1 if device.type == "cpu" else _CHECK_EVERY_ACCELERATOR
    for epoch in range(result.epochs_completed, epochs):
        lr = float(optimizer.param_groups[0]["lr"])
        # Snapshot so that a divergence leaves the model of the last good epoch, matching the histories.
        good_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        start = time.perf_counter()
        train_loss, failure = _train_epoch(
            model, optimizer, _training_batches(dataset, config, generator), check_every
        )
        result.train_time_s += time.perf_counter() - start
        if failure is not None:
            model.load_state_dict(good_state)
            result.status = "diverged"
            kept = f"the model of epoch {epoch}" if epoch else "the initial model"
            result.message = (
                f"training diverged in epoch {epoch + 1}: {failure} (lr={lr:.3g}); {kept} is kept"
            )
            break
        scheduler.step()
        val_loss, val_accuracy = validate(model, dataset, batch_size=config.test_batch_size)
        result.train_cross_entropy.append(train_loss)
        result.val_cross_entropy.append(val_loss)
        result.val_accuracy.append(val_accuracy)
        result.epochs_completed = epoch + 1
        if checkpoint_path is not None:
            save_checkpoint(
                _checkpoint_state(
                    config,
                    backbone,
                    schedule_epochs,
                    seed,
                    model,
                    optimizer,
                    scheduler,
                    generator,
                    result,
                    device,
                ),
                checkpoint_path,
            )
        if progress is not None:
            progress(
                epoch + 1,
                {
                    "train_cross_entropy": train_loss,
                    "val_cross_entropy": val_loss,
                    "val_accuracy": val_accuracy,
                    "lr": lr,
                },
            )

    model.eval()
    if channels_last:
        model.to(memory_format=torch.contiguous_format)
    round_shift_weights(model)
    return result


def _training_batches(
    dataset: Dataset, config: DSNNConfig, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled, augmented training batches drawn from the private generator."""
    return dataset.batches("train", config.batch_size, shuffle=True, augment=True, generator=generator)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    check_every: int,
) -> tuple[float, str | None]:
    """One pass over ``batches``; returns (mean training loss, failure description or None)."""
    model.train()
    loss_sum: torch.Tensor | None = None
    count = 0
    for index, (images, labels) in enumerate(batches, start=1):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        weighted = loss.detach().to(torch.float64) * labels.shape[0]
        loss_sum = weighted if loss_sum is None else loss_sum + weighted
        count += int(labels.shape[0])
        if index % check_every == 0 and not bool(torch.isfinite(loss_sum)):
            return math.nan, f"training loss became {float(loss.item())} at batch {index}"
    if loss_sum is None:
        return math.nan, "the training split yielded no batches"
    mean = float(loss_sum.item()) / count
    if not math.isfinite(mean):
        return math.nan, f"mean training loss became {mean}"
    return mean, None


def _rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state_all()
    return states


def _checkpoint_state(
    config: DSNNConfig,
    backbone: str,
    schedule_epochs: int,
    seed: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    result: TrainResult,
    device: torch.device,
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "backbone": backbone,
        "schedule_epochs": schedule_epochs,
        "seed": seed,
        "epoch": result.epochs_completed,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_states(device),
        "data_generator": generator.get_state(),
        "history": {
            "train_loss": list(result.train_cross_entropy),
            "val_loss": list(result.val_cross_entropy),
            "val_accuracy": list(result.val_accuracy),
        },
        "train_time_s": result.train_time_s,
    }


def _restore(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    result: TrainResult,
    device: torch.device,
) -> None:
    """Load a checkpoint into freshly built training objects; a malformed one is a ConfigError."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["data_generator"])
        torch.set_rng_state(state["rng"]["torch_cpu"])
        if device.type == "cuda" and "torch_cuda" in state["rng"]:
            torch.cuda.set_rng_state_all(state["rng"]["torch_cuda"])
        history = state["history"]
        result.train_cross_entropy = [float(x) for x in history["train_loss"]]
        result.val_cross_entropy = [float(x) for x in history["val_loss"]]
        result.val_accuracy = [float(x) for x in history["val_accuracy"]]
        result.epochs_completed = int(state["epoch"])
        result.train_time_s = float(state["train_time_s"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"resume file is incomplete or does not fit this model: {exc}".splitlines()[0]
        ) from None
