"""Searching with the modelled energy known before training.

``energy_model_j`` is a function of the configuration alone (shift depth, weight bits, activation
bits), so SMAC does not need to learn it from trials. With ParEGO, SMAC's random forest otherwise
learns the scalarised cost ``max_i(w_i f_i) + rho * sum_i(w_i f_i)`` of all objectives, energy
included, from the few trials it has; here the forest learns only the objective that needs training
(the loss), and the scalarisation adds the exact energy of every candidate:

- :class:`ConfigurationEnergy` prices a configuration without training (one operation count per
  shift depth, then only arithmetic);
- :class:`ModelledObjectiveEncoder` hands the forest the normalised loss instead of the scalarised cost;
- :class:`KnownEnergySurrogate` predicts the scalarised cost from the forest's loss prediction and the
  exact energies, with the same normalisation and ParEGO weights SMAC uses.

If ``L ~ N(m, s^2)`` is the predicted weighted loss and ``c`` the largest weighted known objective,
the scalarised cost's mean is ``E[max(L, c)] = c + (m - c) Phi(d) + s phi(d)`` with ``d = (m - c) / s``,
plus ``rho`` times the weighted sum; its variance is the loss's, scaled by the slope
``Phi(d) + rho`` of the mean in ``m`` (first order). Expected improvement then works on these as on
any surrogate's prediction.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ConfigSpace import ConfigurationSpace
from scipy.special import ndtr
from smac.model.abstract_model import AbstractModel
from smac.multi_objective.abstract_multi_objective_algorithm import AbstractMultiObjectiveAlgorithm
from smac.runhistory import RunHistory
from smac.runhistory.encoder import RunHistoryEncoder

from greenshift.config import (
    ACTIVATION_FRACTION_BITS_RANGE,
    ACTIVATION_INTEGER_BITS_RANGE,
    MODELLED_ENERGY_FIELDS,
    WEIGHT_BITS_RANGE,
    DSNNConfig,
)
from greenshift.errors import ConfigError
from greenshift.search.space import config_from_values

# The objectives greenshift can price from a configuration alone.
KNOWN_OBJECTIVES = ("energy_model_j",)
# The configuration fields the modelled energy depends on.
ENERGY_FIELDS = MODELLED_ENERGY_FIELDS
_MAX_ACT_BITS = ACTIVATION_INTEGER_BITS_RANGE[1] + ACTIVATION_FRACTION_BITS_RANGE[1]


def known_objective_indices(objectives: Sequence[str]) -> tuple[list[int], int] | None:
    """``(indices of known objectives, index of the one modelled objective)``, or None if not applicable.

    The surrogate applies when at least one objective is known before training and exactly one is not.
    """
    known = [i for i, name in enumerate(objectives) if name in KNOWN_OBJECTIVES]
    modelled = [i for i, name in enumerate(objectives) if name not in KNOWN_OBJECTIVES]
    if not known or len(modelled) != 1:
        return None
    return known, modelled[0]


class ConfigurationEnergy:
    """``energy_model_j`` of a configuration of ``backbone``, computed without training.

    Counts the network's operations once per shift depth (the counts do not depend on the bit widths)
    and prices them at the configuration's widths with the energy table; the result equals
    :func:`greenshift.objectives.model_energy_j` of the built model.
    """

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        input_shape: Sequence[int],
        *,
        energy_table: Any = None,
        fixed_extra: Mapping[str, Any] | None = None,
    ):
        from greenshift.objectives.energy_model import resolve_energy_table

        self.backbone = backbone
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self._energy_table = resolve_energy_table(energy_table)
        self._fixed_extra = dict(fixed_extra or {})
        self._shiftable_layers: int | None = None
        self._table_j: np.ndarray | None = None
        self._ops_by_depth: dict[int, tuple[float, list[Any]]] = {}
        self._base = config_from_values({}, self._fixed_extra)

    def __call__(self, values: Mapping[str, Any]) -> float:
        """Energy in joules per image of the configuration ``values`` (missing fields take defaults)."""
        config = config_from_values(values, self._fixed_extra)
        depth = self._all_layers() if config.shift_depth is None else int(config.shift_depth)
        if depth > self._all_layers():
            raise ConfigError(
                f"shift_depth={depth} exceeds the {self._all_layers()} shiftable layers of {self.backbone}"
            )
        act_bits = config.activation_integer_bits + config.activation_fraction_bits
        return float(self._priced(np.array([depth]), np.array([config.weight_bits]), np.array([act_bits]))[0])

    def of_columns(self, columns: Mapping[str, np.ndarray], count: int) -> np.ndarray:
        """Energies in joules per image of ``count`` configurations given field by field.

        ``columns`` maps fields of :data:`ENERGY_FIELDS` to arrays of valid values as the search space
        produces them; a missing field or a NaN (inactive) takes the search's fixed or default value.
        """
        resolved = {}
        for name in ENERGY_FIELDS:
            default = getattr(self._base, name)
            if name == "shift_depth" and default is None:
                default = self._all_layers()
            given = columns.get(name)
            if given is None or name in self._fixed_extra:
                resolved[name] = np.full(count, default, dtype=np.int64)
            else:
                given = np.asarray(given, dtype=float)
                resolved[name] = np.where(np.isnan(given), default, given).astype(np.int64)
        act_bits = resolved["activation_integer_bits"] + resolved["activation_fraction_bits"]
        return self._priced(resolved["shift_depth"], resolved["weight_bits"], act_bits)

    def _priced(self, depth: np.ndarray, weight_bits: np.ndarray, act_bits: np.ndarray) -> np.ndarray:
        # A dense table over all (depth, weight bits, activation bits) answers a whole batch with one
        # lookup; finding and pricing a batch's distinct keys one by one cost more than the forest's prediction.
        if self._table_j is None:
            self._table_j = np.full(
                (self._all_layers() + 1, WEIGHT_BITS_RANGE[1] + 1, _MAX_ACT_BITS + 1), np.nan
            )
        prices = self._table_j[depth, weight_bits, act_bits]
        missing = np.isnan(prices)
        if missing.any():
            keys = zip(
                depth[missing].tolist(),
                weight_bits[missing].tolist(),
                act_bits[missing].tolist(),
                strict=True,
            )
            for key in set(keys):
                self._table_j[key] = self._price(*key)
            prices = self._table_j[depth, weight_bits, act_bits]
        return prices

    def _price(self, depth: int, weight_bits: int, act_bits: int) -> float:
        # The model code is imported on first use, as elsewhere in greenshift.search, so that importing
        # the search (the CLI's start-up) does not load torch.
        from greenshift.objectives.energy_model import energy_with_shift_settings_j

        fixed_j, shift_ops = self._ops(depth)
        return fixed_j + energy_with_shift_settings_j(shift_ops, weight_bits, act_bits, self._energy_table)

    def _all_layers(self) -> int:
        from greenshift.models import get_model
        from greenshift.shift import count_shiftable_layers

        if self._shiftable_layers is None:
            model = get_model(self.backbone, num_classes=self.num_classes, in_channels=self.input_shape[0])
            self._shiftable_layers = count_shiftable_layers(model)
        return self._shiftable_layers

    def _ops(self, depth: int) -> tuple[float, list[Any]]:
        """The energy of the layers that stay float at ``depth`` (joules) and the shift layers' counts."""
        import torch

        from greenshift.objectives.energy_model import PICO, count_ops, layer_energy
        from greenshift.train.loop import build_model

        split = self._ops_by_depth.get(depth)
        if split is None:
            with torch.random.fork_rng():  # building a model draws initial weights: leave the caller's RNG be
                model = build_model(
                    DSNNConfig(shift_depth=depth), self.backbone, self.num_classes, self.input_shape[0]
                )
            ops = count_ops(model, self.input_shape)
            # Only the shift layers' cost depends on the widths; pricing the rest once halves a key's cost.
            fixed_j = (
                sum(
                    layer_energy(layer, self._energy_table).total_pj for layer in ops if layer.kind != "shift"
                )
                * PICO
            )
            split = (fixed_j, [layer for layer in ops if layer.kind == "shift"])
            self._ops_by_depth[depth] = split
        return split


