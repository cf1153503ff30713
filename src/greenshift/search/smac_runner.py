"""SMAC3 wiring: facades for the three optimisers and the runners that execute trials.

greenshift drives SMAC through ask/tell (SMAC chooses configurations and budgets; greenshift runs,
records and limits) and executes trials with SMAC's own runners: ``TargetFunctionRunner`` in
process, ``DaskParallelRunner`` on a Dask cluster.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ConfigSpace import Configuration, ConfigurationSpace
from smac import HyperparameterOptimizationFacade, MultiFidelityFacade, RandomFacade, Scenario
from smac.acquisition.function import EI
from smac.acquisition.maximizer import LocalAndSortedRandomSearch
from smac.intensifier.hyperband import Hyperband
from smac.model.random_forest import RandomForest
from smac.multi_objective.parego import ParEGO
from smac.runhistory import StatusType, TrialInfo, TrialValue
from smac.runner import DaskParallelRunner, TargetFunctionRunner

from greenshift.search.known_energy import (
    KnownEnergySurrogate,
    ModelledObjectiveEncoder,
    known_objective_indices,
)

OPTIMIZERS = ("smac", "smac-bo", "random")


class PreferenceParEGO(ParEGO):
    """ParEGO whose random weights are drawn around a user's preference.

    SMAC normalises every objective to [0, 1] over the observed successful trials before ParEGO
    scalarises them, so weights compare like with like. Without a preference the weights are uniform
    on the simplex (plain ParEGO); with one they come from a Dirichlet distribution centred on it, so
    the search still explores the front but spends more effort where the user cares.
    """

    def __init__(
        self, scenario: Scenario, weights: Sequence[float] | None = None, *, concentration: float = 20.0
    ):
        super().__init__(scenario=scenario)
        self._preference = (
            None if weights is None else np.asarray(weights, dtype=float) / float(np.sum(weights))
        )
        self._concentration = concentration

    @property
    def meta(self) -> dict[str, Any]:
        meta = super().meta
        meta["preference"] = None if self._preference is None else self._preference.tolist()
        return meta

    @property
    def weights(self) -> np.ndarray | None:
        """The weights of the current iteration (None before SMAC's first iteration)."""
        return self._theta

    @property
    def rho(self) -> float:
        """Weight of the augmentation term ``rho * sum_i(w_i f_i)`` of the scalarisation."""
        return float(self._rho)

    def update_on_iteration_start(self) -> None:
        if self._preference is None:
            super().update_on_iteration_start()
            return
        self._theta = self._rng.dirichlet(self._preference * self._concentration + 1e-3)


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


def affordable_trials(
    trials: int,
    max_total_epochs: int | None,
    *,
    optimizer: str,
    min_epochs: int,
    max_epochs: int,
    eta: int,
    continue_promoted: bool,
) -> int:
    """How many trials a run can afford: ``trials``, or fewer when the total epoch budget binds first.

    SMAC sizes its initial (random) design as a share of the scenario's trials; a run limited by
    ``--max-total-epochs`` with a generous ``--trials`` would otherwise spend its whole budget inside
    the initial design and never use the model.
    """
    if max_total_epochs is None:
        return trials
    if optimizer == "smac":
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
    optimizer: str,
    objectives: Sequence[str],
    output_directory: Path,
    seed: int,
    n_trials: int,
    min_epochs: int,
    max_epochs: int,
    n_workers: int,
) -> Scenario:
    """The SMAC scenario of a search: deterministic trials, budgets in epochs for ``smac`` only."""
    budgets: dict[str, Any] = {}
    if optimizer == "smac":
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


