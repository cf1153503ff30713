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

The measured deployment objective ``latency_ort_ms`` adds its own cost to every trial (ONNX export,
onnxruntime session, timed runs). It is measured next to the search: ``evaluate`` of one DSNN of the
benchmark's backbone with ``loss`` alone and with ``loss`` plus ``latency_ort_ms``, interleaved, the
difference of the medians per trial, also as a share of the search's mean trial duration.

    python bench/search_overhead.py [--trials 50] [--min-epochs 1] [--max-epochs 9] [--quick]
                                    [--isolation both|on|off]
    python bench/search_overhead.py --objective-cost-only   # add the latency_ort_ms cost to the result
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from common import search_in_tempdir, write_result


def measure(
    args: argparse.Namespace, trials: int, isolate: bool, facade: str = "greenshift"
) -> dict[str, Any]:
    """One search (SMAC's side built by the ``smac_settings`` variant ``facade``); its overhead figures."""
    from smac_settings import VARIANTS

    result, wall_s = search_in_tempdir(
        facade_class=VARIANTS[facade],
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
    where = ("in trial processes" if isolate else "in the search's process") + f", {facade}"
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


def latency_ort_cost(backbone: str, rounds: int = 5) -> dict[str, Any]:
    """Median seconds of ``evaluate`` with and without ``latency_ort_ms`` for one DSNN of ``backbone``."""
    import torch

    from greenshift.config import DSNNConfig
    from greenshift.data import load_dataset
    from greenshift.objectives import evaluate
    from greenshift.train import build_model

    data = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(
        DSNNConfig(shift_type="Q", weight_bits=4, activation_integer_bits=4, activation_fraction_bits=4),
        backbone,
        data.num_classes,
        data.in_channels,
    ).eval()
    sets = {"loss": ["loss"], "loss+latency_ort_ms": ["loss", "latency_ort_ms"]}
    samples: dict[str, list[float]] = {k: [] for k in sets}
    for r in range(rounds):
        for name in list(sets)[r % 2 :] + list(sets)[: r % 2]:
            start = time.perf_counter()
            evaluate(model, data, sets[name], device="cpu")
            samples[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {"evaluate_s": medians, "cost_s": medians["loss+latency_ort_ms"] - medians["loss"]}


def add_objective_cost(backbone: str, rounds: int) -> None:
    """Add the latency_ort_ms cost to bench/results/search_overhead.json, keeping the search's figures."""
    import json

    from common import RESULTS, machine

    path = RESULTS / "search_overhead.json"
    data = json.loads(path.read_text())
    if data.get("backbone") != backbone:
        raise SystemExit(
            f"{path} holds a {data.get('backbone')} search; pass --backbone {data.get('backbone')}"
        )
    cost = latency_ort_cost(backbone, rounds=rounds)
    mean_trial_s = data["inside_trials_s"] / data["trials"]
    data.update(
        {
            "latency_ort_ms_cost_ms_per_trial": cost["cost_s"] * 1000,
            "latency_ort_ms_cost_share_of_mean_trial": cost["cost_s"] / mean_trial_s,
            "latency_ort_ms_evaluate_s": cost["evaluate_s"],
            "latency_ort_ms_machine": machine(),
        }
    )
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(
        f"latency_ort_ms adds {cost['cost_s'] * 1000:.0f} ms per trial "
        f"({cost['cost_s'] / mean_trial_s:.1%} of the recorded mean trial, {mean_trial_s:.2f} s); written {path}"
    )


def compare_facades(args: argparse.Namespace, trials: int, names: list[str]) -> dict[str, Any]:
    """Search time per trial of SMAC variants, in rounds with a rotating order; medians per variant."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names) :] + names[: round_index % len(names)]
        for name in order:
            runs[name].append(measure(args, trials, True, name))
    base = statistics.median(run["overhead_ms_per_trial"] for run in runs["greenshift"])
    figures = {}
    for name, measured in runs.items():
        median = statistics.median(run["overhead_ms_per_trial"] for run in measured)
        share = statistics.median(run["loop_overhead_share"] for run in measured)
        figures[name] = {
            "overhead_ms_per_trial": [run["overhead_ms_per_trial"] for run in measured],
            "median_ms": median,
            "over_greenshift": median / base,
            "median_loop_overhead_share": share,
        }
        print(
            f"{name:20s} search time per trial: median {median:.0f} ms, {median / base:.2f}x greenshift's, "
            f"{share:.1%} of the search loop (target <= 5%)"
        )
    return figures


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
    parser.add_argument(
        "--facades",
        nargs="+",
        metavar="VARIANT",
        help="also measure these bench/smac_settings.py variants (trial processes), side by side in rounds",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the --facades comparison")
    parser.add_argument(
        "--objective-cost-only",
        action="store_true",
        help="measure only what latency_ort_ms adds per trial and add it to the existing result file",
    )
    args = parser.parse_args()
    if args.objective_cost_only:
        add_objective_cost(args.backbone, rounds=3 if args.quick else 7)
        return
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
    if args.facades:
        result["facades"] = compare_facades(args, trials, ["greenshift", *args.facades])
    path = write_result("search_overhead", result)
    print(f"written {path}")


if __name__ == "__main__":
    main()
