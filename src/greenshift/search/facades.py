"""The search optimisers (``smac``, ``smac-bo``, ``random``): SMAC facades built from swappable parts.

Like SMAC's own facades, each optimiser is a class whose parts (intensifier, surrogate model,
acquisition function and its maximiser, initial and random design, multi-objective algorithm,
runhistory encoder, configuration selector) are built by small ``get_*`` methods, and
:meth:`SearchFacade.build` assembles SMAC's facade from them. SMAC's ``get_*`` are static methods of the
scenario alone; greenshift's parts also depend on the search (Hyperband's ``eta``, the objective
preference, the objectives known before training), so here they are methods of an object that holds
them. A variant is a subclass that overrides one method, passed to the search by class::

    class TenLocalSearches(SmacFacade):
        def get_acquisition_maximizer(self):
            return acquisition_maximizer(self.scenario, local_search_iterations=10)

    DSNNSearch(settings, facade_class=TenLocalSearches).run()

The optimisers are registered by name (:data:`SEARCH_OPTIMIZERS`, :func:`facade_for`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from smac import HyperparameterOptimizationFacade, MultiFidelityFacade, RandomFacade, Scenario
from smac.acquisition.function import EI
from smac.facade.abstract_facade import AbstractFacade

from greenshift.errors import ConfigError
from greenshift.search.acquisition import acquisition_maximizer
from greenshift.search.forest import single_thread_forest
from greenshift.search.hyperband import StoreFrontHyperband, first_bracket_configs
from greenshift.search.known_energy import (
    KnownEnergySurrogate,
    ModelledObjectiveEncoder,
    known_objective_indices,
)
from greenshift.search.parego import PreferenceParEGO

KnownObjectives = Callable[[Mapping[str, np.ndarray], int], np.ndarray]


class SearchFacade:
    """Builds the SMAC facade of one search optimiser; every part comes from an overridable ``get_*``.

    Without an override a part is what :attr:`smac_facade` (SMAC's facade class) builds for the scenario.
    ``known_objectives(columns, count)`` prices configurations given field by field with the objectives
    that need no training (:data:`~greenshift.search.known_energy.KNOWN_OBJECTIVES`, in the scenario's
    order; see :class:`~greenshift.search.known_energy.KnownEnergySurrogate`); a facade whose
    :attr:`uses_known_objectives` is true then learns only the one other objective and adds the known ones
    exactly (:mod:`greenshift.search.known_energy`).
    """

    #: The name ``SearchSettings.optimizer`` (``--optimizer``) selects this facade by.
    name: ClassVar[str] = ""
    #: SMAC's facade class that :meth:`build` instantiates and whose defaults the ``get_*`` start from.
    smac_facade: ClassVar[type[AbstractFacade]] = AbstractFacade
    #: Whether trials have budgets (epochs from ``min_epochs`` to ``max_epochs``); else all run at the maximum.
    multi_fidelity: ClassVar[bool] = False
    #: Whether the surrogate takes objectives known before training as known instead of learning them.
    uses_known_objectives: ClassVar[bool] = False

    def __init__(
        self,
        scenario: Scenario,
        *,
        eta: int = 3,
        objective_weights: Sequence[float] | None = None,
        verbose: bool = False,
        known_objectives: KnownObjectives | None = None,
    ):
        self.scenario = scenario
        self.eta = eta
        self.objective_weights = objective_weights
        self.verbose = verbose
        self.known_objectives = known_objectives
        #: ``(indices of the known objectives, index of the learned one)``, or None: all are learned.
        self.known_split = (
            known_objective_indices(list(scenario.objectives))
            if known_objectives is not None and self.uses_known_objectives
            else None
        )

    # -- parts, each overridable -------------------------------------------------------------
    def get_multi_objective_algorithm(self) -> Any:
        """ParEGO, with random weights around ``objective_weights`` when given (:class:`.PreferenceParEGO`)."""
        return PreferenceParEGO(self.scenario, self.objective_weights)

    def get_model(self) -> Any:
        """The surrogate model."""
        return self.smac_facade.get_model(self.scenario)

    def get_acquisition_function(self) -> Any:
        """The acquisition function."""
        return self.smac_facade.get_acquisition_function(self.scenario)

    def get_acquisition_maximizer(self) -> Any:
        """How the acquisition function is optimised."""
        return self.smac_facade.get_acquisition_maximizer(self.scenario)

    def get_initial_design(self) -> Any:
        """The configurations tried before the model proposes any."""
        return self.smac_facade.get_initial_design(self.scenario)

    def get_random_design(self) -> Any:
        """When a random configuration is interleaved with the model's."""
        return self.smac_facade.get_random_design(self.scenario)

    def get_intensifier(self) -> Any:
        """Which configuration runs next, at which budget and seed."""
        return self.smac_facade.get_intensifier(self.scenario)

    def get_runhistory_encoder(self) -> Any:
        """What the surrogate model learns from the trials told."""
        return self.smac_facade.get_runhistory_encoder(self.scenario)

    def get_config_selector(self) -> Any:
        """When the model is retrained and how often a new configuration is tried for."""
        return self.smac_facade.get_config_selector(self.scenario)

    # -- the facade ---------------------------------------------------------------------------
    def build(self) -> AbstractFacade:
        """SMAC's facade from the parts; trials are run by greenshift, so no target function is given."""
        multi_objective = self.get_multi_objective_algorithm()
        model = self.get_model()
        facade = self.smac_facade(
            self.scenario,
            None,
            model=model,
            acquisition_function=self.get_acquisition_function(),
            acquisition_maximizer=self.get_acquisition_maximizer(),
            initial_design=self.get_initial_design(),
            random_design=self.get_random_design(),
            intensifier=self.get_intensifier(),
            multi_objective_algorithm=multi_objective,
            runhistory_encoder=self.get_runhistory_encoder(),
            config_selector=self.get_config_selector(),
            overwrite=True,
            logging_level=logging.INFO if self.verbose else logging.ERROR,
        )
        if isinstance(model, KnownEnergySurrogate):
            model.attach(facade.runhistory, multi_objective)
        return facade


class _ModelBasedFacade(SearchFacade):
    """What ``smac`` and ``smac-bo`` share: a single-thread forest, a light acquisition optimisation and
    the energy known before training."""

    uses_known_objectives = True

    def get_model(self) -> Any:
        """SMAC's forest in one thread (:func:`.single_thread_forest`), or with known objectives the
        :class:`.KnownEnergySurrogate` around it."""
        if self.known_split is None:
            return single_thread_forest(self.scenario)
        known_indices, modelled_index = self.known_split
        assert self.known_objectives is not None  # known_split is None without them
        # The forest learns the normalised loss in [0, 1] directly, so neither it nor EI works in log space.
        return KnownEnergySurrogate(
            single_thread_forest(self.scenario, log_y=False),
            self.scenario.configspace,
            known=self.known_objectives,
            known_indices=known_indices,
            modelled_index=modelled_index,
            seed=self.scenario.seed,
        )

    def get_acquisition_function(self) -> Any:
        """SMAC's expected improvement, on the costs themselves rather than their logarithm with known
        objectives."""
        if self.known_split is None:
            return super().get_acquisition_function()
        return EI(xi=0.0, log=False)

    def get_acquisition_maximizer(self) -> Any:
        """SMAC's local-and-random search, lighter and in a fixed order (:mod:`.acquisition`)."""
        return acquisition_maximizer(self.scenario)

    def get_runhistory_encoder(self) -> Any:
        """SMAC's log-scaled scalarised costs, or with known objectives the learned one, normalised."""
        if self.known_split is None:
            return super().get_runhistory_encoder()
        return ModelledObjectiveEncoder(self.scenario, self.known_split[1])


_FACADES: dict[str, type[SearchFacade]] = {}


def _register(cls: type[SearchFacade]) -> type[SearchFacade]:
    _FACADES[cls.name] = cls
    return cls


@_register
class SmacFacade(_ModelBasedFacade):
    """``smac``: SMAC's multi-fidelity facade, Hyperband over epochs."""

    name = "smac"
    smac_facade = MultiFidelityFacade
    multi_fidelity = True

    def get_intensifier(self) -> Any:
        """Hyperband over the scenario's budgets without SMAC's incumbents (:class:`.StoreFrontHyperband`)."""
        return StoreFrontHyperband(self.scenario, eta=self.eta, instance_seed_order="shuffle_once")

    def get_initial_design(self) -> Any:
        """SMAC's random design, or with known objectives one of the first Hyperband bracket's size."""
        if self.known_split is None:
            return super().get_initial_design()
        # With only the loss to learn, the forest is useful after the first bracket's random configurations:
        # in 5 seeds (small CNN on digits, 270 epochs) this design of 9 reached random search's final
        # hypervolume at a median 0.19 of the budget, SMAC's 21 at 0.51 (bench/smac_settings.py).
        return MultiFidelityFacade.get_initial_design(
            self.scenario,
            n_configs=first_bracket_configs(self.scenario.min_budget, self.scenario.max_budget, self.eta),
        )


@_register
class SmacBOFacade(_ModelBasedFacade):
    """``smac-bo``: SMAC's hyperparameter-optimisation facade, every trial at the maximum budget."""

    name = "smac-bo"
    smac_facade = HyperparameterOptimizationFacade

    def get_intensifier(self) -> Any:
        """SMAC's intensifier, one call per configuration (trials are deterministic)."""
        return HyperparameterOptimizationFacade.get_intensifier(self.scenario, max_config_calls=1)


@_register
class RandomSearchFacade(SearchFacade):
    """``random``: SMAC's random facade, every trial at the maximum budget."""

    name = "random"
    smac_facade = RandomFacade

    def get_intensifier(self) -> Any:
        """SMAC's intensifier, one call per configuration (trials are deterministic)."""
        return RandomFacade.get_intensifier(self.scenario, max_config_calls=1)


def facade_for(name: str) -> type[SearchFacade]:
    """The facade class of the search optimiser ``name``; a :class:`ConfigError` for an unknown one."""
    if name in _FACADES:
        return _FACADES[name]
    import difflib

    close = difflib.get_close_matches(str(name), list(_FACADES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"optimizer {name!r} is not a search optimiser{hint}; available: {', '.join(_FACADES)}")


def make_facade(
    scenario: Scenario,
    *,
    optimizer: str,
    eta: int,
    objective_weights: Sequence[float] | None,
    verbose: bool,
    known_objectives: KnownObjectives | None = None,
) -> AbstractFacade:
    """The SMAC facade of the search optimiser ``optimizer`` (see :class:`SearchFacade`)."""
    return facade_for(optimizer)(
        scenario,
        eta=eta,
        objective_weights=objective_weights,
        verbose=verbose,
        known_objectives=known_objectives,
    ).build()
