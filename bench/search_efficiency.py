"""smac vs smac-bo vs random with the same total epoch budget: hypervolume over consumed epochs.

For every seed the three optimisers search the same problem with ``--max-total-epochs`` epochs; the
hypervolume of each run's max-budget front is computed against one reference point per seed (loss 1.0,
1.1x the default's energy). Prints median and spread over seeds at fractions of the budget, and the
budget fraction ``smac`` needs to reach ``random``'s final hypervolume (target: <= 1/3). Writes
bench/results/search_efficiency.json and a figure bench/results/search_efficiency.png.

    python bench/search_efficiency.py [--seeds 5] [--budget 270] [--backbone small_cnn] [--quick]
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Sequence

from common import (
    RESULTS,
    budget_limited_search,
    common_reference,
    hypervolume_at,
    hypervolume_curve,
    write_result,
)
from greenshift.store.front import BudgetStep

OPTIMIZERS = ("smac", "smac-bo", "random")
FRACTIONS = (0.1, 0.2, 1 / 3, 0.5, 0.75, 1.0)


def run_one(optimizer: str, seed: int, budget: int, backbone: str, max_epochs: int) -> object:
    """One search; returns its SearchResult."""
    return budget_limited_search(
        optimizer=optimizer, seed=seed, budget=budget, backbone=backbone, max_epochs=max_epochs
    )


def fraction_to_reach(curve: Sequence[BudgetStep], target: float, budget: float) -> float | None:
    """Smallest budget fraction at which ``curve`` reaches ``target`` (None if never)."""
    for step in curve:
        if step.hypervolume >= target and target > 0:
            return step.epochs / budget
    return None


def main() -> None:
    """Run all optimisers over the seeds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per optimiser")
    parser.add_argument("--budget", type=int, default=270, help="total epochs per search")
    parser.add_argument("--max-epochs", type=int, default=9, help="maximum budget of one trial")
    parser.add_argument("--backbone", default="small_cnn", help="backbone to train")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 27 epochs, for a smoke run")
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    budget = 27 if args.quick else args.budget
    curves: dict[str, list[Sequence[BudgetStep]]] = {name: [] for name in OPTIMIZERS}
    reach: list[float | None] = []
    for seed in range(seeds):
        runs = {name: run_one(name, seed, budget, args.backbone, args.max_epochs) for name in OPTIMIZERS}
        reference = common_reference(list(runs.values()))
        for name, result in runs.items():
            curves[name].append(hypervolume_curve(result, reference))
        random_final = hypervolume_at(curves["random"][-1], budget)
        reach.append(fraction_to_reach(curves["smac"][-1], random_final, budget))
        finals = "  ".join(f"{n} {hypervolume_at(curves[n][-1], budget):.4g}" for n in OPTIMIZERS)
        print(f"seed {seed}: final HV  {finals}  smac reaches random's final at {reach[-1]}")
    summary: dict[str, list[dict[str, float]]] = {}
    print(
        f"\nhypervolume after a fraction of {budget} epochs, median [min, max] over {seeds} seeds ({args.backbone})"
    )
    print("fraction " + "".join(f"  {n:>32s}" for n in OPTIMIZERS))
    for fraction in FRACTIONS:
        cells = []
        for name in OPTIMIZERS:
            values = [hypervolume_at(c, fraction * budget) for c in curves[name]]
            summary.setdefault(name, []).append(
                {
                    "fraction": fraction,
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
            )
            cells.append(f"{statistics.median(values):.4g} [{min(values):.4g}, {max(values):.4g}]")
        print(f"{fraction:8.2f} " + "".join(f"  {c:>32s}" for c in cells))
    # A seed in which smac never reaches random's final hypervolume counts as an infinite fraction.
    median = statistics.median([math.inf if r is None else r for r in reach])
    median_reach = None if math.isinf(median) else median
    verdict = "never (in most seeds)" if median_reach is None else f"{median_reach:.2f} of the budget"
    reached = sum(r is not None for r in reach)
    print(
        f"budget fraction smac needs to reach random's final hypervolume (median over {seeds} seeds): {verdict} "
        f"(target <= 0.33); reached at all in {reached} of {seeds} seeds"
    )
    figure = plot(curves, budget, args.backbone)
    path = write_result(
        "search_efficiency",
        {
            "seeds": seeds,
            "budget_epochs": budget,
            "backbone": args.backbone,
            "max_epochs": args.max_epochs,
            "summary": summary,
            "smac_fraction_to_reach_random": reach,
            "median_fraction": median_reach,
            "figure": str(figure.name),
        },
    )
    print(f"written {path} and {figure}")


def plot(curves: dict[str, list[Sequence[BudgetStep]]], budget: int, backbone: str):
    """Median hypervolume over consumed epochs per optimiser, with the min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.linspace(0, budget, 61)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, runs in curves.items():
        values = np.array([[hypervolume_at(c, b) for b in grid] for c in runs])
        ax.plot(grid, np.median(values, axis=0), label=name)
        ax.fill_between(grid, values.min(axis=0), values.max(axis=0), alpha=0.2)
    ax.set_xlabel("epochs consumed")
    ax.set_ylabel("hypervolume (loss, energy_model_j)")
    ax.set_title(f"digits / {backbone}: median and range over {len(next(iter(curves.values())))} seeds")
    ax.legend()
    fig.tight_layout()
    path = RESULTS / "search_efficiency.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main()
