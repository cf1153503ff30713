"""Share of a search's wall time spent outside training and evaluation (optimiser, store, scheduling).

Runs a real search (small CNN on digits, the search command's default budgets: 1 to 9 epochs, eta 3)
and compares the search's wall time with the sum of the trials' own durations, twice: over the whole
call (start-up included: imports, SMAC set-up) and over the search loop (from the first trial's start
to the last trial's end: optimiser, store and scheduling per trial). The loop's overhead is also
printed in milliseconds per trial, which does not depend on how long trials take.
Target: loop overhead <= 5 % for 50 trials.

By default the same search runs twice: with trials in a trial process (the default of
``greenshift search``; a trial's own duration is measured inside that process, so sending it the
trial and its outcome back counts as overhead) and in the search's own process
(``--no-isolate-trials``). The difference per trial is what process isolation costs.

    python bench/search_overhead.py [--trials 50] [--min-epochs 1] [--max-epochs 9] [--quick]
                                    [--isolation both|on|off]
"""

from __future__ import annotations

import argparse
from typing import Any

from common import search_in_tempdir, write_result


def measure(args: argparse.Namespace, trials: int, isolate: bool) -> dict[str, Any]:
    """One search; its overhead figures."""
    result, wall_s = search_in_tempdir(
        backbone=args.backbone,
        trials=trials,
        min_epochs=args.min_epochs,
        max_epochs=args.max_epochs,
        seed=0,
        isolate_trials=isolate,
    )
    in_trials_s = sum(t.duration_s or 0.0 for t in result.completed)
    loop_s = max(t.finished_at for t in result.completed) - min(t.started_at for t in result.completed)
    per_trial_ms = (loop_s - in_trials_s) / len(result.completed) * 1000
    where = "in trial processes" if isolate else "in the search's process"
    print(
        f"{len(result.completed)} trials of {args.backbone} {where}: wall {wall_s:.1f} s, loop {loop_s:.1f} s, "
        f"inside trials {in_trials_s:.1f} s, start-up (imports, SMAC set-up) {wall_s - loop_s:.1f} s"
    )
    print(
        f"  overhead share of the search loop: {1 - in_trials_s / loop_s:.1%} (target <= 5%), "
        f"{per_trial_ms:.0f} ms per trial; of the whole call: {1 - in_trials_s / wall_s:.1%}"
    )
    return {
        "trials": len(result.completed),
        "isolate_trials": isolate,
        "overhead_ms_per_trial": per_trial_ms,
        "wall_s": wall_s,
        "loop_s": loop_s,
        "startup_s": wall_s - loop_s,
        "inside_trials_s": in_trials_s,
        "overhead_share": 1 - in_trials_s / wall_s,
        "loop_overhead_share": 1 - in_trials_s / loop_s,
    }


def main() -> None:
    """Run the benchmark and print the overhead share (and the cost of isolation)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="trials of the search")
    parser.add_argument("--backbone", default="small_cnn", help="backbone to train")
    parser.add_argument("--min-epochs", type=int, default=1, help="smallest budget of a trial")
    parser.add_argument("--max-epochs", type=int, default=9, help="largest budget of a trial")
    parser.add_argument("--quick", action="store_true", help="12 trials, for a smoke run")
    parser.add_argument(
        "--isolation", choices=("both", "on", "off"), default="both", help="trial processes or not"
    )
    args = parser.parse_args()
    trials = 12 if args.quick else args.trials
    modes = {"both": (True, False), "on": (True,), "off": (False,)}[args.isolation]
    runs = {("isolated" if isolate else "in_process"): measure(args, trials, isolate) for isolate in modes}
    # The isolated run is the default configuration: its figures are the headline ones.
    headline = runs.get("isolated") or runs["in_process"]
    result = {
        **headline,
        "backbone": args.backbone,
        "min_epochs": args.min_epochs,
        "max_epochs": args.max_epochs,
        "target": 0.05,
        "runs": runs,
    }
    if len(runs) == 2:
        cost = runs["isolated"]["overhead_ms_per_trial"] - runs["in_process"]["overhead_ms_per_trial"]
        result["isolation_cost_ms_per_trial"] = cost
        print(f"process isolation costs {cost:.0f} ms per trial")
    path = write_result("search_overhead", result)
    print(f"written {path}")


if __name__ == "__main__":
    main()