def make_facade(
    scenario: Scenario,
    *,
    optimizer: str,
    eta: int,
    objective_weights: Sequence[float] | None,
    verbose: bool,
    known_objectives: Callable[[Mapping[str, np.ndarray], int], np.ndarray] | None = None,
) -> Any:
    """The SMAC facade for ``optimizer``; trials are run by greenshift, so no target function is given.

    ``known_objectives(columns, count)`` prices configurations given field by field with the objectives
    that need no training (:data:`~greenshift.search.known_energy.KNOWN_OBJECTIVES`, in the scenario's
    order; see :class:`~greenshift.search.known_energy.KnownEnergySurrogate`); when given and
    exactly one other objective remains, the model-based optimisers learn only that one and add the known
    ones exactly (:mod:`greenshift.search.known_energy`).
    """
    logging_level: int = logging.INFO if verbose else logging.ERROR
    mo = PreferenceParEGO(scenario, objective_weights)
    common: dict[str, Any] = {
        "multi_objective_algorithm": mo,
        "overwrite": True,
        "logging_level": logging_level,
    }
    split = known_objective_indices(list(scenario.objectives)) if known_objectives is not None else None
    surrogate: KnownEnergySurrogate | None = None
    if split is None or optimizer not in ("smac", "smac-bo"):
        model: RandomForest | KnownEnergySurrogate = single_thread_forest(scenario)
    else:
        known_indices, modelled_index = split
        # The forest learns the normalised loss in [0, 1] directly, so neither it nor EI works in log space.
        surrogate = KnownEnergySurrogate(
            single_thread_forest(scenario, log_y=False),
            scenario.configspace,
            known=known_objectives,
            known_indices=known_indices,
            modelled_index=modelled_index,
            seed=scenario.seed,
        )
        model = surrogate
        common["runhistory_encoder"] = ModelledObjectiveEncoder(scenario, modelled_index)
        common["acquisition_function"] = EI(xi=0.0, log=False)
        if optimizer == "smac":
            # With only the loss to learn, the forest is useful after the first bracket's random configurations:
            # in 5 seeds (small CNN on digits, 270 epochs) this design of 9 reached random search's final
            # hypervolume at a median 0.19 of the budget, SMAC's 21 at 0.51 (bench/smac_settings.py).
            common["initial_design"] = MultiFidelityFacade.get_initial_design(
                scenario,
                n_configs=first_bracket_configs(scenario.min_budget, scenario.max_budget, eta),
            )
    maximizer = acquisition_maximizer(scenario)
    if optimizer in ("smac", "smac-bo"):
        if optimizer == "smac":
            facade_type: Any = MultiFidelityFacade
            intensifier: Any = StoreFrontHyperband(scenario, eta=eta, instance_seed_order="shuffle_once")
        else:
            facade_type = HyperparameterOptimizationFacade
            intensifier = HyperparameterOptimizationFacade.get_intensifier(scenario, max_config_calls=1)
        facade = facade_type(
            scenario, None, intensifier=intensifier, model=model, acquisition_maximizer=maximizer, **common
        )
        if surrogate is not None:
            surrogate.attach(facade.runhistory, mo)
        return facade
    intensifier = RandomFacade.get_intensifier(scenario, max_config_calls=1)
    return RandomFacade(scenario, None, intensifier=intensifier, **common)


# The acquisition optimisation is most of the search's own time per trial (bench/search_overhead.py), so
# it is lighter than SMAC's HPO facade's (10000 challengers, 10 local searches of up to 10 plateau steps),
# each setting kept only after measuring the search's result (bench/smac_settings.py; docs/search.md):
# 1000 random challengers (SMAC's BlackBoxFacade default): in 5 seeds of smac on digits (small CNN,
# 90 epochs) they ended with the larger hypervolume in four; 5 local searches of up to 5 plateau steps:
# with the energy priced in advance, they reach random search's final hypervolume as soon as 5 searches
# of 10 steps (median 0.19 of 270 epochs in 5 seeds, final hypervolumes within 5 %) at 16 instead of 25 ms
# of search overhead per trial.
ACQUISITION_SETTINGS = {"challengers": 1000, "local_search_iterations": 5, "n_steps_plateau_walk": 5}


def acquisition_maximizer(scenario: Scenario, **changes: Any) -> LocalAndSortedRandomSearch:
    """SMAC's local-and-random acquisition search with greenshift's :data:`ACQUISITION_SETTINGS` (or ``changes``)."""
    return LocalAndSortedRandomSearch(
        scenario.configspace, seed=scenario.seed, **{**ACQUISITION_SETTINGS, **changes}
    )


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


class SerialRandomForest(RandomForest):
    """SMAC's random forest, predicting tree by tree in a plain loop.

    SMAC's forest predicts through a joblib ``Parallel`` call even with ``n_jobs=1``, and
    scikit-learn's task wrapper resets the warning filters for every tree: with 10 trees and the few
    hundred candidates of one local-search step, that bookkeeping cost more than the tree lookups
    (about 15 % of ``ask()`` in bench/search_overhead.py's profile). The loop gives the same numbers
    (tests compare it with SMAC's path). It reads the fitted scikit-learn forest that SMAC keeps in
    ``_rf``; if a SMAC version lays that out differently, SMAC's own prediction is used.
    """

    def _predict(
        self, X: np.ndarray, covariance_type: str | None = "diagonal"
    ) -> tuple[np.ndarray, np.ndarray | None]:
        forest = getattr(self, "_rf", None)
        trees = getattr(forest, "estimators_", None)
        if not trees or covariance_type != "diagonal" or X.ndim != 2 or X.shape[1] != len(self._types):
            return super()._predict(X, covariance_type)
        # The same conversion as SMAC's validation: trees compare float32 features.
        features = np.ascontiguousarray(self._impute_inactive(X), dtype=np.float32)
        if not np.isfinite(features).all():
            return super()._predict(X, covariance_type)  # SMAC's path raises its own error
        per_tree = np.empty((features.shape[0], len(trees)), dtype=np.float64)
        for index, tree in enumerate(trees):
            per_tree[:, index] = tree.predict(features, check_input=False)
        return per_tree.mean(axis=1).reshape(-1, 1), per_tree.var(axis=1).reshape(-1, 1)


