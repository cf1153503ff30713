"""How well the energy model ranks what this machine spends: shipped 45 nm table vs `greenshift calibrate`.

Ten ResNet20 configurations spread like a search front (float, and DeepShift-Q/PS at shift depths
2 to 20, 3 to 8 weight bits, 8 to 32 activation bits) on digits-sized inputs. For each:

- *measured*: eager PyTorch inference time per image at batch 128 under ``torch.no_grad`` (the
  measurement protocol's batch size), medians of interleaved rounds. Without a power meter (this VM
  has no RAPL counters), CodeCarbon's CPU energy is the power estimate times this time, so ranks of
  time and of measured energy coincide;
- *modelled*: ``energy_model_j`` with the shipped table and with a table from ``calibrate()`` run just
  before, on the same machine and thread count.

The Spearman rank correlation of each modelled column with the measured one is the figure (goal for the
calibrated table: >= 0.8). Run ``python bench/calibration.py`` (about two minutes) or ``--quick``;
writes ``bench/results/calibration.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from scipy.stats import spearmanr

from common import add_threads_flag, write_result
from greenshift.config import DSNNConfig
from greenshift.data import load_dataset
from greenshift.deploy.calibrate import calibrate
from greenshift.models import get_model
from greenshift.objectives import profile_model
from greenshift.objectives.energy_model import energy_table_from_dict
from greenshift.train import build_model

THREADS = 2
BATCH = 128
CONFIGS: dict[str, dict[str, Any] | None] = {
    "float": None,
    "Q w4 a8 d20": {
        "shift_type": "Q",
        "weight_bits": 4,
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    },
    "PS w5 a16 d20": {
        "shift_type": "PS",
        "weight_bits": 5,
        "activation_integer_bits": 8,
        "activation_fraction_bits": 8,
    },
    "Q w8 a32 d20": {
        "shift_type": "Q",
        "weight_bits": 8,
        "activation_integer_bits": 16,
        "activation_fraction_bits": 16,
    },
    "PS w3 a8 d20": {
        "shift_type": "PS",
        "weight_bits": 3,
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    },
    "Q w4 a8 d10": {
        "shift_type": "Q",
        "weight_bits": 4,
        "shift_depth": 10,
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    },
    "PS w5 a32 d10": {
        "shift_type": "PS",
        "weight_bits": 5,
        "shift_depth": 10,
        "activation_integer_bits": 16,
        "activation_fraction_bits": 16,
    },
    "Q w5 a16 d5": {
        "shift_type": "Q",
        "weight_bits": 5,
        "shift_depth": 5,
        "activation_integer_bits": 8,
        "activation_fraction_bits": 8,
    },
    "PS w4 a8 d5": {
        "shift_type": "PS",
        "weight_bits": 4,
        "shift_depth": 5,
        "activation_integer_bits": 4,
        "activation_fraction_bits": 4,
    },
    "Q w4 a32 d2": {
        "shift_type": "Q",
        "weight_bits": 4,
        "shift_depth": 2,
        "activation_integer_bits": 16,
        "activation_fraction_bits": 16,
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few rounds")
    add_threads_flag(parser, THREADS)
    args = parser.parse_args()
    rounds = 3 if args.quick else 9
    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    shape = tuple(data.split("val").images.shape[1:])
    batch = next(iter(data.batches("val", BATCH, shuffle=False, augment=False)))[0]
    batch = batch.repeat(-(-BATCH // batch.shape[0]), 1, 1, 1)[:BATCH].contiguous()

    calibration = calibrate(rounds=5 if args.quick else 15, threads=args.threads)
    tables = {
        "shipped": None,
        "calibrated": energy_table_from_dict(calibration.energy_table(), origin="calibrated table"),
    }
    models: dict[str, torch.nn.Module] = {}
    modelled: dict[str, dict[str, float]] = {name: {} for name in tables}
    for name, settings in CONFIGS.items():
        torch.manual_seed(0)
        if settings is None:
            model = get_model("resnet20", num_classes=data.num_classes, in_channels=data.in_channels)
        else:
            model = build_model(DSNNConfig(**settings), "resnet20", data.num_classes, data.in_channels)
        models[name] = model.eval()
        for table_name, table in tables.items():
            modelled[table_name][name] = profile_model(model, shape, energy_table=table).total_energy_j

    names = list(models)
    samples: dict[str, list[float]] = {n: [] for n in names}
    with torch.no_grad():
        for name in names:
            models[name](batch)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                models[name](batch)
                samples[name].append((time.perf_counter() - start) / BATCH * 1e3)
    measured = {n: statistics.median(v) for n, v in samples.items()}
    rho = {
        table_name: float(spearmanr([values[n] for n in names], [measured[n] for n in names]).statistic)
        for table_name, values in modelled.items()
    }
    path = write_result(
        "calibration",
        {
            "threads": args.threads,
            "batch": BATCH,
            "rounds": rounds,
            "input_shape": list(shape),
            "measured_ms_per_image": measured,
            "modelled_j": modelled,
            "spearman_rho": rho,
            "goal": 0.8,
            "calibration_ns": {k: {str(w): v for w, v in e.items()} for k, e in calibration.ns.items()},
        },
    )
    print(f"{'configuration':<16} {'measured ms/img':>15} {'shipped J':>11} {'calibrated J':>13}")
    for n in names:
        print(f"{n:<16} {measured[n]:15.3f} {modelled['shipped'][n]:11.3e} {modelled['calibrated'][n]:13.3e}")
    print(f"Spearman rho vs measured: shipped {rho['shipped']:.2f}, calibrated {rho['calibrated']:.2f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
