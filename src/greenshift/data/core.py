"""Tensor-resident image splits, stratified splitting, channel statistics and batched augmentation.

A split lives as one ``uint8`` tensor ``[N, C, H, W]`` on its device; batches are cut from it by
indexing, then augmented and normalised in bulk on that device, with no per-sample Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from greenshift.errors import ConfigError

SPLITS = ("train", "val", "test")

# Chunk size for statistics over big splits: bounds the float64 working copy to a few hundred MB.
_STATS_CHUNK = 4096


@dataclass(frozen=True)
class AugmentSpec:
    """Batched, on-device training augmentation.

    ``crop_padding`` pads every image with that many zero (black) pixels on each side and takes a
    random crop of the original size (0 turns the crop off); ``horizontal_flip`` mirrors a random
    half of the images.
    """

    crop_padding: int = 0
    horizontal_flip: bool = False

    def __post_init__(self) -> None:
        if (
            isinstance(self.crop_padding, bool)
            or not isinstance(self.crop_padding, int)
            or self.crop_padding < 0
        ):
            raise ConfigError(f"crop_padding={self.crop_padding!r} must be a non-negative integer")

    @property
    def is_identity(self) -> bool:
        """Whether this augmentation leaves every image unchanged."""
        return self.crop_padding == 0 and not self.horizontal_flip

    def resized(self, image_size: int, default_image_size: int) -> AugmentSpec:
        """The same augmentation for images of ``image_size`` when it was set for ``default_image_size``.

        The crop padding keeps its share of the image (rounded to whole pixels): a shift that is one
        eighth of a 32-pixel image is one eighth of an 8-pixel one too, not half of it.
        """
        padding = round(self.crop_padding * image_size / default_image_size)
        return AugmentSpec(crop_padding=padding, horizontal_flip=self.horizontal_flip)


@dataclass
class ImageSplit:
    """One split of a data set: ``uint8`` images ``[N, C, H, W]`` and ``int64`` labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        # A malformed split is a bug in a reader, not a user error, hence ValueError.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(
                f"images must be a uint8 tensor [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(
                f"labels must be an int64 tensor [N], got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def device(self) -> torch.device:
        """The device the split's tensors live on."""
        return self.images.device

    def to(self, device: torch.device | str) -> ImageSplit:
        """The same split with both tensors on ``device`` (no copy if already there)."""
        return ImageSplit(self.images.to(device), self.labels.to(device))

    def subset(self, indices: torch.Tensor) -> ImageSplit:
        """The samples at ``indices`` (an int64 index tensor), as a new split."""
        indices = indices.to(self.images.device)
        return ImageSplit(self.images[indices], self.labels[indices])


