"""The Python API in one object: a search run, opened by name like an Optuna study.

``greenshift.search(...)`` runs (or resumes) a search and returns its :class:`Run`;
``greenshift.open_run(path)`` opens a finished or interrupted one. A :class:`Run` reads the run
directory through the store each time it is asked, so it always shows what is on disk:

    run = greenshift.search("digits", "resnet20", "runs/demo", preset="demo")
    run.front()                   # the Pareto front (seeds averaged), one entry per configuration
    run.default()                 # the default DSNN configuration's entry
    run.trials()                  # every trial record
    run.report()                  # headline figures, hypervolume, importance (reads only)
    run.export(run.front()[0].trial_id, "model.pt")   # a real shift network (or "model.onnx")
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from greenshift.errors import StoreError
from greenshift.store import RunLayout, RunStore, TrialRecord, TrialStatus, run_default, run_front
from greenshift.store.front import FrontEntry


class Run:
    """A search run directory: its trials, front, default configuration, report and exports."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not RunLayout(self.path).db.is_file():
            raise StoreError(f"{self.path} is not a greenshift run (no {RunLayout(self.path).db.name})")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def settings(self) -> dict[str, Any]:
        """What identifies the run: data set, backbone, objectives, budgets, optimiser, seed, space."""
        with RunStore.open(self.path) as store:
            return dict(store.identity)

    @property
    def objectives(self) -> tuple[str, ...]:
        """The objectives the run minimised, in order."""
        return tuple(self.settings["objectives"])

    def trials(self, status: TrialStatus | str | None = None) -> list[TrialRecord]:
        """Every trial in the order it started; only those with ``status`` when given."""
        with RunStore.open(self.path) as store:
            return store.trials(None if status is None else TrialStatus(status))

    def front(self) -> tuple[FrontEntry, ...]:
        """The Pareto front at the full budget (:func:`greenshift.store.run_front`)."""
        settings = self.settings
        return run_front(self.trials(), tuple(settings["objectives"]), float(settings["max_epochs"]))

    def default(self) -> FrontEntry | None:
        """The default DSNN configuration at the full budget (seeds averaged); ``None`` until it finished."""
        settings = self.settings
        return run_default(self.trials(), tuple(settings["objectives"]), float(settings["max_epochs"]))

    def report(self, *, write_to: str | os.PathLike[str] | None = None) -> Any:
        """The run's :class:`~greenshift.report.data.ReportData` (reads only; measures nothing).

        With ``write_to`` the report's files (HTML, PNG, CSV, JSON) are written there as well.
        """
        from greenshift.report import load_report, write_report

        report = load_report(self.path)
        if write_to is not None:
            write_report(report, write_to)
        return report

    def export(self, trial_id: int, out: str | os.PathLike[str], **options: Any) -> Any:
        """Export trial ``trial_id`` as a shift network: ``.onnx`` files as ONNX, anything else in
        greenshift's packed format. ``options`` go to :func:`greenshift.export.export_trial`
        (``retrain_if_missing``, ``data_dir``, ``device``). Returns the export's info."""
        from greenshift.export import export_trial, export_trial_onnx

        if Path(out).suffix == ".onnx":
            onnx_info, _ = export_trial_onnx(self.path, trial_id, out, **options)
            return onnx_info
        return export_trial(self.path, trial_id, out, **options)


def open_run(path: str | os.PathLike[str]) -> Run:
    """Open the search run in ``path`` (finished, interrupted or running); a StoreError if there is none."""
    return Run(path)


def search(
    dataset: str | None = None,
    backbone: str | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    preset: str | None = None,
    config_file: str | os.PathLike[str] | None = None,
    progress: Any = None,
    **settings: Any,
) -> Run:
    """Run (or resume) a search and return its :class:`Run`.

    Settings merge as on the command line: keyword ``settings`` (fields of
    :class:`~greenshift.search.SearchSettings`, e.g. ``trials=20, max_epochs=9``) > ``config_file`` >
    ``preset`` > defaults. A search with the same ``out`` resumes where it stopped. ``progress`` is a
    :class:`~greenshift.search.SearchProgress` (default: silent).
    """
    from greenshift.search import DSNNSearch, resolve_search_settings

    given: Mapping[str, Any] = {
        "dataset": dataset,
        "backbone": backbone,
        "out": None if out is None else str(out),
    }
    overrides = {**{k: v for k, v in given.items() if v is not None}, **settings}
    resolved = resolve_search_settings(preset=preset, config_file=config_file, overrides=overrides)
    DSNNSearch(resolved, progress=progress).run()
    return Run(resolved.out)


__all__ = ["Run", "open_run", "search"]
