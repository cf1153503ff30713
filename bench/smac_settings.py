"""SMAC settings greenshift chose against their alternatives: the search's result, seed by seed.

For every seed, ``random`` and each ``smac`` variant search the same problem with the same total epoch
budget (small CNN on digits, 1 to 9 epochs, eta 3). Per seed and variant the script prints the final
hypervolume and the budget fraction at which the variant reaches ``random``'s final hypervolume,
then how many seeds each variant ends above greenshift's setting. docs/search.md quotes it.

Variants (the first is greenshift's setting, every other changes one or two of its settings, each a
subclass of greenshift's ``SmacFacade`` that overrides one part):

* ``greenshift``: 1000 random challengers, 5 local searches of up to 5 plateau steps per acquisition
  optimisation, the modelled energy priced before training (``greenshift.search.known_energy``) and
  an initial design of the first Hyperband bracket's size (9 random configurations here);
* ``energy_learned``: SMAC's forest learns the ParEGO scalarisation of loss and energy from the trials,
  with SMAC's initial design (a quarter of the trials the budget affords: 21 here);
* ``smac_initial_design``: the energy priced in advance, with SMAC's initial design;
* ``plateau_10``: local searches of up to 10 plateau steps (SMAC's walk; greenshift's setting before
  the energy was priced in advance);
* ``local_searches_10``: SMAC's 10 local searches of up to 10 plateau steps.

    python bench/smac_settings.py [--seeds 5] [--budget 270] [--variants NAME ...] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

from common import budget_limited_search, common_reference, hypervolume_at, hypervolume_curve, write_result
from greenshift.search.acquisition import acquisition_maximizer
from greenshift.search.facades import SearchFacade, SmacFacade
from search_efficiency import fraction_to_reach


class EnergyLearned(SmacFacade):
    """The forest learns the ParEGO scalarisation of all objectives, energy included."""

    uses_known_objectives = False


class SmacInitialDesign(SmacFacade):
    """SMAC's initial design (a quarter of the trials) although the energy is priced in advance."""

    def get_initial_design(self) -> Any:
        return self.smac_facade.get_initial_design(self.scenario)


class Plateau10(SmacFacade):
    """Local searches of up to 10 plateau steps."""

    def get_acquisition_maximizer(self) -> Any:
        return acquisition_maximizer(self.scenario, n_steps_plateau_walk=10)


class LocalSearches10(SmacFacade):
    """SMAC's 10 local searches of up to 10 plateau steps."""

    def get_acquisition_maximizer(self) -> Any:
        return acquisition_maximizer(self.scenario, n_steps_plateau_walk=10, local_search_iterations=10)


VARIANTS: dict[str, type[SearchFacade]] = {
    "greenshift": SmacFacade,
    "energy_learned": EnergyLearned,
    "smac_initial_design": SmacInitialDesign,
    "plateau_10": Plateau10,
    "local_searches_10": LocalSearches10,
}


def run(optimizer: str, seed: int, budget: int, facade_class: type[SearchFacade] | None = None) -> object:
    """One search, by ``facade_class`` when given; returns its SearchResult."""
    return budget_limited_search(optimizer=optimizer, seed=seed, budget=budget, facade_class=facade_class)


def main() -> None:
    """Run the variants over the seeds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant")
    parser.add_argument("--budget", type=int, default=270, help="total epochs per search")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS), help="variants")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 27 epochs, two variants")
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    budget = 27 if args.quick else args.budget
    chosen = ["greenshift", "local_searches_10"] if args.quick else args.variants
    names = list(dict.fromkeys(["greenshift", "local_searches_10", *chosen]))
    finals: dict[str, list[float]] = {name: [] for name in names}
    reach: dict[str, list[float | None]] = {name: [] for name in names}
    for seed in range(seeds):
        results = {"random": run("random", seed, budget)}
        for name in names:
            results[name] = run("smac", seed, budget, VARIANTS[name])
        reference = common_reference(list(results.values()))
        target = hypervolume_at(hypervolume_curve(results["random"], reference), budget)
        for name in names:
            curve = hypervolume_curve(results[name], reference)
            finals[name].append(hypervolume_at(curve, budget))
            reach[name].append(fraction_to_reach(curve, target, budget))
            print(
                f"seed {seed} {name:28s} final HV {finals[name][-1]:.4g} (random {target:.4g}), "
                f"reaches random's final at {reach[name][-1]}"
            )
    print(f"\nsmall_cnn on digits, {budget} epochs per search, {seeds} seeds")
    for name in names:
        above = {
            base: sum(v > b for v, b in zip(finals[name], finals[base], strict=True))
            for base in ("greenshift", "local_searches_10")
        }
        reached = sum(r is not None for r in reach[name])
        print(
            f"{name:28s} median final HV {statistics.median(finals[name]):.4g}; above greenshift in "
            f"{above['greenshift']} and above local_searches_10 in {above['local_searches_10']} of {seeds} "
            f"seeds; reaches random's final in {reached} of {seeds}"
        )
    path = write_result(
        "smac_settings",
        {
            "seeds": seeds,
            "budget_epochs": budget,
            "final_hypervolume": finals,
            "fraction_to_reach_random": reach,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
