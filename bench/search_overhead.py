"""Share of a search's wall time spent outside training and evaluation (optimiser, store, scheduling).

Runs a real search (small CNN on digits, in process, the search command's default budgets: 1 to 9
epochs, eta 3) and compares the search's wall time with the sum of the trials' own durations, twice:
over the whole call (start-up included: imports, SMAC set-up) and over the search loop (from the
first trial's start to the last trial's end: optimiser, store and scheduling per trial). The loop's
overhead is also printed in milliseconds per trial, which does not depend on how long trials take.
Target: loop overhead <= 5 % for 50 trials.

    python bench/search_overhead.py [--trials 50] [--min-epochs 1] [--max-epochs 9] [--quick]
"""

from __future__ import annotations

import argparse

from common import search_in_tempdir, write_result


def main() -> None:
    """Run the benchmark and print the overhead share."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="trials of the search")
    parser.add_argument("--backbone", default="small_cnn", help="backbone to train")
    parser.add_argument("--min-epochs", type=int, default=1, help="smallest budget of a trial")
    parser.add_argument("--max-epochs", type=int, default=9, help="largest budget of a trial")
    parser.add_argument("--quick", action="store_true", help="12 trials, for a smoke run")
    args = parser.parse_args()
    trials = 12 if args.quick else args.trials
    result, wall_s = search_in_tempdir(
        backbone=args.backbone, trials=trials, min_epochs=args.min_epochs, max_epochs=args.max_epochs, seed=0
    )
    in_trials_s = sum(t.duration_s or 0.0 for t in result.completed)
    loop_s = max(t.finished_at for t in result.completed) - min(t.started_at for t in result.completed)
    overhead = 1 - in_trials_s / wall_s
    loop_overhead = 1 - in_trials_s / loop_s
    print(
        f"{len(result.completed)} trials of {args.backbone}: wall {wall_s:.1f} s, loop {loop_s:.1f} s, "
        f"inside trials {in_trials_s:.1f} s"
    )
    print(f"start-up (imports, SMAC set-up): {wall_s - loop_s:.1f} s")
    per_trial_ms = (loop_s - in_trials_s) / len(result.completed) * 1000
    print(
        f"overhead share of the search loop: {loop_overhead:.1%} (target <= 5%), {per_trial_ms:.0f} ms per trial; "
        f"of the whole call: {overhead:.1%}"
    )
    path = write_result(
        "search_overhead",
        {
            "trials": len(result.completed),
            "backbone": args.backbone,
            "min_epochs": args.min_epochs,
            "max_epochs": args.max_epochs,
            "overhead_ms_per_trial": per_trial_ms,
            "wall_s": wall_s,
            "loop_s": loop_s,
            "startup_s": wall_s - loop_s,
            "inside_trials_s": in_trials_s,
            "overhead_share": overhead,
            "loop_overhead_share": loop_overhead,
            "target": 0.05,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
