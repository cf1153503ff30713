"""Completed trials per hour with 1 vs 2 workers (small CNN on digits), side by side in one run.

Two comparisons, both counted over the trial loop (first trial start to last trial end; the one-time
start-up of cluster, imports and data is printed apart). The three runs are repeated in rounds with a
rotating order and every speed-up is the median of the ratios within a round, so that the machine's
drift over minutes does not decide it:

* scaling (the target, >= 1.7x): every trial gets one torch thread; one worker runs the trials in
  process, two run on a local Dask cluster. This is what adding a worker (a machine, a GPU) buys.
* this machine: one worker in process with all cores against two workers with the cores split
  between them; bounded by how well torch already uses several threads for one small model.

    python bench/dask_scaling.py [--trials 24] [--rounds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import write_result


def trials_per_hour(
    workers: int, trials: int, backbone: str, epochs: int, threads_per_trial: int | None
) -> tuple[float, float, float]:
    """Run a search with ``workers``; return (trials per hour over the loop, loop seconds, start-up seconds).

    Each search runs in a fresh interpreter, as a user's would: in a process that had already trained
    the same models, torch's caches would favour the in-process runs over the freshly started workers.
    """
    settings = dict(
        backbone=backbone,
        trials=trials,
        optimizer="random",
        min_epochs=epochs,
        max_epochs=epochs,
        seed=0,
        workers=workers,
        threads_per_trial=threads_per_trial,
    )
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "from common import search_in_tempdir\n"
        "if __name__ == '__main__':\n"
        f"    result, wall_s = search_in_tempdir(**{settings!r})\n"
        "    done = result.completed\n"
        "    loop_s = max(t.finished_at for t in done) - min(t.started_at for t in done)\n"
        "    print(json.dumps([len(done), loop_s, wall_s]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    completed, loop_s, wall_s = json.loads(out.stdout.strip().splitlines()[-1])
    return completed / loop_s * 3600, loop_s, wall_s - loop_s


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


RUNS = {
    "one_thread_1_worker": (1, 1),
    "two_workers": (2, None),
    "all_cores_1_worker": (1, None),
}


def main() -> None:
    """Run the benchmark and print both speed-ups."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24, help="trials per search")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every trial")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three runs, order rotating")
    parser.add_argument("--backbone", default="small_cnn", help="backbone to train")
    parser.add_argument("--quick", action="store_true", help="6 trials, one round, for a smoke run")
    args = parser.parse_args()
    trials = 6 if args.quick else args.trials
    rounds = 1 if args.quick else args.rounds
    names = list(RUNS)
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for index in range(rounds):
        # The machine's speed drifts over minutes: each round runs all three, in a rotating order, and
        # the speed-ups are taken within a round.
        for name in names[index % len(names) :] + names[: index % len(names)]:
            workers, threads = RUNS[name]
            per_hour, loop_s, startup_s = trials_per_hour(
                workers, trials, args.backbone, args.epochs, threads
            )
            measured[name].append({"trials_per_hour": per_hour, "loop_s": loop_s, "startup_s": startup_s})
            print(
                f"round {index + 1} {name:20s}: {per_hour:7.0f} trials/h "
                f"({loop_s:.1f} s loop for {trials}, start-up {startup_s:.1f} s)"
            )

    def per_round(numerator: str, denominator: str) -> list[float]:
        return [
            a["trials_per_hour"] / b["trials_per_hour"]
            for a, b in zip(measured[numerator], measured[denominator], strict=True)
        ]

    scaling_rounds = per_round("two_workers", "one_thread_1_worker")
    machine_rounds = per_round("two_workers", "all_cores_1_worker")
    scaling = statistics.median(scaling_rounds)
    this_machine = statistics.median(machine_rounds)
    ceiling = parallel_ceiling()
    print(
        f"scaling, one thread per trial: {scaling:.2f}x, median of rounds "
        f"{', '.join(f'{r:.2f}' for r in scaling_rounds)} (target >= 1.7x)"
    )
    print(f"this machine, all cores in one trial vs split: {this_machine:.2f}x")
    print(f"this machine's ceiling: two single-thread processes at once do {ceiling:.2f}x the work of one")
    path = write_result(
        "dask_scaling",
        {
            "trials": trials,
            "backbone": args.backbone,
            "epochs_per_trial": args.epochs,
            "rounds": rounds,
            "runs": {
                name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                for name, runs in measured.items()
            },
            "speedup_per_round": scaling_rounds,
            "speedup": scaling,
            "speedup_all_cores": this_machine,
            "parallel_ceiling": ceiling,
            "target": 1.7,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
