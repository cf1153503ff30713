"""Completed trials per hour with 1 vs 2 Dask workers (small CNN on digits), side by side.

One worker runs trials in process with all cores; two workers run on a local Dask cluster with the
cores split between them. Target: >= 1.7x with 2 workers.

    python bench/dask_scaling.py [--trials 16] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from common import write_result
from greenshift.search import DSNNSearch, SearchSettings


def trials_per_hour(workers: int, trials: int, backbone: str) -> tuple[float, float]:
    """Run a search with ``workers`` and return (trials per hour, wall seconds)."""
    out = tempfile.mkdtemp(prefix=f"gs-dask{workers}-")
    try:
        settings = SearchSettings(
            dataset="digits",
            backbone=backbone,
            out=out,
            trials=trials,
            optimizer="random",
            min_epochs=2,
            max_epochs=2,
            seed=0,
            workers=workers,
            device="cpu",
        )
        start = time.perf_counter()
        result = DSNNSearch(settings).run()
        wall_s = time.perf_counter() - start
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return len(result.completed) / wall_s * 3600, wall_s


def main() -> None:
    """Run the benchmark and print the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per search")
    parser.add_argument("--backbone", default="small_cnn", help="backbone to train")
    parser.add_argument("--quick", action="store_true", help="6 trials, for a smoke run")
    args = parser.parse_args()
    trials = 6 if args.quick else args.trials
    one, one_s = trials_per_hour(1, trials, args.backbone)
    two, two_s = trials_per_hour(2, trials, args.backbone)
    print(f"1 worker : {one:7.0f} trials/h ({one_s:.1f} s for {trials})")
    print(f"2 workers: {two:7.0f} trials/h ({two_s:.1f} s for {trials})")
    print(f"speed-up: {two / one:.2f}x (target >= 1.7x)")
    path = write_result(
        "dask_scaling",
        {
            "trials": trials,
            "backbone": args.backbone,
            "trials_per_hour_1": one,
            "trials_per_hour_2": two,
            "speedup": two / one,
            "target": 1.7,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
