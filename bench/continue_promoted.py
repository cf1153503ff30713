"""Hyperband with promoted configurations retrained from scratch vs continued from their checkpoint.

Both modes get the same total epoch budget (``--max-total-epochs``) on the same problem, over several
seeds; the script prints the hypervolume reached at fractions of that budget (median and spread over
seeds) for each mode, side by side, and which mode is better at the full budget.

    python bench/continue_promoted.py [--seeds 5] [--budget 60] [--quick]
"""

from __future__ import annotations

import argparse
import statistics

from common import budget_limited_search, common_reference, hypervolume_at, hypervolume_curve, write_result

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def run_mode(continue_promoted: bool, seed: int, budget: int, backbone: str) -> object:
    """One search in one mode; returns its SearchResult."""
    return budget_limited_search(
        seed=seed, budget=budget, backbone=backbone, continue_promoted=continue_promoted
    )


def main() -> None:
    """Run both modes over the seeds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds per mode")
    parser.add_argument("--budget", type=int, default=60, help="total epochs per search")
    parser.add_argument("--backbone", default="small_cnn", help="backbone to train")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 30 epochs, for a smoke run")
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    budget = 30 if args.quick else args.budget
    table: dict[str, list[list[float]]] = {"retrain": [], "continue": []}
    for seed in range(seeds):
        runs = {
            "retrain": run_mode(False, seed, budget, args.backbone),
            "continue": run_mode(True, seed, budget, args.backbone),
        }
        reference = common_reference(list(runs.values()))
        for mode, result in runs.items():
            curve = hypervolume_curve(result, reference)
            table[mode].append([hypervolume_at(curve, f * budget) for f in FRACTIONS])
            print(
                f"seed {seed} {mode:8s} trials {len(result.completed):3d} HV@budget {table[mode][-1][-1]:.4g}"
            )
    print(f"\nhypervolume at a fraction of {budget} epochs, median [min, max] over {seeds} seeds")
    print("fraction  " + "  ".join(f"{mode:>26s}" for mode in table))
    summary = {}
    for i, fraction in enumerate(FRACTIONS):
        cells = []
        for mode, rows in table.items():
            values = [row[i] for row in rows]
            summary.setdefault(mode, []).append(
                {
                    "fraction": fraction,
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
            )
            cells.append(f"{statistics.median(values):.4g} [{min(values):.4g}, {max(values):.4g}]")
        print(f"{fraction:8.2f}  " + "  ".join(f"{c:>26s}" for c in cells))
    final = {mode: summary[mode][-1]["median"] for mode in summary}
    # Over the whole budget: the mean of the median hypervolume at the budget fractions (an area).
    area = {mode: statistics.fmean(point["median"] for point in summary[mode]) for mode in summary}
    if final["continue"] != final["retrain"]:
        better, decided_by = max(final, key=final.get), "median hypervolume at the full budget"
    elif area["continue"] != area["retrain"]:
        better, decided_by = max(area, key=area.get), "tie at the full budget; hypervolume over the budget"
    else:
        better, decided_by = "tie", "equal at every budget fraction"
    ratio = final["continue"] / final["retrain"] if final["retrain"] > 0 else float("inf")
    print(
        f"continue / retrain median HV at the full budget: {ratio:.3f}; over the budget: "
        f"{area['continue'] / area['retrain']:.3f} -> better: {better} ({decided_by})"
    )
    path = write_result(
        "continue_promoted",
        {
            "seeds": seeds,
            "budget_epochs": budget,
            "backbone": args.backbone,
            "summary": summary,
            "per_seed": table,
            "better": better,
            "decided_by": decided_by,
            "area": area,
            "ratio_continue_over_retrain": ratio,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
