"""Atomic checkpoint files for resumable training and plain model files.

Files are written to a temporary sibling and renamed into place, so a crash mid-write never leaves a
truncated checkpoint behind, and read with ``weights_only=True`` so loading a file cannot run code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from greenshift.errors import ConfigError
from greenshift.fileio import atomic_torch_save

CHECKPOINT_FORMAT = "greenshift-train-checkpoint"
CHECKPOINT_VERSION = 1


def _torch_load(path: Path, what: str) -> Any:
    """Load a torch file safely; a missing or unreadable file is a ConfigError naming ``what``."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{what} {path} is corrupt or not a torch file: {first}") from None


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a training checkpoint (a dict built by the training loop) atomically."""
    return atomic_torch_save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a ConfigError."""
    path = Path(path)
    state = _torch_load(path, "resume file")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"resume file {path} is not a greenshift training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise ConfigError(
            f"resume file {path} has checkpoint version {state.get('version')!r}; "
            f"this greenshift reads version {CHECKPOINT_VERSION}"
        )
    return state


def save_model(model: torch.nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()`` atomically (call ``round_shift_weights`` first for a deployed model)."""
    return atomic_torch_save(model.state_dict(), path)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict written by :func:`save_model` onto the CPU."""
    path = Path(path)
    state = _torch_load(path, "model file")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"model file {path} does not hold a state dict")
    return state
