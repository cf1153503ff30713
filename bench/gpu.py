"""ResNet20 on CIFAR-10-shaped data on a CUDA device: training time of float and DSNNs, and the NVML meter.

1. Writes CIFAR-10 in its real on-disk format (``cifar-10-batches-py/data_batch_1..5``, ``test_batch``,
   ``batches.meta``, pickled) at full size (50,000 + 10,000 images of 3x32x32, random pixels) into a
   temporary folder and loads it through greenshift's ``cifar10`` reader, as a user's copy would be.
2. Trains ResNet20 with :func:`greenshift.train.train` on the device for ``--epochs`` epochs: float,
   the default DSNN (DeepShift-PS, 5-bit, all 20 layers) and DeepShift-Q 4-bit at full depth, each
   twice, interleaved. Reports seconds per epoch (training pass only, ``TrainResult.train_time_s``),
   images per second and each DSNN's time over float's, side by side in one run.
3. NVML meter check: the inference energy per image of the trained float and DSNN models, measured
   with greenshift's protocol (:func:`greenshift.objectives.measure_energy`) and the NVML meter on the
   validation split, ``--repeats`` times; reports J/image, the spread of the repeats, the mean power
   (sanity: between idle and the board's limit) and the modelled energy next to it.

Random pixels make the accuracies meaningless; only times and energies are reported. Run
``python bench/gpu.py`` on a machine with a CUDA device (about 3 minutes on an H200). The result is
printed and written to ``bench/results/gpu.json``.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common import write_result
from greenshift.config import DSNNConfig
from greenshift.data import load_dataset
from greenshift.objectives import MeasureOptions, measure_energy, model_energy_j
from greenshift.objectives.meters import choose_meter
from greenshift.train import train

CONFIGS = {
    "float": DSNNConfig(shift_depth=0),
    "default DSNN (PS 5-bit, depth 20)": DSNNConfig(),
    "Q 4-bit, depth 20": DSNNConfig(shift_type="Q", weight_bits=4),
}
INPUT_SHAPE = (3, 32, 32)


def write_cifar10(folder: Path, train_images: int, test_images: int, seed: int = 0) -> Path:
    """CIFAR-10's python batches with random images; returns the folder holding ``cifar-10-batches-py``."""
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    per_batch = train_images // 5
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = test_images if name == "test_batch" else per_batch
        batch = {
            b"data": rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8),
            b"labels": rng.integers(0, 10, size=count).tolist(),
        }
        (batches / name).write_bytes(pickle.dumps(batch))
    labels = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": labels}))
    return folder


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per training run")
    parser.add_argument(
        "--train-images", type=int, default=50_000, help="training images written (CIFAR-10: 50,000)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="energy measurements per model")
    parser.add_argument("--out-name", default="gpu", help="result name under bench/results/")
    parser.add_argument(
        "--device", default="cuda", help="cuda, or cpu for a smoke run with --train-images 500"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA device", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_cifar10(Path(tmp) / "data", args.train_images, 10_000)
        dataset = load_dataset("cifar10", data_dir=root, cache_dir=Path(tmp) / "cache")
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"cifar10-shaped: {dataset.train.images.shape[0]} training images on {device_name}")

    timing: dict[str, list[float]] = {name: [] for name in CONFIGS}
    models: dict[str, torch.nn.Module] = {}
    for _round in range(2):  # interleaved, so that clock and thermal drift hit every configuration alike
        for name, config in CONFIGS.items():
            result = train(config, dataset, args.epochs, device, seed=0, backbone="resnet20")
            assert result.status == "ok", result.message
            timing[name].append(result.train_time_s / args.epochs)
            models[name] = result.model
    images = dataset.train.images.shape[0]
    float_s = statistics.median(timing["float"])
    training = {
        name: {
            "seconds_per_epoch": statistics.median(times),
            "images_per_second": images / statistics.median(times),
            "over_float": statistics.median(times) / float_s,
        }
        for name, times in timing.items()
    }
    for name, row in training.items():
        print(
            f"train {name}: {row['seconds_per_epoch']:.2f} s/epoch, {row['images_per_second']:.0f} images/s, "
            f"{row['over_float']:.2f}x float"
        )

    meter, note = choose_meter("auto", device)
    ok, reason = meter.available()
    energy: dict[str, Any] = {"meter": meter.name, "selection": note, "available": ok, "reason": reason}
    if ok:
        count = min(5000, dataset.val.images.shape[0])
        batches = [dataset.val.images[i : i + 1000].to(device) for i in range(0, count, 1000)]
        mean = torch.tensor(dataset.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std, device=device).view(1, -1, 1, 1)
        batches = [(b.float() / 255 - mean) / std for b in batches]
        options = MeasureOptions(batch_size=1000, num_batches=len(batches))
        for name, model in models.items():
            readings = [measure_energy(model.eval(), batches, meter, options) for _ in range(args.repeats)]
            joules = [r.joules_per_image for r in readings]
            row = {
                "measured_j_per_image": statistics.median(joules),
                "repeat_cv": statistics.stdev(joules) / statistics.mean(joules) if len(joules) > 1 else None,
                "mean_power_w": statistics.median(r.mean_power_w for r in readings),
                "idle_power_w": readings[0].idle_power_w,
                "modelled_j_per_image": model_energy_j(model.cpu(), INPUT_SHAPE),
            }
            energy[name] = row
            print(
                f"energy {name}: measured {row['measured_j_per_image']:.3g} J/image (CV {row['repeat_cv']:.1%}), "
                f"mean power {row['mean_power_w']:.0f} W, modelled {row['modelled_j_per_image']:.3g} J/image"
            )
    else:
        print(f"meter {meter.name} unavailable: {reason}")
    path = write_result(
        args.out_name,
        {
            "benchmark": "gpu",
            "device": device_name,
            "epochs": args.epochs,
            "training": training,
            "energy": energy,
        },
    )
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
