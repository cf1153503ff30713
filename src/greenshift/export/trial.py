"""Export one trial of a search run: from its kept model checkpoint, or by retraining it exactly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from greenshift.config import DSNNConfig, config_from_values
from greenshift.data import Dataset, load_dataset
from greenshift.errors import ExportError, GreenshiftError, StoreError
from greenshift.export.format import ExportInfo, export_model
from greenshift.store import RunStore, TrialRecord, TrialStatus, load_trial_model
from greenshift.train import train

_LISTED = 20


def _available(records: list[TrialRecord]) -> str:
    """Human list of the exportable (ok) trial ids, shortened for long runs."""
    ids = [r.trial_id for r in records if r.status is TrialStatus.OK]
    if not ids:
        return "this run has no successful trial to export"
    shown = ", ".join(str(i) for i in ids[:_LISTED])
    more = f" and {len(ids) - _LISTED} more" if len(ids) > _LISTED else ""
    return f"exportable trials: {shown}{more}"


def _select(store: RunStore, trial_id: int) -> TrialRecord:
    records = store.trials()
    record = next((r for r in records if r.trial_id == trial_id), None)
    if record is None:
        raise ExportError(f"run {store.run_dir} has no trial {trial_id}; {_available(records)}")
    if record.status is not TrialStatus.OK:
        reason = f" ({record.error.splitlines()[0]})" if record.error else ""
        raise ExportError(
            f"trial {trial_id} has status {record.status.value}{reason} and cannot be exported; {_available(records)}"
        )
    return record


def _from_checkpoint(
    path: Path, config: DSNNConfig, backbone: str, dataset: Dataset, trial_id: int
) -> nn.Module:
    """The model kept by the search for this trial; a foreign or damaged file is an ExportError."""
    try:
        return load_trial_model(
            path,
            num_classes=dataset.num_classes,
            in_channels=dataset.in_channels,
            config=config,
            backbone=backbone,
        )
    except StoreError as exc:
        raise ExportError(f"trial {trial_id}: {exc}; delete it to retrain") from None


def _retrain(
    record: TrialRecord, config: DSNNConfig, identity: dict[str, Any], dataset: Dataset, device: str
) -> nn.Module:
    """Train the configuration again exactly as the trial did: same budget, seed and LR schedule."""
    budget = int(record.budget_epochs)
    # A run that continues promoted trials trains every budget on the max-epochs cosine schedule.
    schedule = int(identity["max_epochs"]) if identity.get("continue_promoted") else budget
    result = train(
        config,
        dataset,
        budget,
        device=device,
        seed=record.seed,
        backbone=identity["backbone"],
        schedule_epochs=schedule,
    )
    if result.status != "ok":
        raise ExportError(f"retraining trial {record.trial_id} failed: {result.message}")
    return result.model.cpu().eval()


def export_trial(
    run_dir: str | os.PathLike[str],
    trial_id: int,
    out: str | os.PathLike[str],
    *,
    retrain_if_missing: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> ExportInfo:
    """Export trial ``trial_id`` of the search run in ``run_dir`` to ``out``.

    Uses the model the search kept (``source="checkpoint"``); without one, retrains the configuration at
    the trial's budget with its seed (``source="retrained"``, bit-identical on the CPU) unless
    ``retrain_if_missing`` is false. Data set, image size and split seed come from the run's identity
    (``data_dir`` defaults to the one the search used). An unknown or unsuccessful trial is an
    :class:`ExportError` that lists the exportable trials.
    """
    store = RunStore.open(run_dir)
    try:
        record = _select(store, int(trial_id))
        identity = dict(store.identity)
        settings = (store.info or {}).get("settings") or {}
        checkpoint = store.checkpoint_file(record)  # refuses a path that leads out of the run
    finally:
        store.close()
    backbone = identity["backbone"]
    try:
        config = config_from_values(record.config, identity.get("fixed") or {})
    except GreenshiftError as exc:
        raise ExportError(f"trial {trial_id}'s configuration is not valid here: {exc}") from None
    if data_dir is None:
        data_dir = settings.get("data_dir")
    dataset = load_dataset(
        identity["dataset"],
        data_dir=data_dir,
        image_size=identity.get("image_size"),
        split_seed=int(identity.get("split_seed") or 0),
    )

    if checkpoint is not None and checkpoint.is_file():
        model, source = _from_checkpoint(checkpoint, config, backbone, dataset, record.trial_id), "checkpoint"
    elif retrain_if_missing:
        model, source = _retrain(record, config, identity, dataset, device), "retrained"
    else:
        raise ExportError(
            f"trial {trial_id} kept no model checkpoint; allow retraining to export it "
            f"({record.budget_epochs:g} epochs, seed {record.seed})"
        )
    return export_model(
        model,
        backbone=backbone,
        config=config,
        num_classes=dataset.num_classes,
        in_channels=dataset.in_channels,
        image_size=dataset.image_size,
        mean=dataset.mean,
        std=dataset.std,
        dataset=identity["dataset"],
        objectives=record.objectives,
        out=out,
        split_seed=int(identity.get("split_seed") or 0),
        provenance={
            "source": source,
            "run_dir": str(Path(run_dir).resolve()),
            "trial_id": record.trial_id,
            "budget_epochs": record.budget_epochs,
            "seed": record.seed,
            "config_key": record.config_key,
            # `greenshift evaluate model.pt` reads the data set from here by default.
            "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        },
        source=source,
    )
