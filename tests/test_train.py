"""The training loop: hyperparameters reach the model, determinism, resume, divergence, deployed validation."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import greenshift.train.loop as loop
from greenshift.config import DSNNConfig
from greenshift.data import Dataset
from greenshift.data.core import AugmentSpec, ImageSplit, channel_stats
from greenshift.errors import ConfigError, GreenshiftError
from greenshift.shift import ShiftLayer, round_shift_weights
from greenshift.shift.convert import shiftable_layers
from greenshift.train import (
    Lookahead,
    TrainResult,
    build_model,
    cosine_factor,
    load_checkpoint,
    load_model,
    resolve_device,
    save_model,
    train,
    validate,
)

BACKBONE = "tiny_cnn"  # conv, conv, linear: 3 shiftable layers
BASE = DSNNConfig(
    optimizer="sgd",
    lr=0.05,
    momentum=0.9,
    weight_decay=1e-4,
    batch_size=32,
    test_batch_size=16,
    shift_depth=None,
    shift_type="Q",
    weight_bits=5,
    rounding="deterministic",
    activation_integer_bits=16,
    activation_fraction_bits=16,
)


def _split(n: int, generator: torch.Generator) -> ImageSplit:
    """Noise images with horizontal stripes, vertical stripes or nothing: learnable despite crop and flip."""
    labels = torch.arange(n) % 3
    images = torch.randint(0, 80, (n, 1, 8, 8), generator=generator)
    images[labels == 0, :, ::2, :] += 150
    images[labels == 1, :, :, ::2] += 150
    return ImageSplit(images.to(torch.uint8), labels.to(torch.int64))


def toy_dataset(augment: AugmentSpec | None = None) -> Dataset:
    """96 training and 48 validation images of 1x8x8 in 3 classes."""
    generator = torch.Generator().manual_seed(123)
    train_split, val_split = _split(96, generator), _split(48, generator)
    mean, std = channel_stats(train_split.images)
    return Dataset(
        name="toy",
        classes=["a", "b", "c"],
        train=train_split,
        val=val_split,
        test=None,
        mean=mean,
        std=std,
        augment=augment if augment is not None else AugmentSpec(crop_padding=1, horizontal_flip=True),
    )


@pytest.fixture(scope="module")
def data() -> Dataset:
    return toy_dataset()


def _run(config: DSNNConfig, data: Dataset, epochs: int = 2, **kwargs) -> TrainResult:
    return train(config, data, epochs, backbone=BACKBONE, **kwargs)


def _states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _val_logits(model: torch.nn.Module, data: Dataset) -> torch.Tensor:
    images, _ = next(data.batches("val", 48, shuffle=False))
    with torch.no_grad():
        return model.eval()(images)


# --- every hyperparameter reaches what is trained -------------------------------------------------

CHANGES = [
    ("optimizer", "adam"),
    ("lr", 0.01),
    ("momentum", 0.5),
    ("weight_decay", 0.05),
    ("batch_size", 16),
    ("shift_depth", 1),
    ("shift_type", "PS"),
    ("weight_bits", 3),
    ("rounding", "stochastic"),
    ("activation_integer_bits", 2),
    ("activation_fraction_bits", 2),
]


@pytest.fixture(scope="module")
def base_logits(data: Dataset) -> torch.Tensor:
    return _val_logits(_run(BASE, data).model, data)


@pytest.mark.parametrize(("name", "value"), CHANGES, ids=[c[0] for c in CHANGES])
def test_each_hyperparameter_changes_the_trained_model(name, value, data, base_logits) -> None:
    changed = _run(BASE.replace(**{name: value}), data)
    assert not torch.equal(_val_logits(changed.model, data), base_logits)


def test_every_config_field_is_covered() -> None:
    from dataclasses import fields

    covered = {name for name, _ in CHANGES} | {"test_batch_size"}
    assert covered == {f.name for f in fields(DSNNConfig)}


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam", "ranger"])
def test_optimizer_settings_reach_the_optimizer_used(optimizer, data, monkeypatch) -> None:
    built: list[torch.optim.Optimizer] = []
    original = loop.make_optimizer

    def spy(config, params):
        built.append(original(config, params))
        return built[-1]

    monkeypatch.setattr(loop, "make_optimizer", spy)
    config = BASE.replace(optimizer=optimizer, lr=0.02, momentum=0.6, weight_decay=0.003)
    result = _run(config, data, epochs=1)
    (used,) = built
    inner = used.base if isinstance(used, Lookahead) else used
    assert isinstance(used, Lookahead) == (optimizer == "ranger")
    assert type(inner).__name__.lower() == {"ranger": "radam"}.get(optimizer, optimizer)
    group = used.param_groups[0]
    assert group["initial_lr"] == 0.02
    assert group["weight_decay"] == 0.003
    assert inner.param_groups[0].get("momentum") == (0.6 if config.uses_momentum else None)
    # The optimiser updates exactly the trained model's parameters.
    assert {id(p) for g in used.param_groups for p in g["params"]} == {
        id(p) for p in result.model.parameters()
    }


def test_batch_sizes_reach_the_loop_and_validation(data, monkeypatch) -> None:
    calls: list[tuple[str, int, bool, bool, bool, list[int]]] = []
    original = Dataset.batches

    def spy(self, split, batch_size, *, shuffle, augment=False, generator=None, drop_last=False):
        sizes: list[int] = []
        calls.append((split, batch_size, shuffle, augment, generator is not None, sizes))
        for images, labels in original(
            self,
            split,
            batch_size,
            shuffle=shuffle,
            augment=augment,
            generator=generator,
            drop_last=drop_last,
        ):
            sizes.append(int(labels.shape[0]))
            yield images, labels

    monkeypatch.setattr(Dataset, "batches", spy)
    _run(BASE.replace(batch_size=40, test_batch_size=20), data, epochs=2)
    train_calls = [c for c in calls if c[0] == "train"]
    val_calls = [c for c in calls if c[0] == "val"]
    assert len(train_calls) == len(val_calls) == 2
    for _, size, shuffle, augment, seeded, seen in train_calls:
        assert (size, shuffle, augment, seeded) == (40, True, True, True)
        assert seen == [40, 40, 16]
    for _, size, shuffle, augment, _, seen in val_calls:
        assert (size, shuffle, augment) == (20, False, False)
        assert seen == [20, 20, 8]


@pytest.mark.parametrize(
    ("shift_type", "bits", "rounding", "int_bits", "frac_bits"),
    [("Q", 4, "stochastic", 8, 6), ("PS", 6, "deterministic", 3, 10)],
)
def test_shift_settings_reach_every_shift_layer(shift_type, bits, rounding, int_bits, frac_bits) -> None:
    config = BASE.replace(
        shift_type=shift_type,
        weight_bits=bits,
        rounding=rounding,
        activation_integer_bits=int_bits,
        activation_fraction_bits=frac_bits,
    )
    model = build_model(config, BACKBONE, num_classes=3, in_channels=1)
    layers = [m for m in model.modules() if isinstance(m, ShiftLayer)]
    assert len(layers) == 3  # shift_depth=None: all of them
    for layer in layers:
        assert (layer.shift_type, layer.weight_bits, layer.rounding) == (shift_type, bits, rounding)
        assert (layer.act_integer_bits, layer.act_fraction_bits) == (int_bits, frac_bits)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_shift_depth_converts_the_last_layers(depth, data) -> None:
    result = _run(BASE.replace(shift_depth=depth), data, epochs=1)
    shifted = [isinstance(m, ShiftLayer) for _, m in shiftable_layers(result.model)]
    assert shifted == [False] * (3 - depth) + [True] * depth
    assert result.shift_depth == depth


def test_shift_depth_none_resolves_to_all_layers_of_resnet20() -> None:
    model = build_model(BASE, "resnet20", num_classes=10, in_channels=3)
    assert sum(isinstance(m, ShiftLayer) for m in model.modules()) == 20
    assert loop.resolve_shift_depth(BASE, model) == 20


def test_rounding_is_stochastic_only_while_training(data) -> None:
    model = build_model(BASE.replace(rounding="stochastic", weight_bits=3), BACKBONE, 3, 1)
    images, _ = next(data.batches("val", 48, shuffle=False))
    with torch.no_grad():
        model.train()
        torch.manual_seed(0)
        first = model.features[0](images)
        second = model.features[0](images)
        model.eval()
        evals = [model.features[0](images) for _ in range(2)]
    assert not torch.equal(first, second)
    assert torch.equal(*evals)


# --- schedule, determinism, resume ----------------------------------------------------------------


def test_progress_reports_cosine_learning_rates(data) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    result = _run(BASE, data, epochs=3, schedule_epochs=5, progress=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert all(set(m) == {"train_cross_entropy", "val_cross_entropy", "val_accuracy", "lr"} for _, m in seen)
    assert [m["lr"] for _, m in seen] == pytest.approx([BASE.lr * cosine_factor(e, 5) for e in range(3)])
    assert seen[0][1]["lr"] == BASE.lr
    assert [m["val_accuracy"] for _, m in seen] == result.val_accuracy
    assert [m["train_cross_entropy"] for _, m in seen] == result.train_cross_entropy
    assert cosine_factor(0, 4) == 1.0 and cosine_factor(2, 4) == pytest.approx(0.5)


def test_same_seed_is_deterministic_and_seed_matters(data) -> None:
    config = BASE.replace(rounding="stochastic")
    a, b, c = (_run(config, data, seed=s) for s in (7, 7, 8))
    assert a.val_accuracy == b.val_accuracy and a.train_cross_entropy == b.train_cross_entropy
    assert _states_equal(a.model, b.model)
    assert not _states_equal(a.model, c.model)


def test_result_depends_on_seed_not_on_global_rng(data) -> None:
    torch.manual_seed(1)
    a = _run(BASE, data, epochs=1, seed=11)
    torch.manual_seed(2)
    b = _run(BASE, data, epochs=1, seed=11)
    assert _states_equal(a.model, b.model)


def test_train_leaves_global_torch_state_alone(data) -> None:
    torch.manual_seed(99)
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    _run(BASE, data, epochs=1, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == threads


def test_data_moves_to_the_device_once(data, monkeypatch) -> None:
    moves: list[str] = []
    original = Dataset.to

    def spy(self, device):
        moves.append(str(device))
        return original(self, device)

    monkeypatch.setattr(Dataset, "to", spy)
    _run(BASE, data, epochs=2)
    assert moves == ["cpu"]


@pytest.mark.parametrize(
    "config",
    [BASE, BASE.replace(optimizer="ranger", lr=0.01, rounding="stochastic", shift_type="PS")],
    ids=["sgd", "ranger-stochastic-ps"],
)
def test_resume_is_bit_identical_to_straight_training(config, data, tmp_path: Path) -> None:
    straight = _run(config, data, epochs=4)
    ckpt = tmp_path / "run" / "ckpt.pt"
    first = _run(config, data, epochs=2, schedule_epochs=4, checkpoint_path=ckpt)
    assert first.epochs_completed == 2
    assert load_checkpoint(ckpt)["epoch"] == 2
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ckpt.pt"]  # atomic: no temporary left
    # A different seed must not matter: the checkpoint's RNG states win.
    resumed = _run(config, data, epochs=4, seed=5, resume_from=ckpt, checkpoint_path=ckpt)
    assert resumed.epochs_completed == 4
    assert _states_equal(resumed.model, straight.model)
    assert resumed.val_accuracy == straight.val_accuracy
    assert resumed.val_cross_entropy == straight.val_cross_entropy
    assert resumed.train_cross_entropy == straight.train_cross_entropy
    assert first.val_accuracy == straight.val_accuracy[:2]
    assert load_checkpoint(ckpt)["epoch"] == 4


def test_resume_with_nothing_left_returns_checkpointed_model(data, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    first = _run(BASE, data, epochs=2, checkpoint_path=ckpt)
    again = _run(BASE, data, epochs=2, resume_from=ckpt)
    assert again.epochs_completed == 2 and again.val_accuracy == first.val_accuracy
    assert _states_equal(again.model, first.model)


def test_resume_refuses_another_run(data, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt.pt"
    _run(BASE, data, epochs=2, schedule_epochs=3, checkpoint_path=ckpt)
    with pytest.raises(ConfigError, match="another configuration"):
        _run(BASE.replace(lr=0.2), data, epochs=3, resume_from=ckpt)
    with pytest.raises(ConfigError, match="3-epoch schedule"):
        _run(BASE, data, epochs=4, resume_from=ckpt)
    with pytest.raises(ConfigError, match="backbone"):
        train(BASE, data, 3, backbone="small_cnn", resume_from=ckpt)
    with pytest.raises(ConfigError, match="already holds 2 epochs"):
        _run(BASE, data, epochs=1, schedule_epochs=3, resume_from=ckpt)


def test_unreadable_resume_files_are_config_errors(data, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        _run(BASE, data, resume_from=tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ConfigError, match="corrupt"):
        _run(BASE, data, resume_from=garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ConfigError, match="not a greenshift training checkpoint"):
        _run(BASE, data, resume_from=other)
    truncated = tmp_path / "truncated.pt"
    _run(BASE, data, epochs=1, schedule_epochs=2, checkpoint_path=truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ConfigError, match="corrupt"):
        _run(BASE, data, resume_from=truncated)


# --- divergence ------------------------------------------------------------------------------------


def test_nan_loss_stops_with_diverged_status(data, monkeypatch) -> None:
    original = Dataset.batches
    train_calls = []

    def poisoned(self, split, batch_size, **kwargs):
        if split == "train":
            train_calls.append(1)
        for index, (images, labels) in enumerate(original(self, split, batch_size, **kwargs)):
            if split == "train" and len(train_calls) == 2 and index == 1:
                images = torch.full_like(images, math.nan)
            yield images, labels

    monkeypatch.setattr(Dataset, "batches", poisoned)
    result = _run(BASE, data, epochs=3)
    monkeypatch.setattr(Dataset, "batches", original)
    assert result.status == "diverged"
    assert result.epochs_completed == 1 and len(result.val_accuracy) == 1
    assert "epoch 2" in result.message and "nan" in result.message
    # The model is the one of the last good epoch, matching the histories.
    one_epoch = _run(BASE, data, epochs=1, schedule_epochs=3)
    assert _states_equal(result.model, one_epoch.model)
    assert validate(result.model, data, batch_size=16) == (result.final_cross_entropy, result.final_accuracy)
    assert not result.model.training


@pytest.mark.parametrize("shift_type", ["Q", "PS"])
def test_huge_learning_rate_diverges_without_raising(shift_type, data) -> None:
    result = _run(BASE.replace(lr=1e30, shift_type=shift_type), data, epochs=2)
    assert result.status == "diverged"
    assert "nan" in result.message and "initial model" in result.message
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def test_divergence_in_first_epoch_gives_nan_metrics(data, monkeypatch) -> None:
    original = Dataset.batches

    def poisoned(self, split, batch_size, **kwargs):
        for images, labels in original(self, split, batch_size, **kwargs):
            yield (torch.full_like(images, math.nan) if split == "train" else images), labels

    monkeypatch.setattr(Dataset, "batches", poisoned)
    result = _run(BASE, data, epochs=2)
    assert result.status == "diverged" and result.epochs_completed == 0
    assert math.isnan(result.final_accuracy) and math.isnan(result.final_cross_entropy)


# --- validation scores the deployed model -----------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "epochs"),
    [
        (BASE.replace(weight_bits=4, activation_fraction_bits=8), 3),
        # PS learns slowly with SGD on this toy task; Adam gets it off chance within a few epochs.
        (BASE.replace(shift_type="PS", optimizer="adam", lr=0.1, activation_fraction_bits=8), 4),
    ],
    ids=["Q", "PS"],
)
def test_saved_and_reloaded_model_validates_identically(config, epochs, data, tmp_path: Path) -> None:
    result = _run(config, data, epochs=epochs)
    assert result.status == "ok"
    assert result.final_accuracy > 0.5  # learned something, so the comparison is meaningful
    assert not result.model.training
    # The last validation during training already scored the deployed (rounded) network.
    assert validate(result.model, data, batch_size=16) == (result.final_cross_entropy, result.final_accuracy)

    # The returned model already holds its rounded weights: rounding again changes nothing.
    before = {k: v.clone() for k, v in result.model.state_dict().items()}
    round_shift_weights(result.model)
    assert all(torch.equal(before[k], v) for k, v in result.model.state_dict().items())
    torch.save(result.model.state_dict(), tmp_path / "plain.pt")
    fresh = build_model(config, BACKBONE, data.num_classes, data.in_channels)
    fresh.load_state_dict(torch.load(tmp_path / "plain.pt", weights_only=True))
    assert validate(fresh, data, batch_size=16) == (result.final_cross_entropy, result.final_accuracy)

    save_model(result.model, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", config, BACKBONE, data.num_classes, data.in_channels)
    assert not loaded.training
    assert validate(loaded, data, batch_size=7) == pytest.approx(
        (result.final_cross_entropy, result.final_accuracy)
    )
    assert validate(loaded, data, batch_size=7)[1] == result.final_accuracy


def test_load_model_rejects_mismatches(data, tmp_path: Path) -> None:
    model = build_model(BASE, BACKBONE, 3, 1)
    save_model(model, tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="does not match"):
        load_model(tmp_path / "m.pt", BASE.replace(shift_type="PS"), BACKBONE, 3, 1)
    with pytest.raises(ConfigError, match="does not exist"):
        load_model(tmp_path / "nope.pt", BASE, BACKBONE, 3, 1)


def test_validate_matches_a_manual_eval_pass_and_restores_mode(data) -> None:
    torch.manual_seed(4)
    model = build_model(BASE, BACKBONE, 3, 1).train()
    images = (data.val.images.float() / 255 - data.mean[0]) / data.std[0]
    with torch.no_grad():
        logits = model.eval()(images)
    model.train()
    loss, accuracy = validate(model, data, batch_size=11)
    assert model.training
    assert loss == pytest.approx(F.cross_entropy(logits, data.val.labels).item(), rel=1e-5)
    assert accuracy == int((logits.argmax(1) == data.val.labels).sum()) / 48
    assert validate(model, data, split="train", batch_size=1000)[1] >= 0.0


# --- devices and user errors -----------------------------------------------------------------------


def test_resolve_device(monkeypatch) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")
    for name in ("cuda", "cuda:0"):
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device(name)
    for name in ("tpu", "cuda:x", ""):
        with pytest.raises(ConfigError, match="not one of"):
            resolve_device(name)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("CUDA:0") == torch.device("cuda:0")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_device("cuda:1")


def test_user_errors_are_one_sentence_greenshift_errors(data) -> None:
    cases = [
        (lambda: train(BASE, data, 1, backbone="resnet999"), "unknown model"),
        (lambda: _run(BASE.replace(shift_depth=4), data), "exceeds the 3 shiftable layers"),
        (lambda: _run(BASE, data, epochs=0), "epochs"),
        (lambda: _run(BASE, data, epochs=3, schedule_epochs=2), "schedule_epochs"),
        (lambda: _run(BASE, data, device="quantum"), "device"),
    ]
    for call, fragment in cases:
        with pytest.raises(GreenshiftError, match=fragment) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_runs_and_returns_a_cuda_model(data) -> None:
    result = _run(BASE, data, epochs=2, device="cuda")
    assert result.status == "ok"
    assert next(result.model.parameters()).device.type == "cuda"
    assert validate(result.model, data.to("cuda"), batch_size=16) == (
        result.final_cross_entropy,
        result.final_accuracy,
    )


@pytest.mark.parametrize("channels_last", [None, True, False])
def test_cpu_training_runs_channels_last_by_default_and_returns_a_contiguous_model(
    channels_last, data, monkeypatch
) -> None:
    import greenshift.shift.layers as shift_layers

    layouts: list[bool] = []  # per shift convolution in training: was its input channels-last?
    input_buffer = shift_layers._input_buffer  # the training path's buffer for the rounded input

    def recording(layer: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        layouts.append(not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last))
        buffer, owned = input_buffer(layer, x)
        assert buffer.stride() == x.stride()
        return buffer, owned

    monkeypatch.setattr(shift_layers, "_input_buffer", recording)
    # tiny_resnet: 7 convolutions. With one input channel the first two layers' tensors are both
    # contiguous and channels-last; from the second convolution's output on the layout is unambiguous.
    result = train(BASE, data, 1, "cpu", seed=0, backbone="tiny_resnet", channels_last=channels_last)
    steps = len(layouts) // 7
    assert steps == math.ceil(96 / BASE.batch_size), "every convolution of every step is recorded"
    per_layer = [layouts[layer::7] for layer in range(7)]
    expected = channels_last is not False
    assert per_layer[2:] == [[expected] * steps] * 5
    for param in result.model.parameters():
        assert param.is_contiguous()
    same = train(BASE, data, 1, "cpu", seed=0, backbone="tiny_resnet", channels_last=channels_last)
    assert torch.equal(
        torch.cat([p.flatten() for p in result.model.parameters()]),
        torch.cat([p.flatten() for p in same.model.parameters()]),
    )
