"""Checkpoint files of a run directory, as the store names them."""

from __future__ import annotations

from pathlib import Path


def continuation_checkpoints(run_dir: str | Path) -> list[tuple[str, Path]]:
    """The continuation checkpoints in ``run_dir/checkpoints``, each with the configuration key it is for.

    A configuration's training state between Hyperband promotions is kept in
    ``continue-<config key>-s<seed>.pt`` (written by ``greenshift.search.trial.continuation_checkpoint``).
    Sorted by file name; empty when the run has no checkpoint folder.
    """
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return [
        (path.name.removeprefix("continue-").rsplit("-s", 1)[0], path)
        for path in sorted(folder.glob("continue-*.pt"))
    ]
