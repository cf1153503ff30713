"""Exporting trials of a real (tiny) search run, and evaluating exported models on a data set."""

from __future__ import annotations

import shutil

import pytest
import torch

from greenshift.config import DSNNConfig
from greenshift.data import load_dataset
from greenshift.errors import ExportError
from greenshift.export import evaluate_exported, export_model, export_trial, load_exported
from greenshift.export.format import read_exported
from greenshift.search import DSNNSearch, SearchSettings
from greenshift.store import RunStore, TrialStatus
from greenshift.train import train, validate


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GREENSHIFT_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("search") / "run"
    settings = SearchSettings(
        dataset="digits",
        backbone="tiny_cnn",
        out=str(out),
        objectives=("loss", "size_bits"),
        trials=3,
        min_epochs=1,
        max_epochs=1,
        keep_models="all",
        device="cpu",
        seed=0,
    )
    result = DSNNSearch(settings).run()
    assert sum(t.status == TrialStatus.OK for t in result.trials) == 3
    return out


@pytest.fixture(scope="module")
def digits(cache):
    return load_dataset("digits")


def _record(run_dir, trial_id):
    with RunStore.open(run_dir) as store:
        return store.trial(trial_id)


def test_export_from_the_kept_checkpoint_scores_like_the_trial(run_dir, digits, tmp_path):
    record = _record(run_dir, 1)
    assert record.checkpoint
    info = export_trial(run_dir, 1, tmp_path / "t1.safetensors")
    assert info.source == "checkpoint" and info.trial_id == 1
    model, meta = load_exported(info.path)
    _, accuracy = validate(model, digits)
    assert accuracy == record.metrics["val_accuracy_per_epoch"][-1]
    assert meta.dataset == "digits" and meta.backbone == "tiny_cnn" and meta.objectives == record.objectives
    assert meta.mean == tuple(digits.mean) and meta.image_size == digits.image_size
    assert meta.provenance["trial_id"] == 1 and meta.provenance["source"] == "checkpoint"
    assert info.size_bytes == info.path.stat().st_size
    assert 0 < info.packed_shift_bytes < info.float_size_bytes  # a tiny model's file is mostly metadata


def test_retraining_a_trial_without_checkpoint_gives_the_same_model(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    record = _record(copy, 3)
    kept = export_trial(copy, 3, tmp_path / "kept.safetensors")
    (copy / record.checkpoint).unlink()
    retrained = export_trial(copy, 3, tmp_path / "retrained.safetensors")
    assert kept.source == "checkpoint" and retrained.source == "retrained"
    _, kept_tensors = read_exported(kept.path)
    _, new_tensors = read_exported(retrained.path)
    assert kept_tensors.keys() == new_tensors.keys()
    assert all(torch.equal(kept_tensors[k], new_tensors[k]) for k in kept_tensors)
    with pytest.raises(ExportError, match="kept no model checkpoint"):
        export_trial(copy, 3, tmp_path / "no.safetensors", retrain_if_missing=False)


def test_unknown_and_failed_trials_list_the_exportable_ones(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    with RunStore.open(copy) as store:
        crashed = store.start_trial({"lr": 0.1}, 1, 0)
        store.finish_trial(crashed, TrialStatus.CRASHED, error="RuntimeError: boom\ntraceback")
    with pytest.raises(ExportError, match=r"no trial 99; exportable trials: 1, 2, 3$"):
        export_trial(copy, 99, tmp_path / "x")
    with pytest.raises(
        ExportError, match=r"status crashed \(RuntimeError: boom\).*exportable trials: 1, 2, 3"
    ):
        export_trial(copy, crashed, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_checkpoint_of_another_configuration_is_refused(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    one, two = _record(copy, 1), _record(copy, 2)
    shutil.copy(copy / two.checkpoint, copy / one.checkpoint)
    with pytest.raises(ExportError, match="another configuration"):
        export_trial(copy, 1, tmp_path / "x")


@pytest.fixture(scope="module")
def narrow_export(digits, tmp_path_factory):
    """A digits model whose shift layers satisfy the 24-bit condition, so float32 equals integer."""
    config = DSNNConfig(
        shift_type="Q",
        weight_bits=3,
        activation_integer_bits=6,
        activation_fraction_bits=6,
        lr=0.1,
        batch_size=32,
        test_batch_size=500,
    )
    result = train(config, digits, 2, backbone="tiny_cnn", seed=0)
    path = tmp_path_factory.mktemp("narrow") / "model.pt"
    export_model(
        result.model,
        backbone="tiny_cnn",
        config=config,
        num_classes=digits.num_classes,
        in_channels=digits.in_channels,
        image_size=digits.image_size,
        mean=digits.mean,
        std=digits.std,
        dataset="digits",
        objectives={"loss": 1.0 - result.final_accuracy},
        out=path,
    )
    return path, result


def test_evaluate_exported_matches_validation_and_the_integer_reference(narrow_export, digits):
    path, result = narrow_export
    float_scores = evaluate_exported(path, "digits")
    assert (
        float_scores["n"] == len(digits.val)
        and float_scores["split"] == "val"
        and not float_scores["integer"]
    )
    assert (float_scores["cross_entropy"], float_scores["accuracy"]) == validate(result.model, digits)
    assert float_scores["accuracy"] > 0.15  # not a constant prediction (chance is 0.1)
    integer_scores = evaluate_exported(path, "digits", integer=True)
    assert integer_scores["integer"] and integer_scores["accuracy"] == float_scores["accuracy"]
    assert integer_scores["cross_entropy"] == float_scores["cross_entropy"]
    test_scores = evaluate_exported(path, "digits", split="test")
    assert test_scores["n"] == len(digits.test) and test_scores["split"] == "test"


def test_evaluate_refuses_a_data_set_of_another_shape(tmp_path, cache):
    config = DSNNConfig()
    from greenshift.train import build_model

    model = build_model(config, "tiny_cnn", 3, 1)
    path = tmp_path / "three.pt"
    export_model(
        model,
        backbone="tiny_cnn",
        config=config,
        num_classes=3,
        in_channels=1,
        image_size=16,
        mean=(0.5,),
        std=(0.2,),
        dataset="toy",
        objectives={},
        out=path,
    )
    with pytest.raises(ExportError, match=r"10 classes.*expects 3"):
        evaluate_exported(path, "digits")
    with pytest.raises(ExportError, match="split"):
        evaluate_exported(path, "digits", split="bogus")
