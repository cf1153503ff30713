"""The search with real training and evaluation on the embedded digits data (tiny backbone)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from greenshift.search import DSNNSearch, SearchSettings
from greenshift.search.facade import FINAL_STATUSES
from greenshift.store import TrialStatus
from greenshift.store.front import front_trial_ids

pytestmark = pytest.mark.slow


def settings(out: Path, **overrides) -> SearchSettings:
    values = dict(
        dataset="digits",
        backbone="tiny_cnn",
        out=str(out),
        trials=6,
        min_epochs=1,
        max_epochs=3,
        seed=0,
        device="cpu",
        fixed={"batch_size": "64"},
    )
    values.update(overrides)
    return SearchSettings(**values)


def test_real_search_records_objectives_and_keeps_front_models(tmp_path):
    result = DSNNSearch(settings(tmp_path / "run")).run()
    done = [t for t in result.trials if t.status in FINAL_STATUSES]
    assert len(done) == 6
    ok = [t for t in done if t.status == TrialStatus.OK]
    assert ok, [t.error for t in done]
    for trial in ok:
        assert 0.0 <= trial.objectives["loss"] <= 1.0
        assert trial.objectives["energy_model_j"] > 0
        assert abs(trial.metrics["accuracy"] - (1 - trial.objectives["loss"])) < 1e-9
        assert len(trial.metrics["val_accuracy_per_epoch"]) == trial.budget_epochs
    # --keep-models pareto: the front (and the default) keep a loadable model, nobody else does
    kept = {t.trial_id for t in result.trials if t.checkpoint}
    front = front_trial_ids(result.pareto)  # every seed of a front configuration keeps its model
    assert front <= kept
    assert kept <= front | {t.trial_id for t in result.trials if t.is_default}
    for trial in result.trials:
        if trial.checkpoint:
            payload = torch.load(Path(result.run_dir) / trial.checkpoint, weights_only=True)
            assert payload["config"] == {**trial.config, **payload["config"]}
    assert not list((Path(result.run_dir) / "checkpoints").glob("continue-*"))


def test_continue_promoted_trains_only_the_extra_epochs(tmp_path):
    result = DSNNSearch(
        settings(tmp_path / "run", trials=8, continue_promoted=True, keep_models="none")
    ).run()
    by_config: dict[str, list] = {}
    for trial in result.trials:
        if trial.status == TrialStatus.OK and not trial.is_default:
            by_config.setdefault(trial.config_key, []).append(trial)
    promoted = [sorted(ts, key=lambda t: t.budget_epochs) for ts in by_config.values() if len(ts) > 1]
    assert promoted, "Hyperband promoted no configuration"
    for chain in promoted:
        for lower, higher in itertools.pairwise(chain):
            assert higher.metrics["continued_from_epoch"] == lower.budget_epochs
            assert higher.metrics["epochs_trained"] == higher.budget_epochs - lower.budget_epochs
            # the continued run's history starts with the lower budget's history
            assert higher.metrics["val_accuracy_per_epoch"][: int(lower.budget_epochs)] == pytest.approx(
                lower.metrics["val_accuracy_per_epoch"]
            )
    assert not list((Path(result.run_dir) / "checkpoints").glob("continue-*")), (
        "continuations must be cleaned up"
    )


def test_trial_timeout_is_recorded_as_timeout(tmp_path):
    result = DSNNSearch(settings(tmp_path / "run", trials=2, trial_timeout_s=1e-3, max_epochs=2)).run()
    statuses = {t.status for t in result.trials if t.status in FINAL_STATUSES}
    assert statuses == {TrialStatus.TIMEOUT}
    assert all("trial-timeout" in t.error for t in result.trials if t.status == TrialStatus.TIMEOUT)