class _ModelledObjective(AbstractMultiObjectiveAlgorithm):
    """Stands in for ParEGO inside the runhistory encoder: yields the modelled objective's normalised cost.

    SMAC draws new ParEGO weights through the encoder's algorithm at every iteration; they are passed
    on to the real ParEGO, whose weights :class:`KnownEnergySurrogate` reads.
    """

    def __init__(self, parego: Any, modelled_index: int):
        super().__init__()
        self.parego = parego
        self._index = modelled_index

    @property
    def meta(self) -> dict[str, Any]:
        return {**self.parego.meta, "modelled_objective_index": self._index}

    def update_on_iteration_start(self) -> None:
        self.parego.update_on_iteration_start()

    def __call__(self, values: list[float]) -> float:
        return float(values[self._index])


class ModelledObjectiveEncoder(RunHistoryEncoder):
    """SMAC's plain runhistory encoder, whose response values are the modelled objective, normalised."""

    def __init__(self, scenario: Any, modelled_index: int, **kwargs: Any):
        super().__init__(scenario, **kwargs)
        self._modelled_index = modelled_index

    @property
    def multi_objective_algorithm(self) -> AbstractMultiObjectiveAlgorithm | None:
        """The facade's ParEGO, seen through the modelled objective (see :class:`_ModelledObjective`)."""
        return self._multi_objective_algorithm

    @multi_objective_algorithm.setter
    def multi_objective_algorithm(self, algorithm: AbstractMultiObjectiveAlgorithm) -> None:
        if not isinstance(algorithm, _ModelledObjective):
            algorithm = _ModelledObjective(algorithm, self._modelled_index)
        self._multi_objective_algorithm = algorithm


