"""Hyperband as greenshift runs it: SMAC's intensifier without its incumbents, and its arithmetic."""

from __future__ import annotations

import math
from typing import Any

from ConfigSpace import Configuration
from smac.intensifier.abstract_intensifier import AbstractIntensifier
from smac.intensifier.hyperband import Hyperband


class StoreFrontHyperband(Hyperband):
    """SMAC's Hyperband without SMAC's incumbent bookkeeping.

    With several objectives and budgets, SMAC's incumbent update fails: under "highest_observed_budget"
    it asserts on an empty set of instance-seed-budget keys, under "highest_budget" it averages empty
    cost lists (SMAC3 issue 1050). greenshift never uses SMAC's incumbents: its Pareto front comes from
    the run store, and successive halving promotes by its own per-stage Pareto ranking of the
    runhistory, so skipping the update changes no decision of the search.
    """

    def update_incumbents(self, config: Configuration) -> None:
        return


def bracket_configurations(intensifier: AbstractIntensifier) -> list[dict[str, Any]] | None:
    """The configurations that successive halving's brackets still hold, i.e. may still promote.

    Read through SMAC's public ``get_state()``, whose ``tracker`` maps ``"bracket,stage"`` to pairs of
    (seed, configurations as dicts). None for an intensifier without brackets (``smac-bo``, ``random``).
    """
    tracker = intensifier.get_state().get("tracker")
    if tracker is None:
        return None
    return [config for pairs in tracker.values() for _seed, configs in pairs for config in configs]


def _hyperband_s_max(min_epochs: float, max_epochs: float, eta: int) -> int:
    return math.floor(math.log(max_epochs / min_epochs) / math.log(eta) + 1e-9)


def first_bracket_configs(min_epochs: float, max_epochs: float, eta: int) -> int:
    """How many configurations Hyperband's first (most exploratory) bracket starts: ``eta**s_max``."""
    return int(eta ** _hyperband_s_max(min_epochs, max_epochs, eta))


def hyperband_iteration(
    min_epochs: int, max_epochs: int, eta: int, continue_promoted: bool
) -> tuple[int, float]:
    """Trials and epochs of one full Hyperband iteration (all brackets) over ``[min_epochs, max_epochs]``.

    Bracket ``s`` (from ``s_max = floor(log_eta(max/min))`` down to 0) starts
    ``ceil((s_max + 1) / (s + 1) * eta**s)`` configurations at ``max * eta**-s`` epochs and keeps a
    1/eta share per stage. A promotion costs the stage's epochs, or only the extra epochs when
    promoted configurations continue from their checkpoint.
    """
    s_max = _hyperband_s_max(min_epochs, max_epochs, eta)
    trials, epochs = 0, 0.0
    for s in range(s_max, -1, -1):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s)
        previous_budget = 0.0
        for stage in range(s + 1):
            count = math.floor(n * eta**-stage)
            budget = max_epochs * eta ** (stage - s)
            trials += count
            epochs += count * (budget - previous_budget if continue_promoted else budget)
            previous_budget = budget
    return trials, epochs
