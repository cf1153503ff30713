"""Epoch time of greenshift's tensor-resident training loop vs a plain DataLoader loop (CPU).

Both loops train the same backbone (``--backbone``, default ResNet20; float, and fully shifted
DeepShift-Q) with the same optimiser (SGD, momentum 0.9) on the same CIFAR-shaped random ``uint8``
images (3x32x32, 10 classes, batch 128) with the same augmentation (random crop after 4-pixel zero
padding, random horizontal flip):

- greenshift: :func:`greenshift.train.train` for one epoch; the images stay one ``uint8`` tensor and
  every batch is cut, augmented and normalised in bulk. The time is ``TrainResult.train_time_s`` (the
  training pass only; validation on a tiny split is excluded). It trains in channels-last layout, its
  default on the CPU.
- greenshift NCHW: the same with ``channels_last=False``, the layout the DataLoader loop uses, so that
  ``dataloader / greenshift NCHW`` compares the loops alone and ``NCHW / channels-last`` the layouts.
- DataLoader: a ``torch.utils.data.Dataset`` whose ``__getitem__`` pads, crops, flips and normalises one
  image at a time (the usual torchvision-style pipeline, on tensors), batched by a ``DataLoader`` with
  ``num_workers=0`` (workers would compete for the same cores), timed over one epoch.

Runs are interleaved (loops and variants alternate, the order rotating every round) so that load from
other processes on a shared machine hits all of them alike; the median of the rounds is reported with
the ratios ``dataloader / greenshift NCHW`` and ``NCHW / channels-last`` (above 1: the second is faster).

Run ``python bench/train_loop.py`` (a few minutes at 2 threads) or ``--quick`` for a smoke run. The
result is printed and written to ``bench/results/train_loop.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from greenshift.config import DSNNConfig
from greenshift.data import Dataset
from greenshift.data.core import AugmentSpec, ImageSplit, channel_stats
from greenshift.train import build_model, make_optimizer, train

VARIANTS = {"float": {"shift_depth": 0}, "Q": {"shift_depth": None, "shift_type": "Q"}}
PADDING = 4
RESULT = Path(__file__).resolve().parent / "results" / "train_loop.json"


def make_dataset(images: int, seed: int = 0) -> Dataset:
    """Random CIFAR-shaped data: ``images`` training images and a tiny validation split."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> ImageSplit:
        pixels = torch.randint(0, 256, (n, 3, 32, 32), generator=generator, dtype=torch.uint8)
        return ImageSplit(pixels, torch.randint(0, 10, (n,), generator=generator))

    train_split, val_split = split(images), split(32)
    mean, std = channel_stats(train_split.images)
    return Dataset(
        name="random-cifar",
        classes=[str(i) for i in range(10)],
        train=train_split,
        val=val_split,
        test=None,
        mean=mean,
        std=std,
        augment=AugmentSpec(crop_padding=PADDING, horizontal_flip=True),
    )


class PerSampleAugmented(torch.utils.data.Dataset):
    """One image per ``__getitem__``: zero-pad, random crop, random flip, normalise (torchvision style)."""

    def __init__(self, split: ImageSplit, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.images = split.images
        self.labels = split.labels
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        height, width = image.shape[1:]
        padded = F.pad(image, (PADDING, PADDING, PADDING, PADDING))
        top, left = (int(v) for v in torch.randint(0, 2 * PADDING + 1, (2,)))
        image = padded[:, top : top + height, left : left + width]
        if float(torch.rand(())) < 0.5:
            image = image.flip(2)
        return (image.float() / 255.0 - self.mean) / self.std, self.labels[index]


def config_for(variant: str, batch_size: int) -> DSNNConfig:
    """SGD configuration of ``variant`` (float: no shift layers; Q: every layer shifted)."""
    return DSNNConfig(optimizer="sgd", lr=0.05, batch_size=batch_size, **VARIANTS[variant])


def time_greenshift(config: DSNNConfig, data: Dataset, backbone: str, channels_last: bool = True) -> float:
    """Seconds of one training epoch through :func:`greenshift.train.train`."""
    return train(config, data, 1, "cpu", seed=0, backbone=backbone, channels_last=channels_last).train_time_s


def time_greenshift_nchw(config: DSNNConfig, data: Dataset, backbone: str) -> float:
    """:func:`time_greenshift` in the contiguous (NCHW) layout."""
    return time_greenshift(config, data, backbone, channels_last=False)


def time_dataloader(config: DSNNConfig, data: Dataset, backbone: str) -> float:
    """Seconds of one training epoch of the same model and optimiser fed by a per-sample DataLoader."""
    torch.manual_seed(0)
    model = build_model(config, backbone, data.num_classes, data.in_channels).train()
    optimizer = make_optimizer(config, model.parameters())
    loader = DataLoader(
        PerSampleAugmented(data.train, data.mean, data.std), batch_size=config.batch_size, shuffle=True
    )
    start = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    for images, labels in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * labels.shape[0]
    float(loss_sum)
    return time.perf_counter() - start


TIMERS = {
    "greenshift": time_greenshift,
    "greenshift_nchw": time_greenshift_nchw,
    "dataloader": time_dataloader,
}


def main() -> None:
    """Measure, print and write the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 images and one round, for a smoke run")
    parser.add_argument("--backbone", default="resnet20", help="registered backbone to train")
    parser.add_argument("--images", type=int, default=2048, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved measurements per loop and variant")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for the run")
    parser.add_argument("--out", type=Path, default=RESULT, help="where to write the JSON result")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 256, 1
    torch.set_num_threads(args.threads)
    data = make_dataset(args.images)

    runs = [(variant, loop) for variant in VARIANTS for loop in TIMERS]
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    for round_index in range(args.rounds):
        shift = round_index % len(runs)
        for variant, loop in runs[shift:] + runs[:shift]:
            config = config_for(variant, args.batch_size)
            seconds = TIMERS[loop](config, data, args.backbone)
            times[(variant, loop)].append(seconds)
            print(f"round {round_index + 1}: {variant:5s} {loop:10s} {seconds:7.2f} s/epoch", flush=True)

    results = {}
    print(f"\n{args.backbone}, {args.images} images 3x32x32, batch {args.batch_size}, {args.threads} threads")
    print(
        f"{'variant':8s} {'greenshift s':>13s} {'NCHW s':>8s} {'DataLoader s':>13s} "
        f"{'DataLoader/NCHW':>16s} {'NCHW/channels-last':>19s}"
    )
    for variant in VARIANTS:
        ours = statistics.median(times[(variant, "greenshift")])
        nchw = statistics.median(times[(variant, "greenshift_nchw")])
        theirs = statistics.median(times[(variant, "dataloader")])
        results[variant] = {
            "greenshift_epoch_s": ours,
            "greenshift_nchw_epoch_s": nchw,
            "dataloader_epoch_s": theirs,
            "dataloader_over_greenshift_nchw": theirs / nchw,
            "nchw_over_channels_last": nchw / ours,
            "greenshift_images_per_s": args.images / ours,
            "dataloader_images_per_s": args.images / theirs,
            "rounds_s": {loop: times[(variant, loop)] for loop in TIMERS},
        }
        print(
            f"{variant:8s} {ours:13.2f} {nchw:8.2f} {theirs:13.2f} {theirs / nchw:16.2f} {nchw / ours:19.2f}"
        )

    result = {
        "benchmark": "train_loop",
        "backbone": args.backbone,
        "images": args.images,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "quick": args.quick,
        "augmentation": {"crop_padding": PADDING, "horizontal_flip": True},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
