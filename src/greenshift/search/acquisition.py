"""How greenshift's model-based search optimises SMAC's acquisition function.

Two changes to SMAC's local-and-random search: lighter settings (:data:`ACQUISITION_SETTINGS`), and
local searches that start in an order that does not depend on Python's hash seed
(:class:`OrderedLocalSearch`), so that a search repeats exactly in any process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ConfigSpace import Configuration, ConfigurationSpace
from smac import Scenario
from smac.acquisition.maximizer import LocalAndSortedRandomSearch, LocalSearch

# The acquisition optimisation is most of the search's own time per trial (bench/search_overhead.py), so
# it is lighter than SMAC's HPO facade's (10000 challengers, 10 local searches of up to 10 plateau steps),
# each setting kept only after measuring the search's result (bench/smac_settings.py; docs/search.md):
# 1000 random challengers (SMAC's BlackBoxFacade default): in 5 seeds of smac on digits (small CNN,
# 90 epochs) they ended with the larger hypervolume in four; 5 local searches of up to 5 plateau steps:
# with the energy priced in advance, they reach random search's final hypervolume as soon as 5 searches
# of 10 steps (median 0.19 of 270 epochs in 5 seeds, final hypervolumes within 5 %) at 16 instead of 25 ms
# of search overhead per trial.
ACQUISITION_SETTINGS = {"challengers": 1000, "local_search_iterations": 5, "n_steps_plateau_walk": 5}


def _vector_order(config: Configuration) -> tuple[float, ...]:
    # A configuration's vector (inactive hyperparameters NaN, all others >= 0) identifies it.
    return tuple(np.nan_to_num(config.get_array(), nan=-1.0).tolist())


class OrderedLocalSearch(LocalSearch):
    """SMAC's local search, started from its start points in an order fixed by their values.

    SMAC collects the start points of its local searches (the best configurations seen so far plus the
    best random challengers) in a ``set`` and returns ``list(set)`` (``smac/acquisition/maximizer/
    local_search.py``, ``_get_init_points_from_previous_configs``, SMAC 2.4.1 line 301). A
    configuration's hash is the hash of its text (``ConfigSpace/configuration.py``,
    ``Configuration.__hash__``, ConfigSpace 1.2.0 line 248), and Python salts the hash of text per
    process unless ``PYTHONHASHSEED`` is fixed. The local searches share one random generator, so their
    order decides the neighbours they draw and, through ties, the configuration SMAC proposes: without
    this class the same seed proposed other configurations under another hash seed after the initial
    design. The start points are the same; only their order is fixed here, by their vectors.
    """

    def _get_initial_points(
        self,
        previous_configs: list[Configuration],
        n_points: int,
        additional_start_points: list[tuple[float, Configuration]] | None,
    ) -> list[Configuration]:
        points = super()._get_initial_points(previous_configs, n_points, additional_start_points)
        return sorted(points, key=_vector_order)


class OrderedLocalAndSortedRandomSearch(LocalAndSortedRandomSearch):
    """SMAC's local-and-random acquisition search whose local searches are :class:`OrderedLocalSearch`."""

    def __init__(
        self,
        configspace: ConfigurationSpace,
        *,
        seed: int,
        challengers: int,
        local_search_iterations: int,
        n_steps_plateau_walk: int,
        max_steps: int | None = None,
    ):
        super().__init__(
            configspace,
            challengers=challengers,
            local_search_iterations=local_search_iterations,
            n_steps_plateau_walk=n_steps_plateau_walk,
            max_steps=max_steps,
            seed=seed,
        )
        # SMAC builds its LocalSearch in its constructor and keeps it in this private attribute; the
        # replacement has the same settings and seed, so only the order of its start points differs.
        self._local_search = OrderedLocalSearch(
            configspace=configspace, max_steps=max_steps, n_steps_plateau_walk=n_steps_plateau_walk, seed=seed
        )


def acquisition_maximizer(scenario: Scenario, **changes: Any) -> LocalAndSortedRandomSearch:
    """SMAC's local-and-random acquisition search with greenshift's :data:`ACQUISITION_SETTINGS` (or ``changes``)."""
    return OrderedLocalAndSortedRandomSearch(
        scenario.configspace, seed=scenario.seed, **{**ACQUISITION_SETTINGS, **changes}
    )