def single_thread_forest(scenario: Scenario, *, log_y: bool = True) -> RandomForest:
    """SMAC's default random forest, fitted and queried in one thread.

    Settings that differ from SMAC's, all for speed (bench/search_overhead.py measures it):
    ``n_jobs=1``: SMAC's forest uses all cores through joblib, and with a few trees and a few hundred
    trials the thread start-up and joblib's polling cost more than the work, while the cores train DSNNs;
    ``max_leaf_nodes=None`` instead of 2**20: that limit never binds for a search's few hundred points,
    but it switches scikit-learn to its best-first tree builder, which took 0.9 s per forest fit here
    against 15 ms for the depth-first builder (same trees in distribution); and predictions without
    joblib (:class:`SerialRandomForest`). ``log_y`` says whether the encoder hands it log-scaled costs
    (SMAC's facades for ``smac`` and ``smac-bo``).
    """
    return SerialRandomForest(
        log_y=log_y,
        n_trees=10,
        bootstrapping=True,
        ratio_features=1.0,
        min_samples_split=2,
        min_samples_leaf=1,
        max_depth=2**20,
        max_leaf_nodes=None,
        configspace=scenario.configspace,
        instance_features=scenario.instance_features,
        seed=scenario.seed,
        n_jobs=1,
    )


class ResilientDaskRunner(DaskParallelRunner):
    """SMAC's Dask runner, except that a trial whose worker died is reported as crashed, and trials
    are submitted as impure tasks (see :meth:`submit_trial`).

    SMAC's runner re-raises the exception of a lost future (e.g. ``KilledWorker``) out of the
    optimisation loop, which would end the whole search; greenshift records it and goes on.
    """

    def __init__(self, single_worker: TargetFunctionRunner, dask_client: Any):
        super().__init__(single_worker=single_worker, dask_client=dask_client)
        self._submitted: dict[Any, TrialInfo] = {}

    def submit_trial(self, trial_info: TrialInfo, **dask_data_to_scatter: dict[str, Any]) -> None:
        """Submit one trial as an impure Dask task, after waiting for a free worker if none is.

        A trial is not a pure function (it writes checkpoints, measures energy), and Dask's default
        ``pure=True`` names each task by hashing the pickled runner and configuration: about 10 ms of
        the search process per trial (py-spy), taken from the cores the workers train on.
        """
        if self.count_available_workers() <= 0 and self._pending_trials:
            from distributed import wait  # Dask is an optional extra

            wait(self._pending_trials, return_when="FIRST_COMPLETED")
            self._process_pending_trials()
        future = self._client.submit(
            self._single_worker.run_wrapper, trial_info=trial_info, pure=False, **dask_data_to_scatter
        )
        self._pending_trials.append(future)
        self._submitted[future] = trial_info

    def _process_pending_trials(self) -> None:
        for future in [f for f in self._pending_trials if f.done()]:
            info = self._submitted.pop(future, None)
            self._pending_trials.remove(future)
            try:
                self._results_queue.append(future.result())
            except Exception as exc:  # lost worker, cancelled future, unpicklable result
                if info is None:
                    raise
                value = TrialValue(
                    cost=self._crash_cost,
                    status=StatusType.CRASHED,
                    additional_info={"greenshift": {"status": "crashed", "error": f"worker lost: {exc!r}"}},
                )
                self._results_queue.append((info, value))


def make_runner(
    scenario: Scenario, target: Callable[..., Any], dask_client: Any | None
) -> TargetFunctionRunner | ResilientDaskRunner:
    """SMAC's in-process runner, or its Dask runner on ``dask_client``."""
    single = TargetFunctionRunner(
        scenario=scenario, target_function=target, required_arguments=["seed", "budget"]
    )
    if dask_client is None:
        return single
    return ResilientDaskRunner(single, dask_client)


def configuration_values(config: Configuration) -> dict[str, Any]:
    """Active hyperparameter values of a SMAC configuration as plain Python values."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in dict(config).items()}
