"""Where everything of a run lies inside its run directory: the one place that names those files.

Layout of a run directory::

    run_dir/
        run.sqlite                  settings (identity, info), trials, small state values
        writer.lock                 the one-writer lock of a live search (greenshift.store.lock)
        checkpoints/                created when the first one is written:
            model-<key>-s<seed>-e<epochs>.pt   a trained model kept by the search (--keep-models)
            continue-<key>-s<seed>.pt          training state between Hyperband promotions
            trial-<id>.pt                      a checkpoint written through RunStore.checkpoint_path
        smac/                       SMAC's own output folder (its run history, for SMAC's tools)
        report/energy_crosscheck.json   energies measured by ``report --remeasure`` (a cache)
        report.html, report.json, pareto.csv, pareto.png, hypervolume.png, importance.png,
        energy_crosscheck.png       the report's files (``greenshift report``, or its ``--out``)
        previous-<UTC time>/        earlier runs moved aside by ``force_new``

Readers and writers of a run (store, search, report, export) take these paths from
:class:`RunLayout` instead of spelling them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "run.sqlite"
LOCK_NAME = "writer.lock"
CHECKPOINT_DIR = "checkpoints"
SMAC_DIR = "smac"
ARCHIVE_PREFIX = "previous-"
#: The energies ``report --remeasure`` measured, relative to the run directory.
CROSSCHECK_CACHE = Path("report") / "energy_crosscheck.json"
#: The files ``write_report`` writes, by short name (``crosscheck`` only when energies were measured).
REPORT_FILES = {
    "pareto": "pareto.png",
    "hypervolume": "hypervolume.png",
    "importance": "importance.png",
    "crosscheck": "energy_crosscheck.png",
    "csv": "pareto.csv",
    "json": "report.json",
    "html": "report.html",
}

_CONTINUATION = re.compile(r"^continue-(?P<key>.+)-s(?P<seed>-?\d+)\.pt$")


@dataclass(frozen=True)
class RunLayout:
    """The named paths of the run directory ``root`` (nothing is created or read here)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def db(self) -> Path:
        """The SQLite database."""
        return self.root / DB_NAME

    @property
    def lock(self) -> Path:
        """The writer lock file."""
        return self.root / LOCK_NAME

    @property
    def checkpoints(self) -> Path:
        """The folder of model and continuation checkpoints."""
        return self.root / CHECKPOINT_DIR

    @property
    def smac(self) -> Path:
        """SMAC's output folder."""
        return self.root / SMAC_DIR

    @property
    def crosscheck_cache(self) -> Path:
        """The cache of re-measured energies."""
        return self.root / CROSSCHECK_CACHE

    def archive(self, stamp: str) -> Path:
        """The folder an earlier run is moved into by ``force_new``."""
        return self.root / f"{ARCHIVE_PREFIX}{stamp}"

    def trial_checkpoint(self, trial_id: int) -> Path:
        """The checkpoint named after a trial id (``RunStore.checkpoint_path``)."""
        return self.checkpoints / f"trial-{int(trial_id):06d}.pt"

    def model_checkpoint(self, config_key: str, seed: int, budget_epochs: int) -> Path:
        """Where the trained model of a trial is kept (``--keep-models``)."""
        return self.checkpoints / f"model-{config_key}-s{seed}-e{budget_epochs}.pt"

    def continuation_checkpoint(self, config_key: str, seed: int) -> Path:
        """Where a configuration's training state is kept between Hyperband promotions."""
        return self.checkpoints / f"continue-{config_key}-s{seed}.pt"

    def continuation_checkpoints(self) -> list[Path]:
        """Every continuation checkpoint now in the run, sorted by name."""
        folder = self.checkpoints
        return sorted(folder.glob("continue-*.pt")) if folder.is_dir() else []

    def report_files(self) -> dict[str, Path]:
        """The report's files in this directory, by short name (see :data:`REPORT_FILES`)."""
        return {name: self.root / file for name, file in REPORT_FILES.items()}


def continuation_key(path: str | os.PathLike[str]) -> str | None:
    """The configuration key of a continuation checkpoint's file name, or ``None`` for any other file."""
    match = _CONTINUATION.match(Path(path).name)
    return None if match is None else match.group("key")
