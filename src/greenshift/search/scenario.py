"""The SMAC scenario of a search, and how many trials a run can afford."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ConfigSpace import ConfigurationSpace
from smac import Scenario

from greenshift.search.hyperband import hyperband_iteration


def affordable_trials(
    trials: int,
    max_total_epochs: int | None,
    *,
    multi_fidelity: bool,
    min_epochs: int,
    max_epochs: int,
    eta: int,
    continue_promoted: bool,
) -> int:
    """How many trials a run can afford: ``trials``, or fewer when the total epoch budget binds first.

    SMAC sizes its initial (random) design as a share of the scenario's trials; a run limited by
    ``max_total_epochs`` with a generous ``trials`` would otherwise spend its whole budget inside
    the initial design and never use the model. A multi-fidelity search pays the average epochs per
    trial of one Hyperband iteration, any other ``max_epochs`` per trial.
    """
    if max_total_epochs is None:
        return trials
    if multi_fidelity:
        iteration_trials, iteration_epochs = hyperband_iteration(
            min_epochs, max_epochs, eta, continue_promoted
        )
        epochs_per_trial = iteration_epochs / iteration_trials
    else:
        epochs_per_trial = float(max_epochs)
    return max(1, min(trials, int(max_total_epochs / epochs_per_trial)))


def make_scenario(
    space: ConfigurationSpace,
    *,
    multi_fidelity: bool,
    objectives: Sequence[str],
    output_directory: Path,
    seed: int,
    n_trials: int,
    min_epochs: int,
    max_epochs: int,
    n_workers: int,
) -> Scenario:
    """The SMAC scenario of a search: deterministic trials, budgets in epochs when ``multi_fidelity``."""
    budgets: dict[str, Any] = {}
    if multi_fidelity:
        budgets = {"min_budget": float(min_epochs), "max_budget": float(max_epochs)}
    return Scenario(
        space,
        name="smac",
        output_directory=output_directory,
        deterministic=True,
        objectives=list(objectives),
        n_trials=max(n_trials, 1),
        seed=seed,
        n_workers=n_workers,
        **budgets,
    )
