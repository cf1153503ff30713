"""Completed trials per hour with 1 vs 2 Dask workers (small CNN on digits), side by side.

One worker runs trials in process with all cores; two workers run on a local Dask cluster with the
cores split between them. Throughput is counted over the trial loop (first trial start to last trial
end); the one-time start-up (cluster, imports, data) is printed separately. Target: >= 1.7x.

    python bench/dask_scaling.py [--trials 16] [--quick]
"""

from __future__ import annotations

import argparse
import time

from common import search_in_tempdir, write_result


def trials_per_hour(workers: int, trials: int, backbone: str, epochs: int) -> tuple[float, float, float]:
    """Run a search with ``workers``; return (trials per hour over the loop, loop seconds, start-up seconds)."""
    result, wall_s = search_in_tempdir(
        backbone=backbone,
        trials=trials,
        optimizer="random",
        min_epochs=epochs,
        max_epochs=epochs,
        seed=0,
        workers=workers,
    )
    loop_s = max(t.finished_at for t in result.completed) - min(t.started_at for t in result.completed)
    return len(result.completed) / loop_s * 3600, loop_s, wall_s - loop_s


def _matmul_seconds(_: int) -> float:
    import torch

    torch.set_num_threads(1)
    a = torch.randn(512, 512)
    start = time.perf_counter()
    for _ in range(200):
        a @ a
    return time.perf_counter() - start


def parallel_ceiling() -> float:
    """Throughput of two single-thread processes at once over one alone: what two workers can reach here."""
    import multiprocessing

    alone = _matmul_seconds(0)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        together = pool.map(_matmul_seconds, [0, 1])
    return 2 * alone / max(together)


def main() -> None:
    """Run the benchmark and print the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per search")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every trial")
    parser.add_argument("--backbone", default="small_cnn", help="backbone to train")
    parser.add_argument("--quick", action="store_true", help="6 trials, for a smoke run")
    args = parser.parse_args()
    trials = 6 if args.quick else args.trials
    one, one_s, one_start = trials_per_hour(1, trials, args.backbone, args.epochs)
    two, two_s, two_start = trials_per_hour(2, trials, args.backbone, args.epochs)
    print(f"1 worker : {one:7.0f} trials/h ({one_s:.1f} s loop for {trials}, start-up {one_start:.1f} s)")
    print(f"2 workers: {two:7.0f} trials/h ({two_s:.1f} s loop for {trials}, start-up {two_start:.1f} s)")
    ceiling = parallel_ceiling()
    print(f"speed-up: {two / one:.2f}x (target >= 1.7x)")
    print(f"this machine's ceiling: two single-thread processes at once do {ceiling:.2f}x the work of one")
    path = write_result(
        "dask_scaling",
        {
            "trials": trials,
            "backbone": args.backbone,
            "epochs_per_trial": args.epochs,
            "trials_per_hour_1": one,
            "trials_per_hour_2": two,
            "loop_s_1": one_s,
            "loop_s_2": two_s,
            "startup_s_1": one_start,
            "startup_s_2": two_start,
            "speedup": two / one,
            "parallel_ceiling": ceiling,
            "target": 1.7,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
