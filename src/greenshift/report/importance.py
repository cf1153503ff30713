"""Hyperparameter importance per objective, fANOVA style (Optuna's evaluator on a scikit-learn forest).

Input is one entry per configuration (objectives at the full budget). Each configuration becomes an
Optuna ``FrozenTrial`` with one distribution per hyperparameter, taken from a ConfigSpace space when
one is given, otherwise inferred from the values seen: booleans, strings, ``None`` and mixed values are
categorical; integers an ``IntDistribution`` and other numbers a ``FloatDistribution``, on a log scale
when all values are positive and span at least two decades.

**Inactive hyperparameters** (``momentum`` exists only for some optimisers) are filled with a default
so every trial has the same columns: the space's default value, else the field default of
:class:`~greenshift.config.DSNNConfig`; a hyperparameter with neither is dropped (listed in
``dropped``). The fill value makes "inactive" look like one more setting to the forest, which can still
separate it by splitting on the optimiser.

Results are fractions of explained variance summing to about 1 per objective. With fewer than
``min_trials`` configurations, a constant objective or nothing varying, the numbers are still returned
(zeros where nothing can be said) but ``reliable`` is ``False`` and ``note`` says why.

**Objectives with known inputs.** ``energy_model_j`` is a function of
:data:`~greenshift.config.MODELLED_ENERGY_FIELDS` alone, so only those hyperparameters enter its
analysis and every other one gets exactly 0 (a forest fitted to a few trials would otherwise credit
learning rate or weight decay with part of the variance of a quantity they cannot change).

**Noise floor.** A forest fitted to a few dozen points credits some variance to any column, even one
of pure noise. Every analysis therefore adds a probe column of uniform random numbers; its importance
is the objective's ``noise_floor``, and a hyperparameter is *reliable* for an objective only when its
importance exceeds that floor. ``below_noise[objective]`` lists those that do not; a report shows them
as indistinguishable from noise. (A real hyperparameter at 0.03 next to a probe at 0.04 says nothing.)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from greenshift.config import MODELLED_ENERGY_FIELDS, DSNNConfig

if TYPE_CHECKING:
    from greenshift.store.front import FrontEntry

MIN_TRIALS = 10
#: Objectives that are known functions of a few hyperparameters, and those hyperparameters.
KNOWN_INPUTS: dict[str, tuple[str, ...]] = {"energy_model_j": MODELLED_ENERGY_FIELDS}
# Name of the random probe column; no DSNNConfig field can take it.
_PROBE = "(random probe)"
# Two decades or more between the smallest and largest value reads as a log-scaled hyperparameter.
_LOG_SPAN = 100.0


@dataclass(frozen=True)
class Importance:
    """``values[objective][hyperparameter]`` importances, sorted from most to least important."""

    values: dict[str, dict[str, float]]
    reliable: bool
    note: str
    n_trials: int
    filled: dict[str, Any] = field(default_factory=dict)
    dropped: tuple[str, ...] = ()
    #: Importance of the random probe column per objective (see the module docstring).
    noise_floor: dict[str, float] = field(default_factory=dict)
    #: Hyperparameters whose importance does not exceed the objective's noise floor.
    below_noise: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Hyperparameters that cannot affect an objective by construction (importance exactly 0).
    excluded: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def reliable_values(self, objective: str) -> dict[str, float]:
        """The importances of ``objective`` above its noise floor, most important first.

        Hyperparameters the objective cannot depend on (``excluded``, importance exactly 0) are left out.
        """
        below = set(self.below_noise.get(objective, ())) | set(self.excluded.get(objective, ()))
        return {k: v for k, v in self.values.get(objective, {}).items() if k not in below}


def _scalar(value: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # NumPy scalars from a ConfigSpace space
        return _scalar(value.item())
    return str(value)


def _infer_distribution(values: Sequence[Any]) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        low, high = min(values), max(values)
        log = low >= 1 and high / low >= _LOG_SPAN
        return IntDistribution(int(low), int(high), log=log)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        low, high = float(min(values)), float(max(values))
        log = low > 0 and high / low >= _LOG_SPAN
        return FloatDistribution(low, high, log=log)
    choices = sorted({_scalar(v) for v in values}, key=lambda v: (type(v).__name__, repr(v)))
    return CategoricalDistribution(choices)


def _space_distribution(hp: Any, values: Sequence[Any]) -> Any:
    """Optuna distribution of one ConfigSpace hyperparameter, widened to contain every value seen."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = type(hp).__name__
    if hasattr(hp, "choices") or hasattr(hp, "sequence"):
        choices = list(getattr(hp, "choices", None) or hp.sequence)
        choices += [v for v in dict.fromkeys(_scalar(v) for v in values) if v not in choices]
        return CategoricalDistribution([_scalar(c) for c in choices])
    if hasattr(hp, "lower") and hasattr(hp, "upper"):
        log = bool(getattr(hp, "log", False))
        if "Integer" in kind:
            return IntDistribution(int(min([hp.lower, *values])), int(max([hp.upper, *values])), log=log)
        return FloatDistribution(float(min([hp.lower, *values])), float(max([hp.upper, *values])), log=log)
    return _infer_distribution(values)


