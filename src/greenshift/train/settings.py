"""Settings of one training run (what ``greenshift train`` takes), their merge and the run itself.

Precedence: ``overrides`` (the command line) > config file > defaults. A config file (YAML or JSON)
holds the keys of :data:`TRAIN_KEYS` and any hyperparameter of :class:`~greenshift.config.DSNNConfig`,
at the top level or under ``set`` (which wins). A top-level ``optimizer`` is refused: it means the
search optimiser in a search's config file, so the training optimiser goes under ``set``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from greenshift.config import (
    DSNNConfig,
    coerce_assignments,
    coerce_int,
    coerce_str,
    merge_settings,
    read_settings_file,
    require_settings,
)
from greenshift.errors import ConfigError

#: Keys of a training config file and of :func:`resolve_train_settings`' ``overrides`` (``set`` holds
#: hyperparameters; it becomes :attr:`TrainSettings.config`).
TRAIN_KEYS = ("dataset", "backbone", "epochs", "data_dir", "image_size", "device", "seed", "set")

_HYPERPARAMETERS = tuple(f.name for f in fields(DSNNConfig))

_COERCERS: dict[str, Callable[[str, Any], Any]] = {
    "dataset": coerce_str,
    "backbone": coerce_str,
    "epochs": coerce_int,
    "data_dir": coerce_str,
    "image_size": coerce_int,
    "device": coerce_str,
    "seed": coerce_int,
    "set": coerce_assignments,
}


@dataclass(frozen=True)
class TrainSettings:
    """One training run: data set, backbone, epochs, device, seed and the DSNN configuration."""

    dataset: str
    backbone: str
    epochs: int
    config: DSNNConfig = field(default_factory=DSNNConfig)
    data_dir: str | None = None
    image_size: int | None = None
    device: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}", fields=("epochs",))


def train_defaults() -> dict[str, Any]:
    """The defaults of :data:`TRAIN_KEYS` (``None`` where a value is required), from :class:`TrainSettings`."""
    by_name = {f.name: f for f in fields(TrainSettings)}
    return {
        key: {} if key == "set" else (None if by_name[key].default is MISSING else by_name[key].default)
        for key in TRAIN_KEYS
    }


def resolve_train_settings(
    *, config_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainSettings:
    """Merge ``overrides`` > ``config_file`` > defaults into validated :class:`TrainSettings`.

    ``overrides`` takes the keys of :data:`TRAIN_KEYS` (``None`` = not given); ``set`` is a mapping or a
    list of ``key=value`` strings, merged key by key with the file's. Errors name the keys.
    """
    layers: list[tuple[str | None, Mapping[str, Any]]] = []
    if config_file is not None:
        layers.append((f"config file {config_file}", _file_layer(config_file)))
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(TRAIN_KEYS))
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}; valid: {', '.join(TRAIN_KEYS)}")
    layers.append((None, overrides))
    merged = merge_settings(layers, _COERCERS, train_defaults(), merged_keys=("set",))
    require_settings(merged, ("dataset", "backbone", "epochs"))
    fixed = merged.pop("set")
    config = DSNNConfig().replace(**fixed)
    return TrainSettings(config=config, **merged)


def _file_layer(path: str | Path) -> dict[str, Any]:
    """A training config file's keys, its top-level hyperparameters moved under ``set``."""
    origin = f"config file {path}"
    values = read_settings_file(path, TRAIN_KEYS, extra_ok=_HYPERPARAMETERS, path_keys=("data_dir",))
    if "optimizer" in values:
        # At the top of a config file, optimizer is the search optimiser (greenshift search --optimizer);
        # one meaning per key, so the training optimiser of train goes under set: as in a search file.
        raise ConfigError(
            f"{origin}: a top-level optimizer means the search optimiser of greenshift search; "
            f"put the training optimiser under set: (set: {{optimizer: {values['optimizer']}}})"
        )
    layer = {k: v for k, v in values.items() if k in TRAIN_KEYS}
    hyperparameters = {k: v for k, v in values.items() if k in _HYPERPARAMETERS}
    try:
        file_set = coerce_assignments("set", values.get("set") or {})
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    layer["set"] = {**hyperparameters, **file_set}
    return layer


@dataclass(frozen=True)
class TrainRun:
    """What :func:`run_training` did: its settings, where it ran, the training result and the wall time."""

    settings: TrainSettings
    dataset_name: str
    device: str
    result: Any  # TrainResult
    wall_time_s: float

    @property
    def final_config(self) -> dict[str, Any]:
        """The configuration trained, ``shift_depth`` resolved against the backbone."""
        return {**self.settings.config.to_dict(), "shift_depth": self.result.shift_depth}

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready values (``greenshift train --json``)."""
        result = self.result
        return {
            "dataset": self.dataset_name,
            "backbone": self.settings.backbone,
            "epochs": self.settings.epochs,
            "epochs_completed": result.epochs_completed,
            "device": self.device,
            "seed": self.settings.seed,
            "status": result.status,
            "message": result.message,
            "val_accuracy": result.final_accuracy,
            "val_cross_entropy": result.final_cross_entropy,
            "train_time_s": result.train_time_s,
            "wall_time_s": self.wall_time_s,
            "config": self.final_config,
            "history": {
                "val_accuracy": result.val_accuracy,
                "val_cross_entropy": result.val_cross_entropy,
                "train_cross_entropy": result.train_cross_entropy,
            },
        }


def run_training(
    settings: TrainSettings,
    *,
    progress: Callable[[int, Mapping[str, float]], None] | None = None,
    started: Callable[[], None] | None = None,
) -> TrainRun:
    """Train ``settings``' configuration: backbone and depth checked first, then the data set loaded.

    ``started()`` is called once all is checked and loaded, just before the first epoch (a progress bar
    starts there, so that errors are not printed under it); ``progress(epoch, metrics)`` after each
    epoch (see :func:`~greenshift.train.train`).
    """
    from greenshift.data import load_dataset
    from greenshift.train.loop import check_shift_depth, resolve_device, train

    check_shift_depth(settings.config, settings.backbone)
    device = resolve_device(settings.device)
    dataset = load_dataset(settings.dataset, data_dir=settings.data_dir, image_size=settings.image_size)
    if started is not None:
        started()
    begin = time.perf_counter()
    result = train(
        settings.config,
        dataset,
        settings.epochs,
        device,
        settings.seed,
        backbone=settings.backbone,
        progress=progress,
    )
    return TrainRun(settings, dataset.name, str(device), result, time.perf_counter() - begin)
