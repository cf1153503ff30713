"""Repeatability and overhead of ``energy_measured_j`` for a small CNN and ResNet20.

For each model the full measurement protocol (``greenshift.objectives.measure_energy``) runs
``--repeats`` times (10 by default) on the same fixed input batches, and the benchmark reports:

- the coefficient of variation (std / mean) of the per-image joules across the repeats, i.e. how
  repeatable one trial's ``energy_measured_j`` is on this machine with this meter;
- the meter's time overhead: inference time per image while the meter runs (start/stop included)
  relative to plain inference without a meter, plus the mean start+stop time of one reading;
- the meter's idle power over a window without inference and its share of the measured power;
- the modelled energy (``energy_model_j``) next to the measured one, to show how far apart they are
  (shift layers are simulated with float arithmetic, so the measured energy cannot see shifts).

Inputs are random 3x32x32 images (CIFAR-shaped); torch uses 2 threads. The meter is chosen like
the search does (``--meter auto``: NVML on CUDA, else RAPL, else CodeCarbon).

Run ``python bench/energy_meters.py`` (about 10 minutes with CodeCarbon) or ``--quick`` for a
smoke run (3 repeats, short windows). The result is printed and written to
``bench/results/energy_meters.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from greenshift.models import get_model
from greenshift.objectives import MeasureOptions, measure_energy, model_energy_j
from greenshift.objectives.meters import EnergyMeter, choose_meter

MODELS = ("small_cnn", "resnet20")
INPUT_SHAPE = (3, 32, 32)
THREADS = 2
RESULT = Path(__file__).resolve().parent / "results" / "energy_meters.json"


def options_for(quick: bool) -> MeasureOptions:
    """Protocol settings: the library defaults, or short windows and few readings for ``--quick``."""
    if quick:
        return MeasureOptions(
            batch_size=64, num_batches=1, min_window_s=2.0, window_periods=2, min_repeats=2, max_repeats=3
        )
    return MeasureOptions()


def bench_model(
    name: str, meter: EnergyMeter, options: MeasureOptions, repeats: int, device: torch.device
) -> dict[str, Any]:
    """Run the protocol ``repeats`` times for one model and summarise repeatability and overhead."""
    torch.manual_seed(0)
    model = get_model(name, num_classes=10, in_channels=INPUT_SHAPE[0]).to(device).eval()
    generator = torch.Generator().manual_seed(1)
    batches = [
        torch.randn((options.batch_size, *INPUT_SHAPE), generator=generator).to(device)
        for _ in range(options.num_batches)
    ]
    runs = []
    for index in range(repeats):
        start = time.perf_counter()
        result = measure_energy(model, batches, meter, options)
        runs.append({**result.to_dict(), "wall_s": time.perf_counter() - start})
        print(
            f"  {name} repeat {index + 1}/{repeats}: {result.joules_per_image:.4g} J/image "
            f"(n={result.n}, rse={result.rse:.3f}, overhead={result.time_overhead_fraction:+.1%})",
            flush=True,
        )
    joules = [run["joules_per_image"] for run in runs]
    mean = statistics.fmean(joules)
    modelled = model_energy_j(model, INPUT_SHAPE)
    idle_shares = [run["idle_share"] for run in runs if run["idle_share"] is not None]
    return {
        "model": name,
        "repeats": repeats,
        "mean_j_per_image": mean,
        "std_j_per_image": statistics.stdev(joules) if len(joules) > 1 else 0.0,
        "cv": statistics.stdev(joules) / mean if len(joules) > 1 and mean > 0 else None,
        "min_j_per_image": min(joules),
        "max_j_per_image": max(joules),
        "readings_per_repeat": [run["n"] for run in runs],
        "converged_repeats": sum(run["converged"] for run in runs),
        "median_time_overhead_fraction": statistics.median(run["time_overhead_fraction"] for run in runs),
        "median_plain_s_per_image": statistics.median(run["plain_s_per_image"] for run in runs),
        "median_metered_s_per_image": statistics.median(run["metered_s_per_image"] for run in runs),
        "mean_start_stop_s": statistics.fmean(run["start_stop_s"] for run in runs),
        "mean_power_w": statistics.fmean(run["mean_power_w"] for run in runs),
        "median_idle_share": statistics.median(idle_shares) if idle_shares else None,
        "median_wall_s_per_repeat": statistics.median(run["wall_s"] for run in runs),
        "energy_model_j": modelled,
        "measured_over_modelled": mean / modelled if modelled > 0 else None,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repeats with short windows (smoke run)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="protocol runs per model (default 10, quick 3)"
    )
    parser.add_argument("--meter", default="auto", help="auto, codecarbon, nvml or rapl")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    torch.set_num_threads(THREADS)
    device = torch.device(args.device)
    repeats = args.repeats or (3 if args.quick else 10)
    options = options_for(args.quick)
    meter, note = choose_meter(args.meter, device, measure_power_secs=options.measure_power_secs)
    ok, reason = meter.available()
    if not ok:
        print(f"meter {meter.name} unavailable: {reason}", file=sys.stderr)
        return 1
    print(f"meter: {meter.name} ({note}); window {options.window_s(meter):g} s", flush=True)
    models = [bench_model(name, meter, options, repeats, device) for name in MODELS]
    report = {
        "benchmark": "energy_meters",
        "quick": args.quick,
        "meter": meter.name,
        "meter_selection": note,
        "meter_method": meter.describe(),
        "options": options.__dict__,
        "window_s": options.window_s(meter),
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "threads": THREADS,
            "device": str(device),
        },
        "models": models,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for entry in models:
        cv = "n/a" if entry["cv"] is None else f"{entry['cv']:.1%}"
        print(
            f"{entry['model']}: {entry['mean_j_per_image']:.4g} J/image, CV {cv} over {entry['repeats']} repeats; "
            f"meter time overhead {entry['median_time_overhead_fraction']:+.1%}, "
            f"start+stop {entry['mean_start_stop_s'] * 1000:.1f} ms; idle share "
            f"{entry['median_idle_share'] if entry['median_idle_share'] is None else round(entry['median_idle_share'], 3)}; "
            f"measured/modelled {entry['measured_over_modelled']:.3g}"
        )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