def _normal_pdf(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return ndtr(z)


def scalarised_moments(
    loss_mean: np.ndarray,
    loss_var: np.ndarray,
    known: np.ndarray,
    loss_weight: float,
    known_weights: np.ndarray,
    rho: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of ParEGO's ``max_i(w_i f_i) + rho * sum_i(w_i f_i)`` with one Gaussian ``f``.

    ``loss_mean``/``loss_var`` (n,) describe the normalised modelled objective, ``known`` (n, k) holds
    the exact normalised known objectives. See the module docstring for the formulas.
    """
    weighted_known = np.asarray(known, dtype=float) * np.asarray(known_weights, dtype=float)
    ceiling = weighted_known.max(axis=1)
    mean = loss_weight * np.asarray(loss_mean, dtype=float)
    std = loss_weight * np.sqrt(np.maximum(np.asarray(loss_var, dtype=float), 0.0))
    gap = mean - ceiling
    uncertain = std > 1e-12
    z = gap / np.where(uncertain, std, 1.0)
    # Without uncertainty the maximum is plain, and its slope in the loss a step.
    above = np.where(uncertain, _normal_cdf(z), (gap > 0).astype(float))
    expected_max = np.where(
        uncertain, ceiling + gap * above + std * _normal_pdf(z), np.maximum(mean, ceiling)
    )
    scalar_mean = expected_max + rho * (mean + weighted_known.sum(axis=1))
    scalar_var = (std * (above + rho)) ** 2
    return scalar_mean, scalar_var


class KnownEnergySurrogate(AbstractModel):
    """Predicts ParEGO's scalarised cost from a forest on the modelled objective plus exact known objectives.

    ``forest`` is trained on what :class:`ModelledObjectiveEncoder` produces. ``known(columns, count)``
    returns the raw known objectives, shape ``(count, len(known_indices))``, of ``count``
    configurations given field by field (:data:`ENERGY_FIELDS` to float arrays, NaN where inactive).
    Call :meth:`attach` with the facade's runhistory and ParEGO before the first prediction.
    """

    def __init__(
        self,
        forest: AbstractModel,
        configspace: ConfigurationSpace,
        *,
        known: Callable[[Mapping[str, np.ndarray], int], np.ndarray],
        known_indices: Sequence[int],
        modelled_index: int,
        seed: int = 0,
    ):
        super().__init__(configspace=configspace, seed=seed)
        self._forest = forest
        self._known = known
        self._known_indices = list(known_indices)
        self._modelled_index = modelled_index
        self._runhistory: RunHistory | None = None
        self._parego: Any = None
        names = list(configspace.keys())
        self._columns = [(names.index(n), configspace[n]) for n in ENERGY_FIELDS if n in configspace]

    @property
    def meta(self) -> dict[str, Any]:
        return {**super().meta, "forest": self._forest.meta, "known_indices": self._known_indices}

    def attach(self, runhistory: RunHistory, parego: Any) -> None:
        """Use ``runhistory``'s objective bounds and ``parego``'s current weights for predictions."""
        self._runhistory = runhistory
        self._parego = parego

    def _train(self, X: np.ndarray, Y: np.ndarray) -> KnownEnergySurrogate:
        self._forest.train(X, Y)
        return self

    def known_values(self, X: np.ndarray) -> np.ndarray:
        """Raw known objectives (n, k) of the configurations in SMAC's vector form ``X``."""
        # Whole columns are decoded and priced at once: an acquisition step prices up to a thousand
        # candidates, which took 1.3 ms one configuration at a time (already priced) and takes 0.08 ms so.
        columns = {}
        for index, hp in self._columns:
            vector = X[:, index]
            active = ~np.isnan(vector)
            values = np.full(len(X), np.nan)
            if active.any():
                values[active] = np.asarray(hp.to_value(vector[active]), dtype=float)
            columns[hp.name] = values
        return np.asarray(self._known(columns, len(X)), dtype=float).reshape(len(X), len(self._known_indices))

    def _predict(
        self, X: np.ndarray, covariance_type: str | None = "diagonal"
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if self._runhistory is None or self._parego is None:
            raise ConfigError("KnownEnergySurrogate.attach() must be called before predicting")
        loss_mean, loss_var = self._forest.predict(X, covariance_type="diagonal")
        bounds = self._runhistory.objective_bounds
        known = self.known_values(X)
        for column, index in enumerate(self._known_indices):
            low, high = bounds[index]
            # As SMAC's normalize_costs: a constant objective normalises to 1.
            known[:, column] = (known[:, column] - low) / (high - low) if high - low >= 1e-10 else 1.0
        weights = np.asarray(self._parego.weights, dtype=float)
        mean, var = scalarised_moments(
            loss_mean[:, 0],
            loss_var[:, 0],
            known,
            float(weights[self._modelled_index]),
            weights[self._known_indices],
            float(self._parego.rho),
        )
        return mean.reshape(-1, 1), (var.reshape(-1, 1) if covariance_type is not None else None)
