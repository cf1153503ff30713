"""Splits, statistics, batching and batched augmentation of tensor-resident images."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from greenshift.data import Dataset
from greenshift.data.core import (
    AugmentSpec,
    ImageSplit,
    augment_batch,
    channel_stats,
    iterate_batches,
    stratified_split,
)
from greenshift.errors import ConfigError


def _split(n: int = 10, channels: int = 3, size: int = 4) -> ImageSplit:
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8)
    return ImageSplit(images, torch.arange(n, dtype=torch.int64) % 3)


def _dataset() -> Dataset:
    return Dataset(
        name="toy",
        classes=["a", "b", "c"],
        train=_split(10),
        val=_split(4),
        test=None,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        augment=AugmentSpec(crop_padding=1, horizontal_flip=True),
    )


def test_image_split_validates_dtypes_and_lengths() -> None:
    with pytest.raises(ValueError, match="uint8"):
        ImageSplit(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="int64"):
        ImageSplit(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(ValueError, match="labels"):
        ImageSplit(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))
    split = _split(5)
    assert len(split) == 5
    moved = split.to("cpu")
    assert torch.equal(moved.images, split.images) and moved.device.type == "cpu"


def test_dataset_properties_and_split_lookup() -> None:
    data = _dataset()
    assert (data.num_classes, data.in_channels, data.image_size) == (3, 3, 4)
    assert data.to("cpu").train.images.shape == data.train.images.shape
    with pytest.raises(ConfigError, match="no test split"):
        data.split("test")
    with pytest.raises(ConfigError, match="unknown split"):
        list(data.batches("training", 4, shuffle=False))


def test_augment_spec_rejects_negative_padding() -> None:
    with pytest.raises(ConfigError, match="crop_padding"):
        AugmentSpec(crop_padding=-1)


def test_identity_augmentation_changes_nothing() -> None:
    images = torch.randint(0, 256, (7, 3, 5, 5), dtype=torch.uint8)
    assert AugmentSpec().is_identity
    assert torch.equal(augment_batch(images, AugmentSpec()), images)


def test_crop_is_a_window_of_the_zero_padded_image_within_the_padding() -> None:
    pad, size = 2, 6
    images = torch.randint(1, 256, (64, 2, size, size), dtype=torch.uint8)
    out = augment_batch(images, AugmentSpec(crop_padding=pad), generator=torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (pad, pad, pad, pad))
    offsets = set()
    for i in range(images.shape[0]):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + size, dx : dx + size])
        ]
        assert matches, f"sample {i} is not a shifted window of its padded image"
        offsets.add(matches[0])
    # With 64 samples and 25 possible shifts, the crop must actually move content around.
    assert len(offsets) > 5


def test_flip_mirrors_exactly_the_masked_samples() -> None:
    images = torch.randint(0, 256, (200, 3, 4, 5), dtype=torch.uint8)
    out = augment_batch(images, AugmentSpec(horizontal_flip=True), generator=torch.Generator().manual_seed(2))
    flipped = [torch.equal(out[i], images[i].flip(2)) for i in range(200)]
    unchanged = [torch.equal(out[i], images[i]) for i in range(200)]
    assert all(f or u for f, u in zip(flipped, unchanged, strict=True))
    assert 60 < sum(flipped) < 140


def test_augmentation_is_deterministic_given_a_seeded_generator() -> None:
    images = torch.randint(0, 256, (32, 1, 8, 8), dtype=torch.uint8)
    spec = AugmentSpec(crop_padding=3, horizontal_flip=True)
    first = augment_batch(images, spec, generator=torch.Generator().manual_seed(5))
    second = augment_batch(images, spec, generator=torch.Generator().manual_seed(5))
    other = augment_batch(images, spec, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_batches_are_normalised_float_and_cover_the_split_once() -> None:
    split = _split(10)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    batches = list(iterate_batches(split, 4, mean=mean, std=std, shuffle=False))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x = torch.cat([b for b, _ in batches])
    assert x.dtype == torch.float32 and batches[0][1].dtype == torch.int64
    expected = (split.images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in batches]), split.labels)
    assert [
        len(y) for _, y in iterate_batches(split, 4, mean=mean, std=std, shuffle=False, drop_last=True)
    ] == [4, 4]


def test_shuffled_batches_are_a_permutation_reproducible_with_a_generator() -> None:
    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1).expand(50, 1, 2, 2).contiguous()
    split = ImageSplit(images, torch.arange(50, dtype=torch.int64))

    def order(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat(
            [y for _, y in iterate_batches(split, 8, mean=(0.0,), std=(1.0,), shuffle=True, generator=gen)]
        )

    first = order(3)
    assert torch.equal(first, order(3))
    assert not torch.equal(first, order(4))
    assert torch.equal(first.sort().values, torch.arange(50))
    # A new permutation on every call with the same (advancing) generator.
    gen = torch.Generator().manual_seed(3)
    one = torch.cat(
        [y for _, y in iterate_batches(split, 50, mean=(0.0,), std=(1.0,), shuffle=True, generator=gen)]
    )
    two = torch.cat(
        [y for _, y in iterate_batches(split, 50, mean=(0.0,), std=(1.0,), shuffle=True, generator=gen)]
    )
    assert not torch.equal(one, two)
    # Images travel with their labels.
    for x, y in iterate_batches(split, 7, mean=(0.0,), std=(1.0,), shuffle=True, generator=gen):
        assert torch.allclose(x[:, 0, 0, 0] * 255, y.float(), atol=1e-3)


def test_dataset_batches_apply_the_default_augmentation_only_when_asked() -> None:
    data = _dataset()
    plain = torch.cat([x for x, _ in data.batches("train", 3, shuffle=False)])
    again = torch.cat([x for x, _ in data.batches("train", 3, shuffle=False, augment=False)])
    assert torch.equal(plain, again)
    augmented = torch.cat(
        [
            x
            for x, _ in data.batches(
                "train", 3, shuffle=False, augment=True, generator=torch.Generator().manual_seed(0)
            )
        ]
    )
    assert augmented.shape == plain.shape and not torch.equal(augmented, plain)


def test_iterate_batches_rejects_bad_arguments() -> None:
    split = _split(4)
    with pytest.raises(ConfigError, match="batch_size"):
        list(iterate_batches(split, 0, mean=(0, 0, 0), std=(1, 1, 1), shuffle=False))
    with pytest.raises(ConfigError, match="one per channel"):
        list(iterate_batches(split, 2, mean=(0,), std=(1,), shuffle=False))


def test_stratified_split_is_deterministic_disjoint_stratified_and_sized() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = stratified_split(labels, 0.2, seed=7)
    again_kept, again_held = stratified_split(labels, 0.2, seed=7)
    assert torch.equal(kept, again_kept) and torch.equal(held, again_held)
    assert len(held) == 20 and len(kept) == 80
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(100))
    assert torch.bincount(labels[held]).tolist() == [10, 6, 4]
    _, other = stratified_split(labels, 0.2, seed=8)
    assert not torch.equal(held, other)


def test_stratified_split_rounds_to_the_total_and_keeps_every_class_in_training() -> None:
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 1)
    kept, held = stratified_split(labels, 0.25, seed=0)
    assert len(held) == 4  # round(0.25 * 15); the singleton class cannot give its only sample
    assert torch.bincount(labels[held], minlength=3).tolist() == [2, 2, 0]
    assert set(labels[kept].tolist()) == {0, 1, 2}
    with pytest.raises(ConfigError):
        stratified_split(labels, 1.0, seed=0)


def test_channel_stats_match_a_direct_computation() -> None:
    images = torch.randint(0, 256, (9000, 2, 3, 3), dtype=torch.uint8)  # more than one chunk
    mean, std = channel_stats(images)
    scaled = images.double() / 255
    assert mean == pytest.approx(scaled.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(scaled.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)
    constant = torch.full((3, 1, 2, 2), 7, dtype=torch.uint8)
    assert channel_stats(constant)[1] == (1.0,)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu_batches_with_a_cpu_generator() -> None:
    split = _split(40, channels=3, size=8)
    spec = AugmentSpec(crop_padding=2, horizontal_flip=True)
    kwargs = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2), "shuffle": True, "augment": spec}
    on_cpu = list(iterate_batches(split, 16, generator=torch.Generator().manual_seed(9), **kwargs))
    on_gpu = list(iterate_batches(split.to("cuda"), 16, generator=torch.Generator().manual_seed(9), **kwargs))
    for (x_cpu, y_cpu), (x_gpu, y_gpu) in zip(on_cpu, on_gpu, strict=True):
        assert x_gpu.device.type == "cuda"
        torch.testing.assert_close(x_gpu.cpu(), x_cpu)
        assert torch.equal(y_gpu.cpu(), y_cpu)


def test_crop_padding_keeps_its_share_of_the_image_when_resized() -> None:
    cifar_like = AugmentSpec(crop_padding=4, horizontal_flip=True)
    assert cifar_like.resized(32, 32) == cifar_like
    assert cifar_like.resized(8, 32) == AugmentSpec(crop_padding=1, horizontal_flip=True)
    assert cifar_like.resized(64, 32).crop_padding == 8
    assert AugmentSpec(crop_padding=2).resized(4, 16).is_identity