def _fill_value(name: str, space: Any) -> tuple[bool, Any]:
    if space is not None and name in space:
        return True, space[name].default_value
    defaults = {f.name: f.default for f in dataclasses.fields(DSNNConfig)}
    if name in defaults and defaults[name] is not None:
        return True, defaults[name]
    return False, None


def _columns(
    configs: Sequence[Mapping[str, Any]], space: Any
) -> tuple[dict[str, list[Any]], dict[str, Any], list[str]]:
    names = sorted({k for c in configs for k in c})
    columns: dict[str, list[Any]] = {}
    filled: dict[str, Any] = {}
    dropped: list[str] = []
    for name in names:
        if all(name in c for c in configs):
            columns[name] = [c[name] for c in configs]
            continue
        ok, value = _fill_value(name, space)
        if not ok:
            dropped.append(name)
            continue
        filled[name] = value
        columns[name] = [c.get(name, value) for c in configs]
    return columns, filled, dropped


def compute_importance(
    entries: Sequence[FrontEntry],
    objective_names: Sequence[str],
    *,
    space: Any = None,
    seed: int = 0,
    min_trials: int = MIN_TRIALS,
    n_trees: int = 64,
) -> Importance:
    """fANOVA importance of every hyperparameter for every objective (see the module docstring).

    ``entries`` need ``config`` and ``objectives``; ``space`` is an optional ConfigSpace
    ``ConfigurationSpace`` (any mapping from names to hyperparameters with ``default_value``).
    """
    names = list(objective_names)
    n = len(entries)
    if n == 0:
        return Importance({name: {} for name in names}, False, "no completed trials at the full budget", 0)
    configs = [e.config for e in entries]
    columns, filled, dropped = _columns(configs, space)
    reasons = []
    if n < min_trials:
        reasons.append(f"only {n} completed configuration(s) at the full budget (fewer than {min_trials})")
    varying = {k: v for k, v in columns.items() if len({repr(_scalar(x)) for x in v}) > 1}
    if not varying:
        reasons.append("no hyperparameter varies between the configurations")

    values: dict[str, dict[str, float]] = {}
    noise_floor: dict[str, float] = {}
    below_noise: dict[str, tuple[str, ...]] = {}
    excluded: dict[str, tuple[str, ...]] = {}
    targets = np.asarray([[float(e.objectives[o]) for o in names] for e in entries], dtype=float)
    probe = np.random.default_rng(seed).random(n).tolist()
    for i, objective in enumerate(names):
        zeros = {k: 0.0 for k in columns}
        inputs = KNOWN_INPUTS.get(objective)
        if inputs is not None:
            excluded[objective] = tuple(k for k in columns if k not in inputs)
        used = {k: v for k, v in varying.items() if inputs is None or k in inputs}
        if not used or n < 2:
            values[objective] = zeros
            continue
        if np.ptp(targets[:, i]) == 0:
            reasons.append(f"{objective} is the same for every configuration")
            values[objective] = zeros
            continue
        from optuna.importance import FanovaImportanceEvaluator

        study = _study({**used, _PROBE: probe}, targets[:, i : i + 1], space, seed)
        evaluator = FanovaImportanceEvaluator(n_trees=n_trees, seed=seed)
        raw = evaluator.evaluate(study)
        result = {k: float(raw.get(k, 0.0)) for k in columns}
        floor = float(raw.get(_PROBE, 0.0))
        if not all(math.isfinite(v) for v in [*result.values(), floor]):
            reasons.append(f"the importance of {objective} could not be estimated")
            values[objective] = zeros
            continue
        values[objective] = dict(sorted(result.items(), key=lambda kv: (-kv[1], kv[0])))
        noise_floor[objective] = floor
        below_noise[objective] = tuple(k for k in used if result[k] <= floor)
    note = "; ".join(reasons) if reasons else f"fANOVA on {n} configurations at the full budget"
    noisy = [
        f"{objective}: {', '.join(below_noise[objective])} not above the noise floor {noise_floor[objective]:.3f}"
        for objective in names
        if below_noise.get(objective)
    ]
    if noisy:
        note += "; " + "; ".join(noisy)
    return Importance(
        values, not reasons, note, n, filled, tuple(dropped), noise_floor, below_noise, excluded
    )


def _study(varying: Mapping[str, list[Any]], targets: np.ndarray, space: Any, seed: int) -> Any:
    """An in-memory Optuna study holding one completed trial per configuration (varying columns only)."""
    import optuna
    from optuna.trial import create_trial

    distributions = {
        name: (
            _space_distribution(space[name], values)
            if space is not None and name in space and name != _PROBE
            else _infer_distribution(values)
        )
        for name, values in varying.items()
    }
    # Optuna logs every study creation at INFO; keep the report quiet and restore the caller's level.
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            directions=["minimize"] * targets.shape[1], sampler=optuna.samplers.RandomSampler(seed=seed)
        )
    finally:
        optuna.logging.set_verbosity(level)
    n_rows = targets.shape[0]
    for row in range(n_rows):
        params = {name: _param(varying[name][row], dist) for name, dist in distributions.items()}
        study.add_trial(
            create_trial(params=params, distributions=distributions, values=targets[row].tolist())
        )
    return study


def _param(value: Any, distribution: Any) -> Any:
    """The value in the type its distribution expects."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return _scalar(value)
    if isinstance(distribution, IntDistribution):
        return int(value)
    return float(value)