@dataclass
class Dataset:
    """A loaded data set: class names, tensor-resident splits, normalisation and default augmentation.

    ``mean`` and ``std`` are per channel in ``pixel / 255`` units and come from the train split only.
    ``test`` is kept for final reports; the search never touches it.
    """

    name: str
    classes: list[str]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec

    @property
    def num_classes(self) -> int:
        """Number of classes (length of ``classes``)."""
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of image channels (1 for greyscale, 3 for RGB)."""
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        """Height (= width) of the images in pixels."""
        return int(self.train.images.shape[2])

    @property
    def device(self) -> torch.device:
        """The device the splits live on."""
        return self.train.device

    def split(self, name: str) -> ImageSplit:
        """The split called ``name`` (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        found = getattr(self, name)
        if found is None:
            raise ConfigError(f"data set {self.name!r} has no {name} split")
        return found

    def to(self, device: torch.device | str) -> Dataset:
        """The same data set with every split on ``device``."""
        return Dataset(
            name=self.name,
            classes=list(self.classes),
            train=self.train.to(device),
            val=self.val.to(device),
            test=None if self.test is None else self.test.to(device),
            mean=self.mean,
            std=self.std,
            augment=self.augment,
        )

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised ``float32`` image batches and ``int64`` labels of one split, on the data's device.

        ``augment=True`` applies the data set's default :class:`AugmentSpec`.
        """
        return iterate_batches(
            self.split(split),
            batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=shuffle,
            augment=self.augment if augment else None,
            generator=generator,
            drop_last=drop_last,
        )


def iterate_batches(
    split: ImageSplit,
    batch_size: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    shuffle: bool,
    augment: AugmentSpec | None = None,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` batches: ``float32`` normalised ``[B, C, H, W]`` and ``int64`` ``[B]``.

    With ``shuffle`` a fresh permutation is drawn on every call from ``generator`` (or the global
    generator), so a seeded CPU generator makes the batch sequence reproducible. Augmentation runs on
    the ``uint8`` batch before normalisation, so crop padding is black, as in the usual pipelines.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be a positive integer")
    channels = split.images.shape[1]
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(
            f"mean and std need {channels} values (one per channel), got {len(mean)} and {len(std)}"
        )
    device = split.images.device
    # (x / 255 - mean) / std folded into one multiply-add per element.
    std_t = torch.tensor([float(s) for s in std], dtype=torch.float32)
    mean_t = torch.tensor([float(m) for m in mean], dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(device)
    shift = (-mean_t / std_t).view(1, -1, 1, 1).to(device)
    spec = augment if augment is not None and not augment.is_identity else None

    total = len(split)
    order = _random_permutation(total, generator, device) if shuffle else None
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        if drop_last and stop - start < batch_size:
            break
        if order is None:
            images, labels = split.images[start:stop], split.labels[start:stop]
        else:
            index = order[start:stop]
            images, labels = split.images[index], split.labels[index]
        if spec is not None:
            images = augment_batch(images, spec, generator=generator)
        yield images.to(torch.float32).mul_(scale).add_(shift), labels


def augment_batch(
    images: torch.Tensor, spec: AugmentSpec, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Randomly crop (after zero padding) and flip a batch ``[B, C, H, W]`` in one go on its device.

    The random draws come from ``generator`` (on its own device) and are moved to the images' device,
    so a seeded CPU generator gives the same augmentation wherever the images live.
    """
    if spec.is_identity or images.shape[0] == 0:
        return images
    batch, channels, height, width = images.shape
    device = images.device
    out = images
    if spec.crop_padding > 0:
        pad = spec.crop_padding
        padded = F.pad(images, (pad, pad, pad, pad))
        padded_width = width + 2 * pad
        offset_y = _randint(2 * pad + 1, batch, generator, device)
        offset_x = _randint(2 * pad + 1, batch, generator, device)
        rows = offset_y[:, None] + torch.arange(height, device=device)
        cols = offset_x[:, None] + torch.arange(width, device=device)
        # One gather over the flattened padded image picks each sample's window.
        flat_index = (rows[:, :, None] * padded_width + cols[:, None, :]).reshape(batch, 1, height * width)
        flat = padded.reshape(batch, channels, -1)
        out = flat.gather(2, flat_index.expand(batch, channels, height * width)).view(
            batch, channels, height, width
        )
    if spec.horizontal_flip:
        flip = _rand(batch, generator, device) < 0.5
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split sample indices into ``(kept, held_out)``, holding out ``fraction`` of every class.

    Deterministic for a given ``seed`` and label vector. The held-out total is
    ``round(fraction * N)``, shared between classes by largest remainder; every class keeps at
    least one sample on the kept side. Both index tensors are sorted ``int64``.
    """
    if not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0 or math.isnan(fraction):
        raise ConfigError(f"split fraction {fraction!r} must be in [0, 1)")
    labels = labels.detach().to("cpu", torch.int64)
    classes, counts = torch.unique(labels, return_counts=True)
    held_counts = _held_counts([int(c) for c in counts], float(fraction))
    generator = torch.Generator().manual_seed(int(seed))
    kept_parts, held_parts = [], []
    for cls, held in zip(classes.tolist(), held_counts, strict=True):
        members = torch.nonzero(labels == cls, as_tuple=False).flatten()
        shuffled = members[torch.randperm(members.numel(), generator=generator)]
        held_parts.append(shuffled[:held])
        kept_parts.append(shuffled[held:])
    empty = torch.empty(0, dtype=torch.int64)
    kept = torch.cat(kept_parts).sort().values if kept_parts else empty
    held_out = torch.cat(held_parts).sort().values if held_parts else empty
    return kept, held_out


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of ``uint8`` images, in ``pixel / 255`` units.

    A channel with zero spread gets std 1 so normalisation never divides by zero.
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"need a non-empty [N, C, H, W] tensor, got shape {tuple(images.shape)}")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], _STATS_CHUNK):
        chunk = images[start : start + _STATS_CHUNK].to(torch.float64).div_(255.0)
        total += chunk.sum(dim=(0, 2, 3)).cpu()
        total_sq += chunk.square_().sum(dim=(0, 2, 3)).cpu()
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0.0)
    std = var.sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _held_counts(counts: list[int], fraction: float) -> list[int]:
    """How many samples of each class to hold out (largest-remainder rounding, keeps one per class)."""
    target = math.floor(fraction * sum(counts) + 0.5)
    ideal = [fraction * n for n in counts]
    caps = [max(n - 1, 0) for n in counts]
    held = [min(math.floor(x), cap) for x, cap in zip(ideal, caps, strict=True)]
    remaining = target - sum(held)
    by_remainder = sorted(range(len(counts)), key=lambda i: (-(ideal[i] - held[i]), i))
    for i in by_remainder:
        if remaining <= 0:
            break
        if held[i] < caps[i]:
            held[i] += 1
            remaining -= 1
    return held


def _random_permutation(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randperm(n, generator=generator, device=source).to(device)


def _randint(high: int, size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.randint(0, high, (size,), generator=generator, device=source).to(device)


def _rand(size: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.rand(size, generator=generator, device=source).to(device)


@dataclass
class RawDataset:
    """What a reader returns and the cache stores: class names, all non-test samples, the test split.

    The train/validation split is made later, from ``trainval``, so that the cache does not depend on
    ``val_fraction`` or ``split_seed``.
    """

    classes: list[str]
    trainval: ImageSplit
    test: ImageSplit | None


# Data sets without an official test split hold out this fraction, always with the same seed, so that
# the test split never changes between runs or machines.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 1_000_003


def hold_out_test(classes: list[str], images: torch.Tensor, labels: torch.Tensor) -> RawDataset:
    """Build a :class:`RawDataset` whose test split is a fixed, seeded, stratified 20% of the samples."""
    kept, held = stratified_split(labels, TEST_FRACTION, TEST_SPLIT_SEED)
    everything = ImageSplit(images, labels)
    return RawDataset(classes=list(classes), trainval=everything.subset(kept), test=everything.subset(held))
